"""The audit trail against the running gateway: one event per request and per
refusal, a tamper-evident chain on SQLite and PostgreSQL, fail-closed writes,
and the audit commands."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy

from gateway.db import AuditEvent
from gateway.settings import load_settings
from tests.conftest import PASSWORD, Gateway, Instance, run_cli, start_in_process
from tests.integration.test_dav_methods import LOCK_BODY, small_jpeg

PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
    "<Z:note>n</Z:note></D:prop></D:set></D:propertyupdate>"
)


def events_by_request(instance: Instance) -> dict[str, list[AuditEvent]]:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(sqlalchemy.select(AuditEvent).order_by(AuditEvent.seq)))
    finally:
        engine.dispose()
    grouped: dict[str, list[AuditEvent]] = {}
    for row in rows:
        grouped.setdefault(row.request_id, []).append(row)
    return grouped


def test_every_method_and_refusal_gives_exactly_one_event(gateway: Gateway) -> None:
    s = gateway.session()
    s.headers["User-Agent"] = "audit-test/1.0"
    base = f"{gateway.url}/documents"
    folder = f"{gateway.url}/clinical/9434765919"
    lock = None
    calls = [
        ("MKCOL", lambda: s.request("MKCOL", f"{base}/f"), 201, "ok"),
        ("PUT", lambda: s.put(f"{base}/f/a.txt", data=b"hello"), 201, "stored"),
        ("GET", lambda: s.get(f"{base}/f/a.txt"), 200, "ok"),
        ("HEAD", lambda: s.head(f"{base}/f/a.txt"), 200, "ok"),
        ("PROPFIND", lambda: s.request("PROPFIND", f"{base}/f", headers={"Depth": "1"}), 207, "ok"),
        ("PROPPATCH", lambda: s.request("PROPPATCH", f"{base}/f/a.txt", data=PROPPATCH), 207, "ok"),
        (
            "COPY",
            lambda: s.request(
                "COPY", f"{base}/f/a.txt", headers={"Destination": f"{base}/f/b.txt"}
            ),
            201,
            "ok",
        ),
        (
            "MOVE",
            lambda: s.request(
                "MOVE", f"{base}/f/b.txt", headers={"Destination": f"{base}/f/c.txt"}
            ),
            201,
            "ok",
        ),
        ("LOCK", lambda: s.request("LOCK", f"{base}/f/c.txt", data=LOCK_BODY), 200, "ok"),
    ]
    seen = []
    for action, call, status, code in calls:
        r = call()
        assert r.status_code == status, (action, r.status_code, r.text)
        seen.append((r.headers["X-Request-Id"], action, status, code))
        if action == "LOCK":
            lock = r.headers["Lock-Token"]
    r = s.request("UNLOCK", f"{base}/f/c.txt", headers={"Lock-Token": lock})
    seen.append((r.headers["X-Request-Id"], "UNLOCK", 204, "ok"))
    r = s.delete(f"{base}/f")
    seen.append((r.headers["X-Request-Id"], "DELETE", 204, "trashed"))
    # Refusals, one of each kind.
    s.request("MKCOL", folder)
    refusals = [
        (gateway.session("audrey").get(f"{base}/x"), "GET", 403, "policy-denied"),
        (
            gateway.session("alice", "wrong password!").get(f"{base}/"),
            "LOGIN",
            401,
            "authentication-required",
        ),
        (s.get(f"{base}/missing"), "GET", 404, "not-found"),
        (s.put(f"{folder}/x.png", data=small_jpeg()), "PUT", 415, "extension-mismatch"),
        (s.put(f"{folder}/x.jpg", data=small_jpeg()[:200]), "PUT", 422, "undecodable-image"),
        (
            gateway.session(None).get(f"{base}/", headers={"Authorization": "Basic !!"}),
            "GET",  # the method is on record even when the credentials are garbage
            400,
            "bad-request",
        ),
    ]
    for r, action, status, code in refusals:
        assert r.status_code == status, (action, code, r.status_code)
        seen.append((r.headers["X-Request-Id"], action, status, code))
    events = events_by_request(gateway.instance)
    for request_id, action, status, code in seen:
        got = events.get(request_id, [])
        assert len(got) == 1, (action, code, got)
        event = got[0]
        assert (event.action, event.status, event.code) == (action, status, code)
        assert event.client == "127.0.0.1"
        assert event.occurred_at is not None
        if code != "bad-request":
            assert event.user_agent == "audit-test/1.0" or action == "LOGIN" or status == 403
    by_code = {e[0].code: e[0] for e in events.values()}
    assert by_code["stored"].actor == "alice" and by_code["stored"].logical_path == "/f/a.txt"
    assert by_code["stored"].share == "documents"
    assert by_code["authentication-required"].actor == "-"
    assert "alice" in by_code["authentication-required"].reason
    dump = repr([e for rows in events.values() for e in rows])
    assert PASSWORD not in dump and "wrong password" not in dump


def visible_files(instance: Instance) -> list[tuple[str, bytes]]:
    """Stored files with their bytes, leaving out clindav's hidden internals."""
    root = instance.share_dir("documents")
    return sorted(
        (p.name, p.read_bytes()) for p in root.iterdir() if not p.name.startswith(".clindav-")
    )


