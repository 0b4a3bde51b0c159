"""Fail closed: a request answered 503 (or 507) changed nothing, on the share or in the database.

Faults are real: the audit trail refuses its insert (a trigger in the
instance's own database), a commit that fails (a deferred PostgreSQL
constraint trigger, checked at COMMIT, after the file steps), another
connection holding the SQLite database's write lock, a full or read-only
filesystem mounted over the share, a Redis server stopped under the
gateway, the key file moved away.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import requests
import sqlalchemy

from tests.conftest import Gateway, Instance, make_instance, run_cli, start_in_process

LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    "<D:locktype><D:write/></D:locktype><D:owner><D:href>alice</D:href></D:owner></D:lockinfo>"
)
PROPPATCH_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-clindav-test">'
    "<D:set><D:prop><Z:note>not kept</Z:note></D:prop></D:set></D:propertyupdate>"
)
# Long enough for the bounded waits (gateway.db.DB_WAIT_SECONDS per statement),
# far below the 30 s a request used to hang on a database lock.
CLIENT_TIMEOUT = 25
UNAVAILABLE = {"database-unavailable", "audit-unavailable"}


def _engine(inst: Instance) -> sqlalchemy.Engine:
    from gateway.settings import load_settings

    return sqlalchemy.create_engine(load_settings(inst.config).sqlalchemy_url())


def snapshot(inst: Instance) -> dict[str, Any]:
    """Everything a request could change: the share's entries (by inode) and the tables."""
    return {"share": share_entries(inst), **tables(inst)}


def share_entries(inst: Instance, share: str = "documents") -> dict[str, tuple[Any, ...]]:
    root = inst.share_dir(share)
    entries = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        entries[str(path.relative_to(root))] = (
            (kind,) if kind == "dir" else (kind, st.st_ino, st.st_size, st.st_mtime_ns)
        )
    return entries


def tables(inst: Instance) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "stored_object": "SELECT share, logical_path, file_id, size FROM stored_object",
        "data_key": "SELECT key_id FROM data_key",
        "dead_property": "SELECT url, name, value FROM dead_property",
        "dav_lock": "SELECT token, root FROM dav_lock",
        "trash_item": "SELECT id, logical_path, state FROM trash_item",
    }
    engine = _engine(inst)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(map(tuple, conn.exec_driver_sql(sql))) for name, sql in queries.items()
            }
    finally:
        engine.dispose()


def _failed_closed(response: requests.Response, codes: set[str]) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["X-Clindav-Error"] in codes, response.headers


# --- the audit promise: every mutating method, all or nothing --------------------------

AUDIT_DOWN = {
    # Refused at the insert itself.
    "sqlite": [
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit trail down'); END"
    ],
    # Refused at COMMIT, after every file step of the request was taken.
    "postgres": [
        "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit trail down'; END $$",
        "CREATE CONSTRAINT TRIGGER audit_down AFTER INSERT ON audit_event "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_down()",
    ],
}
AUDIT_UP = {
    "sqlite": ["DROP TRIGGER audit_down"],
    "postgres": ["DROP TRIGGER audit_down ON audit_event", "DROP FUNCTION audit_down()"],
}


def _run_sql(inst: Instance, statements: list[str]) -> None:
    engine = _engine(inst)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture
def audit_down(instance: Instance) -> Iterator[Any]:
    """A switch: inside ``with audit_down():`` every audit event fails to be written."""

    @contextlib.contextmanager
    def down() -> Iterator[None]:
        _run_sql(instance, AUDIT_DOWN[instance.database])
        try:
            yield
        finally:
            _run_sql(instance, AUDIT_UP[instance.database])

    return down


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_no_method_takes_effect_when_its_audit_event_cannot_be_written(
    gateway: Gateway, audit_down: Any
) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    assert s.request("MKCOL", f"{base}/folder").status_code == 201
    for name in ("folder/inner.txt", "a.txt", "c.txt", "gone.txt"):
        assert s.put(f"{base}/{name}", data=name.encode()).status_code == 201
    assert s.delete(f"{base}/gone.txt").status_code == 204  # the trash folder exists
    lock = s.request("LOCK", f"{base}/c.txt", data=LOCK_BODY, headers={"Timeout": "Second-600"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    if_token = {"If": f"({token})"}

    def dest(name: str, overwrite: str = "F") -> dict[str, str]:
        return {"Destination": f"{base}/{name}", "Overwrite": overwrite}

    attempts: list[tuple[str, str, dict[str, str], bytes | str | None]] = [
        ("MKCOL", "new-folder", {}, None),
        ("MKCOL", "folder/new-sub", {}, None),
        ("COPY", "a.txt", dest("b.txt"), None),
        ("COPY", "a.txt", {**dest("c.txt", "T"), **if_token}, None),
        ("COPY", "folder", {**dest("folder-copy"), "Depth": "infinity"}, None),
        ("MOVE", "a.txt", dest("d.txt"), None),
        ("MOVE", "a.txt", {**dest("c.txt", "T"), **if_token}, None),
        ("MOVE", "folder", dest("folder-moved"), None),
        ("PROPPATCH", "a.txt", {"Content-Type": "application/xml"}, PROPPATCH_BODY),
        ("PROPPATCH", "folder", {"Content-Type": "application/xml"}, PROPPATCH_BODY),
        ("LOCK", "a.txt", {"Timeout": "Second-600"}, LOCK_BODY),
        ("LOCK", "unmapped.txt", {"Timeout": "Second-600"}, LOCK_BODY),
        ("UNLOCK", "c.txt", {"Lock-Token": token}, None),
        ("PUT", "a.txt", {}, b"a new version"),
        ("PUT", "new.txt", {}, b"a new file"),
        ("DELETE", "a.txt", {}, None),
    ]
    before = snapshot(gateway.instance)
    with audit_down():
        for method, path, headers, body in attempts:
            r = s.request(method, f"{base}/{path}", headers=headers, data=body)
            _failed_closed(r, UNAVAILABLE)
            assert snapshot(gateway.instance) == before, (method, path, headers)
    assert s.get(f"{base}/a.txt").content == b"a.txt"

    # With the audit trail back, the same requests work, and the chain is intact.
    assert s.request("MKCOL", f"{base}/new-folder").status_code == 201
    assert s.request("COPY", f"{base}/a.txt", headers=dest("b.txt")).status_code == 201
    assert s.request("MOVE", f"{base}/b.txt", headers=dest("d.txt")).status_code == 201
    assert s.get(f"{base}/d.txt").content == b"a.txt"
    verify = run_cli("audit", "verify", config=gateway.instance.config, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --- a commit that fails after the rename -------------------------------------------------

COMMIT_FAILS = [
    "CREATE FUNCTION commit_fails() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the database went away at commit'; END $$",
    "CREATE CONSTRAINT TRIGGER commit_fails AFTER INSERT ON stored_object "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_fails()",
]


@pytest.mark.parametrize("instance", ["postgres"], indirect=True)
def test_a_put_answered_503_left_the_previous_version(gateway: Gateway) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    assert s.put(f"{base}/report.txt", data=b"version one").status_code == 201
    before = snapshot(gateway.instance)
    _run_sql(gateway.instance, COMMIT_FAILS)
    r = s.put(f"{base}/report.txt", data=b"version two")
    _failed_closed(r, {"database-unavailable"})
    _failed_closed(s.put(f"{base}/new.txt", data=b"never stored"), {"database-unavailable"})
    assert snapshot(gateway.instance) == before
    assert s.get(f"{base}/report.txt").content == b"version one"
    assert s.get(f"{base}/new.txt").status_code == 404


# --- PostgreSQL stopped under the gateway ---------------------------------------------


def _as_postgres(*args: str) -> None:
    # No pipes: the server pg_ctl starts would hold them open (its log is a file).
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class PostgresServer:
    """A PostgreSQL server of a test's own, on a free port."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        data, log = str(self.folder / "data"), str(self.folder / "log")
        _as_postgres("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres("pg_ctl", "-D", str(self.folder / "data"), "-m", mode, "-w", "stop")


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="clindav-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(folder, _free_port())
    _as_postgres("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres")
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def test_nothing_changes_while_the_database_is_down(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    from gateway.db import migrate

    inst = make_instance(tmp_path)
    settings = inst.settings()
    settings["database_url"] = own_postgres.url
    # Locks out of the database: the lock checks pass, so each method gets as far as it can.
    settings.setdefault("locks", {})["storage"] = "memory"
    inst.write_settings(settings)
    migrate(own_postgres.url)
    inst.add_user("alice", "clinicians")
    inst.add_user("ivy", "clinicians")
    gateway = start_in_process(inst)
    try:
        s = gateway.session()
        base = f"{gateway.url}/documents"
        assert s.put(f"{base}/a.txt", data=b"one").status_code == 201
        assert s.request("MKCOL", f"{base}/folder").status_code == 201
        before = snapshot(inst)
        own_postgres.stop()
        for method, path, headers, body in (
            ("MKCOL", "new-folder", {}, None),
            ("PUT", "a.txt", {}, b"two"),
            ("PUT", "b.txt", {}, b"new"),
            ("COPY", "a.txt", {"Destination": f"{base}/c.txt"}, None),
            ("MOVE", "a.txt", {"Destination": f"{base}/folder/a.txt"}, None),
            ("PROPPATCH", "a.txt", {}, PROPPATCH_BODY),
            ("LOCK", "a.txt", {}, LOCK_BODY),
            ("DELETE", "a.txt", {}, None),
        ):
            r = s.request(
                method, f"{base}/{path}", headers=headers, data=body, timeout=CLIENT_TIMEOUT
            )
            _failed_closed(r, UNAVAILABLE)
            assert share_entries(inst) == before["share"], method
        own_postgres.start()
        assert snapshot(inst) == before
        assert s.get(f"{base}/a.txt").content == b"one"
        # The LOCK answered 503 left no lock behind.
        assert gateway.session("ivy").put(f"{base}/a.txt", data=b"two").status_code == 204
    finally:
        gateway.stop()


# --- a database lock held by another process ----------------------------------------------


def test_a_locked_database_is_503_within_a_bounded_time(gateway: Gateway) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    assert s.put(f"{base}/a.txt", data=b"one").status_code == 201
    before = snapshot(gateway.instance)
    from gateway.settings import load_settings

    url = sqlalchemy.engine.make_url(load_settings(gateway.instance.config).sqlalchemy_url())
    holder = sqlite3.connect(url.database or "", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a stuck admin tool would hold it
        for method, path, body in (
            ("MKCOL", "folder", None),
            ("PUT", "a.txt", b"two"),
            ("PUT", "b.txt", b"new"),
            ("COPY", "a.txt", None),
            ("PROPPATCH", "a.txt", PROPPATCH_BODY),
        ):
            headers = {"Destination": f"{base}/c.txt"} if method == "COPY" else {}
            r = s.request(
                method, f"{base}/{path}", data=body, headers=headers, timeout=CLIENT_TIMEOUT
            )
            _failed_closed(r, UNAVAILABLE)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert snapshot(gateway.instance) == before
    assert s.request("MKCOL", f"{base}/folder").status_code == 201


# --- the share's filesystem ---------------------------------------------------------------


@pytest.fixture
def small_share(instance: Instance) -> Iterator[Path]:
    """The documents share's folder on a 256 KiB tmpfs of its own."""
    folder = instance.share_dir("documents")
    markers = [entry.name for entry in folder.glob(".clindav-share.*")]
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(folder)], check=True
    )
    for name in markers:  # the instance's mark goes with the share (gateway/storage/marker.py)
        (folder / name).mkdir(mode=0o700)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_share_is_507_and_stores_nothing(small_share: Path, gateway: Gateway) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    assert s.put(f"{base}/small.txt", data=b"fits").status_code == 201
    before = snapshot(gateway.instance)
    r = s.put(f"{base}/big.bin", data=os.urandom(600 * 1024))
    assert r.status_code == 507, r.text
    assert r.headers["X-Clindav-Error"] == "insufficient-storage"
    assert snapshot(gateway.instance) == before  # no temp file left either
    assert s.get(f"{base}/big.bin").status_code == 404


def test_a_read_only_or_missing_share_is_503(small_share: Path, gateway: Gateway) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    assert s.put(f"{base}/a.txt", data=b"one").status_code == 201
    subprocess.run(["mount", "-o", "remount,ro", str(small_share)], check=True)
    before = snapshot(gateway.instance)
    for method, path, body in (
        ("PUT", "b.txt", b"two"),
        ("PUT", "a.txt", b"two"),
        ("MKCOL", "f", None),
    ):
        _failed_closed(s.request(method, f"{base}/{path}", data=body), {"share-unavailable"})
    assert snapshot(gateway.instance) == before
    assert s.get(f"{base}/a.txt").content == b"one"

    subprocess.run(["umount", "-l", str(small_share)], check=True)
    shutil.rmtree(small_share)  # unmounted and gone (with the mark it had beneath)
    try:
        for method in ("PUT", "MKCOL", "GET"):
            r = s.request(method, f"{base}/x", data=b"x" if method == "PUT" else None)
            _failed_closed(r, {"share-unavailable"})
        assert not small_share.exists()
    finally:
        small_share.mkdir(mode=0o700)  # for the fixture's umount


# --- Redis lock storage -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_down_is_503_lock_storage_unavailable(
    instance: Instance, tmp_path: Path, audit_down: Any
) -> None:
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is needed (deploy/bootstrap installs it)"
    port = _free_port()
    redis = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        data = instance.settings()
        data.setdefault("locks", {})["storage"] = f"redis://127.0.0.1:{port}/0"
        instance.write_settings(data)
        gateway = start_in_process(instance)
        try:
            s = gateway.session()
            base = f"{gateway.url}/documents"
            assert s.put(f"{base}/a.txt", data=b"one").status_code == 201
            lock = s.request("LOCK", f"{base}/a.txt", data=LOCK_BODY)
            assert lock.status_code == 200
            token = lock.headers["Lock-Token"]
            assert (
                s.request("UNLOCK", f"{base}/a.txt", headers={"Lock-Token": token}).status_code
                == 204
            )
            client = redis_client.Redis(port=port)
            assert client.keys("wsgidav-lock:*") == []
            with audit_down():  # a lock whose audit event is not written is not kept
                _failed_closed(s.request("LOCK", f"{base}/a.txt", data=LOCK_BODY), UNAVAILABLE)
            assert client.keys("wsgidav-lock:*") == []
            client.close()

            redis.send_signal(signal.SIGSTOP)  # hung: connections are accepted, nothing answers
            for method, body in (("LOCK", LOCK_BODY), ("PUT", b"two")):
                r = s.request(method, f"{base}/a.txt", data=body, timeout=CLIENT_TIMEOUT)
                _failed_closed(r, {"lock-storage-unavailable"})
            redis.send_signal(signal.SIGCONT)
            redis.terminate()
            redis.wait(10)  # gone: the port is closed
            for method, body in (("LOCK", LOCK_BODY), ("PUT", b"two")):
                r = s.request(method, f"{base}/a.txt", data=body, timeout=CLIENT_TIMEOUT)
                _failed_closed(r, {"lock-storage-unavailable"})
            assert s.get(f"{base}/a.txt").content == b"one"
        finally:
            gateway.stop()
    finally:
        if redis.poll() is None:
            redis.send_signal(signal.SIGCONT)
            redis.kill()
            redis.wait(10)


# --- the master key file ------------------------------------------------------------------


def test_a_key_file_gone_while_serving_is_503(gateway: Gateway) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    assert s.put(f"{base}/a.txt", data=b"one").status_code == 201
    from gateway.settings import load_settings

    settings = load_settings(gateway.instance.config)
    assert settings.keys.file is not None
    key_file = settings.resolve(settings.keys.file)
    aside = key_file.with_name("moved-away")
    before = snapshot(gateway.instance)
    key_file.rename(aside)
    try:
        r = s.put(f"{base}/b.txt", data=b"two")
        _failed_closed(r, {"key-file-unavailable"})
        assert "500" not in r.text
    finally:
        aside.rename(key_file)
    assert snapshot(gateway.instance) == before
    assert s.put(f"{base}/b.txt", data=b"two").status_code == 201
