"""Local accounts are throttled like directory accounts (``auth.throttle``): a guesser
gets 429 without a password check, audited, while other users go on working."""

from __future__ import annotations

from tests.conftest import PASSWORD, Instance, start_in_process
from tests.integration.test_audit import events_by_request


def test_wrong_local_passwords_are_throttled_and_audited(instance: Instance) -> None:
    data = instance.settings()
    data.setdefault("auth", {})["throttle"] = {
        "max_failures_per_user": 3,
        "max_failures_per_address": 100,
        "window": 300,
    }
    instance.write_settings(data)
    gw = start_in_process(instance)
    try:
        guesser = gw.session("alice", "not the password")
        answers = [guesser.get(f"{gw.url}/documents/") for _ in range(6)]
        assert [r.status_code for r in answers] == [401, 401, 401, 429, 429, 429]
        assert answers[-1].headers["X-Clindav-Error"] == "login-throttled"
        # Within the window even the right password waits: the guesser cannot tell.
        assert gw.session("alice").get(f"{gw.url}/documents/").status_code == 429
        other = gw.session("ivy").request(
            "PROPFIND", f"{gw.url}/documents/", headers={"Depth": "0"}
        )
        assert other.status_code == 207
        events = events_by_request(instance)
        codes = [events[r.headers["X-Request-Id"]][0].code for r in answers]
        assert codes == ["authentication-required"] * 3 + ["login-throttled"] * 3
        dump = repr(list(events.values()))
        assert "not the password" not in dump and PASSWORD not in dump
    finally:
        gw.stop()