def tamper(instance: Instance, statement: str) -> None:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def fill(instance: Instance, count: int = 8) -> None:
    gw = start_in_process(instance)
    try:
        s = gw.session()
        for i in range(count):
            assert s.put(f"{gw.url}/documents/f{i}.txt", data=b"x").status_code == 201
    finally:
        gw.stop()


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize(
    ("statement", "position"),
    [
        ("UPDATE audit_event SET actor = 'mallory' WHERE seq = 4", "position 4"),
        ("UPDATE audit_event SET details = '{}' WHERE seq = 3", "position 3"),
        ("DELETE FROM audit_event WHERE seq = 5", "position 5"),
        (
            "INSERT INTO audit_event SELECT seq + 1000, occurred_at, request_id, actor, client, "
            "user_agent, action, share, logical_path, patient_id, status, code, reason, details, "
            "prev_mac, mac FROM audit_event WHERE seq = 2",
            "position 1002",
        ),
        ("DELETE FROM audit_event WHERE seq = (SELECT max(seq) FROM audit_event)", "chain head"),
    ],
)
def test_verify_reports_edits_deletions_and_insertions(
    instance: Instance, statement: str, position: str
) -> None:
    fill(instance)
    intact = run_cli("audit", "verify", config=instance.config)
    assert "audit chain intact" in intact.stdout
    tamper(instance, statement)
    broken = run_cli("audit", "verify", config=instance.config, check=False)
    assert broken.returncode == 1
    assert position in broken.stdout, broken.stdout


@pytest.mark.parametrize("instance", ["sqlite"], indirect=True)
def test_unwritable_audit_table_makes_writes_fail_closed(instance: Instance) -> None:
    gw = start_in_process(instance)
    s = gw.session()
    assert s.put(f"{gw.url}/documents/keep.txt", data=b"original").status_code == 201
    gw.stop()
    tamper(
        instance,
        "CREATE TRIGGER audit_off BEFORE INSERT ON audit_event BEGIN SELECT RAISE(ABORT, 'audit off'); END",
    )
    gw = start_in_process(instance)
    try:
        s = gw.session()
        files_before = visible_files(instance)
        put = s.put(f"{gw.url}/documents/keep.txt", data=b"changed")
        assert put.status_code == 503
        new = s.put(f"{gw.url}/documents/new.txt", data=b"new")
        assert new.status_code == 503
        deleted = s.delete(f"{gw.url}/documents/keep.txt")
        assert deleted.status_code == 503
        assert deleted.headers["X-Clindav-Error"] == "database-unavailable"
        assert visible_files(instance) == files_before
    finally:
        gw.stop()
    tamper(instance, "DROP TRIGGER audit_off")
    gw = start_in_process(instance)
    try:
        assert gw.session().get(f"{gw.url}/documents/keep.txt").content == b"original"
        assert gw.session().get(f"{gw.url}/documents/new.txt").status_code == 404
    finally:
        gw.stop()


@pytest.mark.parametrize("instance", ["postgres"], indirect=True)
def test_revoked_insert_on_postgres_fails_closed(instance: Instance) -> None:
    settings = instance.settings()
    database = settings["database_url"].rsplit("/", 1)[1]
    role = f"gw_{database[-12:]}"
    fill(instance, 1)
    for statement in (
        f"CREATE ROLE {role} LOGIN",
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
        f"REVOKE INSERT ON audit_event FROM {role}",
    ):
        tamper(instance, statement)
    settings["database_url"] = f"postgresql+psycopg://{role}@127.0.0.1:5432/{database}"
    instance.write_settings(settings)
    gw = start_in_process(instance)
    try:
        s = gw.session()
        assert s.put(f"{gw.url}/documents/f0.txt", data=b"changed").status_code == 503
        assert s.delete(f"{gw.url}/documents/f0.txt").status_code == 503
        assert s.get(f"{gw.url}/documents/f0.txt").status_code == 503  # reads are audited too
    finally:
        gw.stop()
        settings["database_url"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        instance.write_settings(settings)
        tamper(
            instance,
            f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}",
        )


def test_export_filters_and_formats(gateway: Gateway) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/e.txt", data=b"x").status_code == 201
    assert gateway.session("ivy").get(f"{gateway.url}/documents/e.txt").status_code == 200
    lines = run_cli(
        "audit", "export", "--user", "ivy", config=gateway.instance.config
    ).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["actor"], r["action"], r["logical_path"]) for r in rows] == [
        ("ivy", "GET", "/e.txt")
    ]
    csv_out = run_cli("audit", "export", "--format", "csv", config=gateway.instance.config).stdout
    assert csv_out.splitlines()[0].startswith("seq,occurred_at,request_id")
    assert len(csv_out.splitlines()) >= 3
    future = run_cli(
        "audit", "export", "--since", "2999-01-01", config=gateway.instance.config
    ).stdout
    assert future == ""
    bad = run_cli(
        "audit", "export", "--since", "yesterday", config=gateway.instance.config, check=False
    )
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr


def test_server_logs_the_chain_head_for_anchoring(instance: Instance) -> None:
    settings = instance.settings()
    settings["audit"] = {"anchor_interval": 10}
    instance.write_settings(settings)
    gw = start_in_process(instance)
    try:
        assert gw.session().put(f"{gw.url}/documents/a.txt", data=b"a").status_code == 201
        deadline = time.monotonic() + 15
        while "audit chain head: seq=1 " not in gw.log() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        gw.stop()
    logged = gw.log()
    assert "audit chain head: seq=0 mac=" + "0" * 64 in logged  # at start
    verified = run_cli("audit", "verify", config=instance.config).stdout
    head_mac = verified.split("head ")[1].strip()
    assert f"audit chain head: seq=1 mac={head_mac}" in logged
