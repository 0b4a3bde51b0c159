"""Normal client behaviour is recorded, but not as refusals (issue 16 point 11):
rclone's MKCOL of an existing folder, 404 probes and junk PROPFINDs are
"misses", kept out of ``audit tail --refusals`` and the log's refusal warnings."""

from __future__ import annotations

import subprocess
import time

from tests.conftest import CLINDAV, Gateway, _env
from tests.integration.test_consent import audit

PATIENT = "9434765919"


def tail_refusals(gw: Gateway, last_marker: str) -> list[str]:
    """``clindav audit tail --refusals`` lines up to the one holding ``last_marker``.

    tail follows forever: read its first batch (the last events, in chain
    order) until the newest event's line, then stop it.
    """
    cmd = [*CLINDAV, "audit", "tail", "--refusals", "--count", "200"]
    proc = subprocess.Popen(
        [*cmd, "--config", str(gw.instance.config)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines: list[str] = []
    deadline = time.monotonic() + 120  # only a bound for a broken tail, not a measurement
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if last_marker in line:
                return lines
    finally:
        proc.kill()
        proc.wait(10)
    raise AssertionError(f"tail never showed {last_marker!r}: {lines}")


def test_client_probes_are_misses_not_refusals(gateway: Gateway) -> None:
    s = gateway.session()
    s.headers["User-Agent"] = "rclone/v1.60.1"
    docs = f"{gateway.url}/documents"
    assert s.request("MKCOL", f"{docs}/sync").status_code == 201
    assert s.request("MKCOL", f"{docs}/sync").status_code == 405  # rclone: "make sure it exists"
    assert s.get(f"{docs}/sync/missing.txt").status_code == 404
    probe = s.request("PROPFIND", f"{docs}/sync/missing.txt", headers={"Depth": "0"})
    assert probe.status_code == 404
    junk = s.request("PROPFIND", f"{docs}/sync/._missing.txt", headers={"Depth": "0"})
    assert junk.status_code == 404
    assert s.request("PROPFIND", f"{gateway.url}/clinical/desktop.ini").status_code == 404
    # Real refusals, for contrast: the policy, bad input, and a failed login last.
    denied = gateway.session("audrey").get(f"{docs}/sync/")
    assert denied.status_code == 403
    invalid = s.request("MKCOL", f"{gateway.url}/clinical/9434765918")
    assert invalid.status_code == 422
    assert gateway.session("mallory", "guess").get(f"{docs}/").status_code == 401

    events = audit(gateway.instance)
    # Every miss is still on record, with its true status and code.
    misses = [(e.action, e.status, e.code) for e in events if e.status in (404, 405)]
    assert misses == [
        ("MKCOL", 405, "method-not-allowed"),
        ("GET", 404, "not-found"),
        ("PROPFIND", 404, "not-found"),
        ("PROPFIND", 404, "junk-not-stored"),
        ("PROPFIND", 404, "junk-not-stored"),
    ]
    lines = tail_refusals(gateway, "mallory")
    refused = [line.split(" -> ")[1].split()[:2] for line in lines]
    assert refused == [
        ["403", "policy-denied"],
        ["422", "invalid-patient-id"],
        ["401", "authentication-required"],
    ], lines
    log = gateway.log()
    assert "refused GET documents:/sync/" in log and "invalid-patient-id" in log
    assert "refused MKCOL documents:/sync" not in log
    assert "missing.txt" not in log and "desktop.ini" not in log
