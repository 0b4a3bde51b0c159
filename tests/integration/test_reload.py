"""Policy reload on SIGHUP and `clindav reload`: a valid policy takes effect for
the next request in every worker; an invalid one is refused, logged, and the
running policy kept."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import PASSWORD, Gateway, Instance, ProcessGateway, run_cli, start_gateway

STAFF_RULE = "  - name: staff-documents\n    share: documents\n    groups: [clinicians, admins]\n"
ADMINS_ONLY = "  - name: staff-documents\n    share: documents\n    groups: [admins]\n"


def statuses(gw: Gateway, user: str, count: int) -> set[int]:
    """PROPFIND /documents/ on ``count`` fresh connections (SO_REUSEPORT spreads them)."""
    seen = set()
    for _ in range(count):
        with requests.Session() as s:
            s.trust_env = False
            s.auth = (user, PASSWORD)
            answer = s.request(
                "PROPFIND", f"{gw.url}/documents/", headers={"Depth": "0", "Connection": "close"}
            )
            seen.add(answer.status_code)
    return seen


def wait_for_log(gw: Gateway, text: str, count: int = 1) -> str:
    """The gateway's log once ``text`` appears ``count`` times (the reload is asynchronous)."""
    deadline = time.monotonic() + 60
    while gw.log().count(text) < count:
        assert gw.process.poll() is None, gw.log()
        assert time.monotonic() < deadline, f"{text!r} x{count} never logged:\n{gw.log()}"
        time.sleep(0.1)
    return gw.log()


@pytest.fixture
def two_workers(instance: Instance) -> Iterator[Gateway]:
    gw = start_gateway(instance, extra=("--workers", "2"))
    yield gw
    gw.stop()


def test_reload_changes_the_decision_in_every_worker(two_workers: Gateway) -> None:
    gw, inst = two_workers, two_workers.instance
    pid_file = inst.folder / "clindav.pid"
    assert int(pid_file.read_text()) == gw.process.pid  # the supervisor's
    assert statuses(gw, "alice", 12) == {207}

    policy = inst.folder / "policy.yaml"
    policy.write_text(policy.read_text().replace(STAFF_RULE, ADMINS_ONLY))
    reloaded = run_cli("reload", config=inst.config)
    assert f"pid {gw.process.pid}" in reloaded.stdout
    wait_for_log(gw, "policy reloaded from", count=2)  # one line per worker
    assert statuses(gw, "alice", 12) == {403}
    assert statuses(gw, "root-admin", 4) == {207}

    gw.stop()
    assert not pid_file.exists()


def test_an_invalid_policy_is_refused_and_the_running_one_kept(
    process_gateway: ProcessGateway,
) -> None:
    gateway = process_gateway  # its own process: its pid is looked at
    inst = gateway.instance
    policy = inst.folder / "policy.yaml"
    good = policy.read_text()
    assert statuses(gateway, "alice", 1) == {207}

    # A rule without groups: `clindav reload` checks first and sends nothing.
    policy.write_text(good.replace(STAFF_RULE, "  - name: staff-documents\n    share: documents\n"))
    refused = run_cli("reload", config=inst.config, check=False)
    assert refused.returncode == 2
    assert "rules.5.groups" in refused.stderr
    assert "sent SIGHUP" not in refused.stdout

    # SIGHUP straight to the gateway: the gateway refuses it itself and says why.
    os.kill(gateway.process.pid, signal.SIGHUP)
    logged = wait_for_log(gateway, "policy reload refused")
    assert "rules.5.groups" in logged.split("policy reload refused", 1)[1]
    assert statuses(gateway, "alice", 1) == {207}

    # A change of how a share stores names needs a restart: refused too.
    policy.write_text(
        good.replace("  documents:\n    stages:", "  documents:\n    names: plain\n    stages:")
    )
    os.kill(gateway.process.pid, signal.SIGHUP)
    logged = wait_for_log(gateway, "policy reload refused", count=2)
    assert "shares.documents.names: changes only with a restart" in logged

    # And a valid file after all that is taken.
    policy.write_text(good.replace(STAFF_RULE, ADMINS_ONLY))
    os.kill(gateway.process.pid, signal.SIGHUP)
    wait_for_log(gateway, "policy reloaded from")
    assert statuses(gateway, "alice", 1) == {403}
    assert gateway.process.poll() is None


def test_reload_without_a_running_gateway_says_so(instance: Instance) -> None:
    refused = run_cli("reload", config=instance.config, check=False)
    assert refused.returncode == 2
    assert "clindav.pid" in refused.stderr and "no gateway is running here" in refused.stderr
    # A stale file naming some other process is never signalled.
    (instance.folder / "clindav.pid").write_text(f"{os.getpid()}\n")
    stale = run_cli("reload", config=instance.config, check=False)
    assert stale.returncode == 2 and "is not a running gateway" in stale.stderr
