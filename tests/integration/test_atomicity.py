"""Acceptance: writes are atomic.

A PUT that declares N bytes and sends fewer, a client that disconnects
mid-body, and a gateway killed with SIGKILL mid-upload (20 times, at random
offsets) all leave the previous version byte-identical and no stray member in
PROPFIND, and none of them got a 2xx.  Two concurrent PUTs to one path leave
exactly one of the two bodies, and the registry row agrees with what is
served.

Uploads that must be cut off are sent over raw sockets, so the test controls
exactly how many body bytes leave and how the connection ends.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import requests
import sqlalchemy

from tests.conftest import PASSWORD, Gateway, Instance, run_cli, start_gateway

TEMP_PREFIX = ".clindav-tmp-"
AUTH = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


# --- helpers ----------------------------------------------------------------


def _connect(gateway: Gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _put_head(path: str, declared: int) -> bytes:
    return (
        f"PUT {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n"
        f"Authorization: {AUTH}\r\n"
        f"Content-Type: application/octet-stream\r\n"
        f"Content-Length: {declared}\r\n"
        f"\r\n"
    ).encode()


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = b""
    for _ in range(10_000):  # bounded: each recv returns >= 1 byte or ends the loop
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _status(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


def _hard_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _members(session: requests.Session, url: str) -> set[str]:
    """Logical paths a PROPFIND Depth 1 lists (the folder itself included)."""
    r = session.request("PROPFIND", url, headers={"Depth": "1"})
    assert r.status_code == 207, r.text
    root = ET.fromstring(r.content)
    return {unquote(urlparse(h.text or "").path).rstrip("/") for h in root.iter("{DAV:}href")}


def _backing_entries(folder: Path) -> tuple[set[str], set[str]]:
    """(other entries, temp names) in a backing folder (names may be encrypted)."""
    names = {n for n in os.listdir(folder) if not n.startswith(".clindav-share.")}  # the marker
    temps = {n for n in names if n.startswith(TEMP_PREFIX)}
    return names - temps, temps


def _failed_put_events(instance: Instance, path: str) -> int:
    from gateway.settings import load_settings

    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return conn.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM audit_event WHERE action = 'PUT' AND share = 'documents'"
                    " AND logical_path = :p AND status >= 400"
                ),
                {"p": path},
            ).scalar_one()
    finally:
        engine.dispose()


def _wait_for_refusal(instance: Instance, path: str, before: int) -> bool:
    """Wait (bounded) until the gateway has finished with the cut-off request."""
    for _ in range(100):
        if _failed_put_events(instance, path) > before:
            return True
        time.sleep(0.05)
    return False


def _assert_untouched(
    gateway: Gateway, instance: Instance, name: str, body: bytes, expected_files: set[str]
) -> None:
    s = gateway.session()
    got = s.get(f"{gateway.url}/documents/{name}")
    assert got.status_code == 200
    assert got.content == body, "previous version changed"
    listed = _members(s, f"{gateway.url}/documents/")
    assert listed == {"/documents"} | {f"/documents/{n}" for n in expected_files}, listed
    assert not any(TEMP_PREFIX in m for m in listed)


# --- a body shorter than declared -------------------------------------------


def test_short_body_is_refused_and_changes_nothing(gateway: Gateway, instance: Instance) -> None:
    s = gateway.session()
    v1 = os.urandom(300_000)
    assert s.put(f"{gateway.url}/documents/report.bin", data=v1).status_code == 201
    folder = instance.share_dir("documents")
    stored = _backing_entries(folder)
    assert len(stored[0]) == 1 and stored[1] == set()

    for declared, sent in ((200_000, 150_000), (1000, 0), (5, 4)):
        sock = _connect(gateway)
        try:
            sock.sendall(_put_head("/documents/report.bin", declared) + os.urandom(sent))
            sock.shutdown(socket.SHUT_WR)
            response = _read_all(sock)
        finally:
            sock.close()
        assert _status(response) == 400, response[:300]
        assert b"incomplete-body" in response
        _assert_untouched(gateway, instance, "report.bin", v1, {"report.bin"})
        assert _backing_entries(folder) == stored

    # A short body for a new path creates nothing at all.
    sock = _connect(gateway)
    try:
        sock.sendall(_put_head("/documents/new.bin", 10_000) + b"x" * 9_999)
        sock.shutdown(socket.SHUT_WR)
        response = _read_all(sock)
    finally:
        sock.close()
    assert _status(response) == 400, response[:300]
    assert s.get(f"{gateway.url}/documents/new.bin").status_code == 404
    _assert_untouched(gateway, instance, "report.bin", v1, {"report.bin"})
    assert _backing_entries(folder) == stored


# --- a client that disconnects mid-body --------------------------------------


@pytest.mark.parametrize("close", ["reset", "fin"])
def test_client_disconnect_mid_body_changes_nothing(
    gateway: Gateway, instance: Instance, close: str
) -> None:
    s = gateway.session()
    v1 = os.urandom(500_000)
    assert s.put(f"{gateway.url}/documents/scan.bin", data=v1).status_code == 201
    folder = instance.share_dir("documents")
    stored = _backing_entries(folder)
    rng = random.Random(f"disconnect-{close}")

    for trial in range(2):
        declared = 1_000_000
        sent = rng.randrange(1, declared)
        before = _failed_put_events(instance, "/scan.bin")
        sock = _connect(gateway)
        sock.sendall(_put_head("/documents/scan.bin", declared) + os.urandom(sent))
        if close == "reset":
            _hard_close(sock)
            response = b""
        else:
            # A plain close: FIN, then whatever the server says is read, never a 2xx.
            sock.shutdown(socket.SHUT_WR)
            response = _read_all(sock)
            sock.close()
            assert _status(response) != 201 and _status(response) != 204, response[:300]
            assert _status(response) in (None, 400), response[:300]
        # The server records the cut-off upload as a refusal once it is done with it.
        assert _wait_for_refusal(instance, "/scan.bin", before), (
            f"trial {trial}: no refusal recorded for the cut-off PUT\n{gateway.log()[-3000:]}"
        )
        _assert_untouched(gateway, instance, "scan.bin", v1, {"scan.bin"})
        assert _backing_entries(folder) == stored


# --- SIGKILL mid-upload -------------------------------------------------------


def test_sigkill_mid_upload_keeps_previous_version(instance: Instance) -> None:
    rng = random.Random(20260521)
    folder = instance.share_dir("documents")
    gateway = start_gateway(instance)
    try:
        v1 = rng.randbytes(rng.randrange(1_000_000, 2_000_000))
        s = gateway.session()
        assert s.put(f"{gateway.url}/documents/image.bin", data=v1).status_code == 201
        stored, _ = _backing_entries(folder)
        assert len(stored) == 1
        for trial in range(20):
            v2 = rng.randbytes(rng.randrange(1_000_000, 2_000_000))
            sent = rng.randrange(0, len(v2))  # strictly fewer bytes than declared
            sock = _connect(gateway)
            try:
                sock.sendall(_put_head("/documents/image.bin", len(v2)) + v2[:sent])
                time.sleep(rng.random() * 0.05)  # let the server get to work on it
                gateway.kill()
                response = _read_all(sock)
            finally:
                sock.close()
            status = _status(response)
            assert status is None or status >= 400, f"trial {trial}: {response[:200]!r}"
            gateway.stop()
            gateway = start_gateway(instance)
            s = gateway.session()
            got = s.get(f"{gateway.url}/documents/image.bin")
            assert got.status_code == 200
            assert got.content == v1, f"trial {trial} (sent {sent} of {len(v2)}): v1 changed"
            listed = _members(s, f"{gateway.url}/documents/")
            assert listed == {"/documents", "/documents/image.bin"}, f"trial {trial}: {listed}"
            visible, _temps = _backing_entries(folder)
            # Temp files of a killed process may stay (hidden, swept later); nothing else.
            assert visible == stored, f"trial {trial}: {visible}"
    finally:
        gateway.stop()


def test_sigkill_after_full_body_leaves_old_or_new_never_a_mix(instance: Instance) -> None:
    """The whole body arrives, then the kill lands somewhere in the commit."""
    rng = random.Random(7)
    gateway = start_gateway(instance)
    try:
        current = rng.randbytes(1_500_000)
        s = gateway.session()
        assert s.put(f"{gateway.url}/documents/commit.bin", data=current).status_code == 201
        for trial in range(4):
            new = rng.randbytes(1_500_000)
            sock = _connect(gateway)
            try:
                sock.sendall(_put_head("/documents/commit.bin", len(new)) + new)
                time.sleep(rng.random() * 0.08)
                gateway.kill()
                response = _read_all(sock)
            finally:
                sock.close()
            gateway.stop()
            gateway = start_gateway(instance)
            s = gateway.session()
            answer = s.get(f"{gateway.url}/documents/commit.bin")
            if answer.headers.get("X-Clindav-Error") == "content-authentication-failed":
                # Killed between rename and commit: the new file is not the one the
                # registry names, so it is not served until fsck --repair registers it.
                gateway.stop()
                run_cli("fsck", "--repair", config=instance.config, check=False)
                gateway = start_gateway(instance)
                s = gateway.session()
                answer = s.get(f"{gateway.url}/documents/commit.bin")
            got = answer.content
            assert got in (current, new), f"trial {trial}: a mixed or truncated version"
            if _status(response) in (201, 204):
                assert got == new, f"trial {trial}: a confirmed write was lost"
            current = got
            assert _members(s, f"{gateway.url}/documents/") == {
                "/documents",
                "/documents/commit.bin",
            }
    finally:
        gateway.stop()


# --- concurrent PUTs ---------------------------------------------------------


def _registry_sha(instance: Instance, path: str) -> list[str]:
    from gateway.settings import load_settings

    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sqlalchemy.text(
                        "SELECT sha256 FROM stored_object WHERE share = 'documents' AND logical_path = :p"
                    ),
                    {"p": path},
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_concurrent_puts_leave_exactly_one_body(gateway: Gateway, instance: Instance) -> None:
    rng = random.Random(f"concurrent-{instance.database}")
    url = f"{gateway.url}/documents/race.bin"
    sessions = [gateway.session(), gateway.session("ivy")]
    folder = instance.share_dir("documents")
    winners = set()
    for trial in range(10):
        bodies = [rng.randbytes(rng.randrange(2_000_000, 4_000_000)) for _ in range(2)]
        barrier = threading.Barrier(2, timeout=30)
        statuses: list[int | None] = [None, None]
        errors: list[BaseException] = []

        def upload(
            i: int,
            bodies: list[bytes] = bodies,
            barrier: threading.Barrier = barrier,
            statuses: list[int | None] = statuses,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                statuses[i] = sessions[i].put(url, data=bodies[i], timeout=60).status_code
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors
        assert all(st in (201, 204) for st in statuses), statuses
        served = sessions[0].get(url).content
        assert served in bodies, f"trial {trial}: the served body is neither upload"
        winners.add(bodies.index(served))
        assert _registry_sha(instance, "/race.bin") == [hashlib.sha256(served).hexdigest()], (
            f"trial {trial}: the registry disagrees with the served body"
        )
        assert _members(sessions[0], f"{gateway.url}/documents/") == {
            "/documents",
            "/documents/race.bin",
        }
        visible, temps = _backing_entries(folder)
        assert len(visible) == 1 and temps == set(), (visible, temps)
