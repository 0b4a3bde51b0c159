"""Local accounts are throttled like directory accounts (``auth.throttle``): a guesser
gets 429 without a password check, audited, while other users go on working.  What
the throttle lets through costs bounded memory: password checks (scrypt, 32 MiB
each) run no more at once than there are cores."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import PASSWORD, Instance, start_gateway, start_in_process
from tests.integration.test_audit import events_by_request
from tests.integration.test_decode_bounds import MiB, memory


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


def test_a_burst_of_wrong_passwords_holds_a_scrypt_per_core_not_per_thread(
    instance: Instance,
) -> None:
    """Distinct names, each under the per-user limit: the throttle lets all of them in."""
    gw = start_gateway(instance)  # a process of its own: its peak memory is the point
    try:
        warm = gw.session().request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": "0"})
        assert warm.status_code == 207
        before = memory(gw)
        burst = 24  # under the 32 serving threads and the per-address limit of 30

        def guess(index: int) -> int:
            return gw.session(f"nobody-{index}", "wrong").get(f"{gw.url}/documents/").status_code

        with ThreadPoolExecutor(burst) as pool:
            codes = list(pool.map(guess, range(burst)))
        assert codes == [401] * burst
        growth = memory(gw)["VmHWM"] - before["VmRSS"]
        # Unbounded, 24 checks at once held about 24 x 32 MiB.
        cores = len(os.sched_getaffinity(0))
        assert growth < (cores + 2) * 32 * MiB, f"peak grew by {growth // MiB} MiB"
    finally:
        gw.stop()
