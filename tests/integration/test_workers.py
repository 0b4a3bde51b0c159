"""Several serving processes on one port (``server.workers``, gateway/server/workers.py).

The gateway runs as a supervisor and its forked workers; these tests drive it
over many connections (the kernel spreads them over the workers' sockets)
and check that the workers share one registry, one audit chain and one set of
locks, that both do work, and that stopping or killing the supervisor never
leaves a worker serving.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import PASSWORD, Gateway, Instance, run_cli, start_gateway

WORKERS = 2


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in tasks.read_text().split()] if tasks.exists() else []


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_until(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def workers_gateway(instance: Instance) -> Gateway:
    data = instance.settings()
    data["server"]["workers"] = WORKERS
    instance.write_settings(data)
    gw = start_gateway(instance)
    assert _wait_until(lambda: len(_children(gw.process.pid)) == WORKERS), gw.log()
    yield gw  # type: ignore[misc]
    gw.stop()


def _put_and_get(url: str, index: int, body: bytes) -> tuple[int, int, str]:
    """One upload and one read-back, each on a new connection (spread over the workers)."""
    path = f"{url}/documents/workers/file-{index:03d}.bin"
    with requests.Session() as s:
        s.trust_env, s.auth = False, ("alice", PASSWORD)
        put = s.put(path, data=body, timeout=60)
    with requests.Session() as s:
        s.trust_env, s.auth = False, ("alice", PASSWORD)
        got = s.get(path, timeout=60)
    return put.status_code, got.status_code, hashlib.sha256(got.content).hexdigest()


def test_workers_share_registry_audit_and_both_serve(
    workers_gateway: Gateway, instance: Instance
) -> None:
    """80 uploads over new connections from 8 threads: all read back intact, both
    workers used CPU, and the audit chain they appended to together verifies."""
    gw = workers_gateway
    workers = _children(gw.process.pid)
    before = {pid: _cpu_ticks(pid) for pid in workers}
    s = gw.session()
    assert s.request("MKCOL", f"{gw.url}/documents/workers/").status_code == 201
    bodies = [os.urandom(200_000 + i) for i in range(80)]
    results: dict[int, tuple[int, int, str]] = {}

    def client(offset: int) -> None:
        for i in range(offset, len(bodies), 8):
            results[i] = _put_and_get(gw.url, i, bodies[i])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == len(bodies), gw.log()[-2000:]
    for i, (put, get, digest) in results.items():
        assert (put, get) == (201, 200), (i, put, get)
        assert digest == hashlib.sha256(bodies[i]).hexdigest(), i
    used = {pid: _cpu_ticks(pid) - before[pid] for pid in workers}
    assert all(ticks > 0 for ticks in used.values()), used
    listing = s.request("PROPFIND", f"{gw.url}/documents/workers/", headers={"Depth": "1"})
    assert listing.status_code == 207
    assert listing.text.count("<D:href>/documents/workers/file-") == 80
    verify = run_cli("audit", "verify", config=instance.config, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout


def test_lock_taken_on_one_worker_binds_the_other(workers_gateway: Gateway) -> None:
    """Locks live in the database: a lock taken over one connection is enforced on
    every other connection, whichever worker serves it."""
    gw = workers_gateway
    owner = gw.session()
    assert owner.put(f"{gw.url}/documents/locked.txt", data=b"v1").status_code == 201
    body = (
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
        "</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"
    )
    lock = owner.request(
        "LOCK", f"{gw.url}/documents/locked.txt", data=body, headers={"Timeout": "Second-600"}
    )
    assert lock.status_code == 200, lock.text
    token = lock.headers["Lock-Token"]
    refused = 0
    for _ in range(12):  # new connections: the kernel spreads them over both workers
        with requests.Session() as other:
            other.trust_env, other.auth = False, ("ivy", PASSWORD)
            refused += other.put(f"{gw.url}/documents/locked.txt", data=b"v2").status_code == 423
    assert refused == 12
    with requests.Session() as again:
        again.trust_env, again.auth = False, ("alice", PASSWORD)
        put = again.put(f"{gw.url}/documents/locked.txt", data=b"v3", headers={"If": f"({token})"})
    assert put.status_code == 204
    assert owner.get(f"{gw.url}/documents/locked.txt").content == b"v3"


def test_sigterm_stops_every_worker(workers_gateway: Gateway) -> None:
    gw = workers_gateway
    workers = _children(gw.process.pid)
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(20) == 0
    assert _wait_until(lambda: not any(_alive(pid) for pid in workers))


def test_killed_supervisor_takes_its_workers_along(workers_gateway: Gateway) -> None:
    """SIGKILL of the supervisor (a crash): no worker stays behind serving the port."""
    gw = workers_gateway
    workers = _children(gw.process.pid)
    gw.kill()
    assert _wait_until(lambda: not any(_alive(pid) for pid in workers)), workers
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{gw.url}/documents/", auth=("alice", PASSWORD), timeout=5)


def test_a_dead_worker_is_replaced(workers_gateway: Gateway) -> None:
    gw = workers_gateway
    time.sleep(5.5)  # past the start-up window in which a dying worker stops the gateway
    victim = _children(gw.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert _wait_until(
        lambda: (
            victim not in _children(gw.process.pid) and len(_children(gw.process.pid)) == WORKERS
        )
    ), gw.log()
    assert "exited with status" in gw.log()
    for _ in range(6):
        with requests.Session() as s:
            s.trust_env, s.auth = False, ("alice", PASSWORD)
            assert s.request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": "0"}).ok


def test_memory_locks_refuse_several_workers(instance: Instance) -> None:
    data = instance.settings()
    data["server"]["workers"] = 2
    data["locks"] = {"storage": "memory"}
    instance.write_settings(data)
    check = run_cli("check-config", config=instance.config, check=False)
    assert check.returncode != 0
    assert "server.workers above 1 needs locks.storage" in check.stdout + check.stderr


def test_workers_from_the_command_line(instance: Instance) -> None:
    """``clindav serve --workers N`` overrides the settings; with memory locks it is refused."""
    gw = start_gateway(instance, extra=("--workers", "2"))  # the test instance says 1
    try:
        assert _wait_until(lambda: len(_children(gw.process.pid)) == 2), gw.log()
    finally:
        gw.stop()
    data = instance.settings()
    data["locks"] = {"storage": "memory"}
    instance.write_settings(data)
    refused = run_cli(
        "serve", "--no-tls", "--port", "0", "--workers", "2", config=instance.config, check=False
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--workers" in refused.stderr and "locks.storage" in refused.stderr
