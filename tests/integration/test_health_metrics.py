"""/healthz, /readyz and /metrics against the real gateway: no credentials, no
audit events, the failing part named, counts added up over worker processes,
state read from the database, and /metrics only for the allowed addresses."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy

from gateway.settings import load_settings
from tests.conftest import Gateway, Instance, require_tool, run_cli, start_gateway
from tests.integration.test_dav_methods import small_jpeg
from tests.ldap_server import free_port


def plain_get(gw: Gateway, path: str, **headers: str) -> requests.Response:
    """A request without credentials, on its own connection."""
    with requests.Session() as s:
        s.trust_env = False
        return s.get(f"{gw.url}{path}", headers={"Connection": "close", **headers}, timeout=30)


def chain_length(instance: Instance) -> int:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM audit_event").scalar_one()
    finally:
        engine.dispose()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            total += float(match.group(2))
    return total


def test_health_and_readiness_need_no_credentials_and_are_not_audited(gateway: Gateway) -> None:
    before = chain_length(gateway.instance)
    for _ in range(3):
        live = plain_get(gateway, "/healthz")
        assert live.status_code == 200 and live.text == "ok\n"
        ready = plain_get(gateway, "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "failing": [],
            "checks": {"database": "ok", "key": "ok", "shares": "ok", "locks": "ok"},
        }
        assert plain_get(gateway, "/metrics").status_code == 200
    assert chain_length(gateway.instance) == before  # monitors leave no audit events
    with requests.Session() as s:
        s.trust_env = False
        assert s.post(f"{gateway.url}/healthz").status_code == 405


def test_readyz_names_the_failing_part(gateway: Gateway) -> None:
    inst = gateway.instance
    clinical = inst.share_dir("clinical")
    moved = clinical.with_name("clinical-away")
    clinical.rename(moved)
    try:
        ready = plain_get(gateway, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["shares"]
        assert ready.json()["checks"]["shares"] == "unusable: clinical"
        assert str(inst.folder) not in ready.text  # parts and share names only
    finally:
        moved.rename(clinical)

    key = inst.folder / "keys" / "master.key"
    os.chmod(key, 0o644)  # the gateway would refuse to start like this
    try:
        ready = plain_get(gateway, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["key"]
    finally:
        os.chmod(key, 0o600)
    assert plain_get(gateway, "/readyz").status_code == 200
    assert "readiness: key failing: ConfigError" in gateway.log()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            require_tool("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_readyz_fails_when_the_lock_storage_is_down(
    instance: Instance, redis_server: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = redis_server
    data = instance.settings()
    data["locks"] = {"storage": f"redis://127.0.0.1:{port}/0"}
    instance.write_settings(data)
    gw = start_gateway(instance)
    try:
        assert plain_get(gw, "/readyz").status_code == 200
        proc.kill()
        proc.wait(10)
        ready = plain_get(gw, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["locks"]
    finally:
        gw.stop()


def test_metrics_add_up_over_workers_and_read_state_from_the_database(
    instance: Instance,
) -> None:
    data = instance.settings()
    data["trash"] = {"sweep_interval": 86400}  # the purge below is the test's, not the sweeper's
    instance.write_settings(data)
    gw = start_gateway(instance, extra=("--workers", "2"))
    try:
        puts = 10
        body = b"x" * 1000
        for i in range(puts):  # fresh connections: SO_REUSEPORT spreads them over both workers
            with requests.Session() as s:
                s.trust_env, s.auth = False, ("alice", "correct horse battery staple")
                r = s.put(
                    f"{gw.url}/documents/f{i}.txt", data=body, headers={"Connection": "close"}
                )
                assert r.status_code == 201
        s = gw.session("audrey")  # no rule lets auditors write documents
        assert s.put(f"{gw.url}/documents/no.txt", data=b"x").status_code == 403
        alice = gw.session()
        photo = f"{gw.url}/clinical/9434765919/photo.jpg"
        assert alice.request("MKCOL", f"{gw.url}/clinical/9434765919/").status_code == 201
        assert alice.put(photo, data=small_jpeg()).status_code == 201  # no consent: held
        assert alice.delete(f"{gw.url}/documents/f0.txt").status_code == 204
        # Its window ends "now": move the trash item's deadline into the past.
        engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE trash_item SET purge_after = '2000-01-01 00:00:00'")
        engine.dispose()

        text = plain_get(gw, "/metrics").text
        assert sample(text, "clindav_requests_total", method="PUT", status="201") == puts + 1
        assert sample(text, "clindav_requests_total", method="PUT", status="403") == 1
        assert sample(text, "clindav_refusals_total", code="policy-denied") == 1
        assert sample(text, "clindav_received_bytes_total") > puts * len(body)
        assert sample(text, "clindav_sent_bytes_total") > 0
        assert sample(text, "clindav_stage_duration_seconds_count", stage="filetype") == puts + 1
        assert sample(text, "clindav_stage_duration_seconds_count", stage="consent") == 1
        assert sample(text, "clindav_held_images") == 1
        assert sample(text, "clindav_trash_items_due") == 1
        assert sample(text, "clindav_audit_chain_length") == chain_length(instance)
        workers = _children(gw.process.pid)
        assert len(workers) == 2
        folders = list(Path(tempfile.gettempdir()).glob(f"clindav-metrics-{gw.process.pid}-*"))
        assert len(folders) == 1  # one folder for the gateway, with a file per worker
        assert {f"counter_{pid}.db" for pid in workers} <= {f.name for f in folders[0].iterdir()}
    finally:
        gw.stop()
    assert not folders[0].exists()  # removed when the gateway stops


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_metrics_only_for_allowed_addresses(instance: Instance) -> None:
    gw = start_gateway(instance)  # defaults: loopback may scrape, no proxy trusted
    try:
        assert plain_get(gw, "/metrics").status_code == 200
        # Forwarded by a proxy clindav does not trust: someone unknown, refused.
        far = plain_get(gw, "/metrics", **{"X-Forwarded-For": "127.0.0.1"})
        assert far.status_code == 404
        assert "clindav_" not in far.text
    finally:
        gw.stop()

    data = instance.settings()
    data["server"]["trusted_proxies"] = ["127.0.0.1"]
    data["metrics"] = {"allow": ["10.0.0.0/8"]}
    instance.write_settings(data)
    gw = start_gateway(instance)
    try:
        assert plain_get(gw, "/metrics").status_code == 404  # loopback is not allowed now
        # Through a trusted proxy the forwarded client counts, not the proxy.
        assert plain_get(gw, "/metrics", **{"X-Forwarded-For": "10.1.1.1"}).status_code == 200
        assert plain_get(gw, "/metrics", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 404
        assert plain_get(gw, "/readyz", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    finally:
        gw.stop()


def test_settings_refuse_a_share_at_a_monitoring_path(instance: Instance) -> None:
    data = instance.settings()
    data["shares"]["metrics"] = {"url": "/metrics", "path": "shares/documents"}
    data["metrics"] = {"allow": ["not-an-address"]}
    instance.write_settings(data)
    checked = run_cli("check-config", config=instance.config, check=False)
    assert checked.returncode == 2
    assert "shares.metrics.url" in checked.stderr and "gateway's own" in checked.stderr
    assert "metrics.allow" in checked.stderr and "not an address" in checked.stderr
