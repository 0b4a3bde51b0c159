"""Uploads larger than the in-memory limit stream into their sealed form (issue 9).

One gateway runs with small limits (``max_upload_bytes`` 1 MiB in memory,
``max_stream_bytes`` 80 MiB), so a 64 MiB body is a streamed upload and the
limits can be crossed quickly.  Bodies are sent with ``http.client`` or raw
sockets from generators: the test controls the framing (Content-Length or
chunked) and never holds a body whole either.  Memory is the gateway's peak
RSS (``VmHWM`` after ``clear_refs`` = 5) over its RSS before the request.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import (
    PASSWORD,
    REPO,
    Gateway,
    Instance,
    read_answer,
    run_cli,
    start_gateway,
)
from tests.integration.test_audit import events_by_request
from tests.integration.test_dav_methods import small_jpeg

MiB = 1024 * 1024
BODY = 64 * MiB
STREAM_LIMIT = 80 * MiB
PIECE = 256 * 1024
TEMP_PREFIX = ".clindav-tmp-"
AUTH = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
PATIENT = "9434765919"


@pytest.fixture
def big(instance: Instance) -> Iterator[Gateway]:
    data = instance.settings()
    data["limits"] = {"max_upload_bytes": 1 * MiB, "max_stream_bytes": STREAM_LIMIT}
    instance.write_settings(data)
    gateway = start_gateway(instance)
    yield gateway
    gateway.stop()


# --- helpers ------------------------------------------------------------------


def pieces(seed: int, size: int, first: bytes = b"") -> Iterator[bytes]:
    """``size`` bytes of reproducible random data (starting with ``first``), in pieces."""
    rng = random.Random(seed)
    sent = 0
    while sent < size:
        piece = (first if sent == 0 and first else rng.randbytes(PIECE))[: size - sent]
        sent += len(piece)
        yield piece


def digest(seed: int, size: int, first: bytes = b"") -> str:
    h = hashlib.sha256()
    for piece in pieces(seed, size, first):
        h.update(piece)
    return h.hexdigest()


def samples(seed: int, size: int) -> list[bytes]:
    """64-byte runs from every piece of the body: none may appear in a stored file."""
    return [piece[1000:1064] for piece in pieces(seed, size)]


def put(
    gateway: Gateway,
    path: str,
    body: Iterator[bytes],
    *,
    length: int | None,
    headers: dict[str, str] | None = None,
) -> http.client.HTTPResponse:
    """PUT from a generator: Content-Length when ``length`` is given, else chunked."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=120)
    conn.putrequest("PUT", path)
    conn.putheader("Authorization", AUTH)
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    if length is None:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(length))
    conn.endheaders()
    try:
        for piece in body:
            chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if length is None else piece
            conn.send(chunk)
        if length is None:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused with 413 mid-body: the answer is already on its way
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _tree(root: int) -> list[int]:
    """The gateway's processes: with ``server.workers`` the requests go to its children."""
    parents = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat_file.parent.name)] = int(
                stat_file.read_text().rsplit(")", 1)[1].split()[1]
            )
        except (OSError, IndexError, ValueError):
            continue  # a process that just ended
    found = [root]
    for pid in found:
        found.extend(child for child, parent in parents.items() if parent == pid)
    return found


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


class PeakRss:
    """Peak RSS growth of the gateway's process tree (KiB) from now on.

    Each process's high-water mark is reset to its current RSS (``clear_refs``
    = 5); the growth is the sum over the processes of peak minus that RSS.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._before = {}
        for pid in _tree(gateway.process.pid):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            self._before[pid] = _kib(pid, "VmRSS")

    def growth(self) -> int:
        return sum(_kib(pid, "VmHWM") - rss for pid, rss in self._before.items())


def query(instance: Instance, sql: str, **params: object) -> list[tuple]:
    from gateway.settings import load_settings

    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()


def files_under(folder: Path) -> list[Path]:
    return [Path(d) / f for d, _, names in os.walk(folder) for f in names]


def temps(instance: Instance, share: str) -> list[Path]:
    return [p for p in files_under(instance.share_dir(share)) if p.name.startswith(TEMP_PREFIX)]


def key_rows(instance: Instance) -> int:
    return query(instance, "SELECT count(*) FROM data_key")[0][0]


def event(instance: Instance, request_id: str) -> tuple[int, str, str, dict]:
    (e,) = events_by_request(instance)[request_id]
    return e.status, e.code, e.reason or "", dict(e.details or {})


def wait_for_event(instance: Instance, path: str, code: str) -> tuple[int, str]:
    """The (status, code) of the audit event of a request whose answer the client lost."""
    for _ in range(200):
        rows = query(
            instance,
            "SELECT status, code FROM audit_event WHERE logical_path = :p AND code = :c",
            p=path,
            c=code,
        )
        if rows:
            return rows[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {code} event for {path}")


def raw_put(gateway: Gateway, head: str, body: Iterator[bytes]) -> bytes:
    """Send a request head and as much of ``body`` as the server takes; what it answered."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for piece in body:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a 413 closes the connection; the answer is already on its way
        return read_answer(sock)


def put_head(path: str, length: int, extra: str = "") -> str:
    return (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    )


# --- a streamed upload ----------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_streamed_put_is_sealed_on_the_fly_and_reads_back(
    big: Gateway, instance: Instance, framing: str
) -> None:
    s = big.session()
    assert s.put(f"{big.url}/documents/warm.txt", data=b"warm-up").status_code == 201
    keys_before = key_rows(instance)
    peak = PeakRss(big)
    length = BODY if framing == "content-length" else None
    r = put(big, "/documents/huge.bin", pieces(1, BODY), length=length)
    put_peak = peak.growth()
    assert r.status == 201, r.read()
    assert r.getheader("ETag"), "a streamed body is stored unchanged: its ETag is given"

    # Registry and key table: one more row each, with the whole body's size and hash.
    expected = digest(1, BODY)
    rows = query(
        instance,
        "SELECT size, sha256 FROM stored_object WHERE share = 'documents' AND logical_path = :p",
        p="/huge.bin",
    )
    assert rows == [(BODY, expected)]
    assert key_rows(instance) == keys_before + 1
    status, code, _, details = event(instance, r.getheader("X-Request-Id"))
    assert (status, code) == (201, "stored")
    assert details.get("streamed") is True and details.get("format") == "unknown"

    # On the share: one more file, 0600, CLDV, no plaintext run of the body, no temp file.
    (stored,) = [p for p in files_under(instance.share_dir("documents")) if p.stat().st_size > BODY]
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    data = stored.read_bytes()
    assert data[:4] == b"CLDV"
    assert not [run for run in samples(1, BODY) if run in data]
    del data
    assert temps(instance, "documents") == []

    # Read back, streamed, byte-identical; the GET's memory is flat too.
    peak = PeakRss(big)
    got = hashlib.sha256()
    with s.get(f"{big.url}/documents/huge.bin", stream=True) as response:
        assert response.status_code == 200
        for piece in response.iter_content(PIECE):
            got.update(piece)
    get_peak = peak.growth()
    assert got.hexdigest() == expected

    # Far less than the body: the body is never held whole (64 MiB; allow a quarter).
    assert put_peak < BODY // 1024 // 4, f"PUT grew RSS by {put_peak} KiB"
    assert get_peak < BODY // 1024 // 4, f"GET grew RSS by {get_peak} KiB"


def test_small_bodies_stay_in_memory_and_are_checked_whole(big: Gateway) -> None:
    """Below the in-memory limit nothing changes: a JPEG is decoded and scrubbed as before."""
    s = big.session()
    assert s.request("MKCOL", f"{big.url}/clinical/{PATIENT}").status_code == 201
    r = s.put(f"{big.url}/clinical/{PATIENT}/photo.jpg", data=small_jpeg())
    assert r.status_code == 201, r.text
    assert "streamed" not in event(big.instance, r.headers["X-Request-Id"])[3]


# --- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "name", "first", "stage"),
    [
        # TIFF has no streaming structural check (JPEG and PNG do: test_streamed_images.py).
        ("clinical", f"{PATIENT}/big.tif", b"II*\x00\x08\x00\x00\x00", "filetype"),
        # A HEIF streams only when its meta comes before its mdat (test_streamed_images.py).
        (
            "clinical",
            f"{PATIENT}/big.heic",
            b"\x00\x00\x00\x14ftypheic\x00\x00\x00\x00mif1\x00\x00\x00\x00mdat",
            "filetype",
        ),
        ("documents", "clip.mp4", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "scrub"),
    ],
)
def test_streamed_body_a_stage_needs_whole_is_refused_413(
    big: Gateway, instance: Instance, share: str, name: str, first: bytes, stage: str
) -> None:
    s = big.session()
    if share == "clinical":
        assert s.request("MKCOL", f"{big.url}/clinical/{PATIENT}").status_code == 201
    keys_before = key_rows(instance)
    size = 16 * MiB
    answer = raw_put(big, put_head(f"/{share}/{name}", size), pieces(2, size, first))
    status, _ = wait_for_event(instance, f"/{name}", "upload-too-large-for-checks")
    assert status == 413
    # Refused once the head was in: the answer comes while the client is still sending.
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"X-Clindav-Error: upload-too-large-for-checks" in answer
    assert f"this share's {stage} check".encode() in answer
    reason = query(
        instance,
        "SELECT reason FROM audit_event WHERE code = 'upload-too-large-for-checks'",
    )[0][0]
    assert reason.startswith(f"stage {stage}:")
    assert [p for p in files_under(instance.share_dir(share))] == []
    assert key_rows(instance) == keys_before
    assert s.get(f"{big.url}/{share}/{name}").status_code == 404


def test_streamed_body_refused_by_content_is_read_to_its_end(
    big: Gateway, instance: Instance
) -> None:
    """A refusal that is not a 413 comes after the rest is read and dropped, on a live
    connection, without the gateway ever holding the rest (cheroot would, to drain it)."""
    s = big.session()
    assert s.request("MKCOL", f"{big.url}/clinical/{PATIENT}").status_code == 201
    peak = PeakRss(big)
    size = 64 * MiB  # well above the few 1 MiB blocks a streamed body is read in
    conn = http.client.HTTPConnection("127.0.0.1", big.port, timeout=120)
    conn.putrequest("PUT", f"/clinical/{PATIENT}/scan.bin")
    conn.putheader("Authorization", AUTH)
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    for piece in pieces(3, size):
        conn.send(piece)
    r = conn.getresponse()
    r.read()
    assert (r.status, r.getheader("X-Clindav-Error")) == (415, "file-type-not-allowed")
    assert peak.growth() < size // 1024 // 4
    # The same connection serves the next request.
    conn.request("OPTIONS", "/documents/", headers={"Authorization": AUTH})
    assert conn.getresponse().status == 200
    conn.close()
    assert files_under(instance.share_dir("clinical")) == []


@pytest.mark.parametrize("header", ["Content-Length", "X-Expected-Entity-Length"])
def test_declared_length_over_the_stream_limit_is_refused_before_the_body(
    big: Gateway, instance: Instance, header: str
) -> None:
    declared = STREAM_LIMIT + 1
    if header == "Content-Length":
        head = put_head("/documents/too-big.bin", declared)
    else:
        head = (
            f"PUT /documents/too-big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {AUTH}\r\nTransfer-Encoding: chunked\r\n"
            f"X-Expected-Entity-Length: {declared}\r\n\r\n"
        )
    # No body byte is sent: the answer must come anyway.
    answer = raw_put(big, head, iter(()))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"X-Clindav-Error: payload-too-large" in answer
    assert files_under(instance.share_dir("documents")) == []


def test_chunked_body_growing_past_the_stream_limit_leaves_nothing(
    big: Gateway, instance: Instance
) -> None:
    keys_before = key_rows(instance)

    def chunked() -> Iterator[bytes]:
        for piece in pieces(4, STREAM_LIMIT + 4 * MiB):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    head = (
        f"PUT /documents/endless.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {AUTH}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = raw_put(big, head, chunked())
    assert wait_for_event(instance, "/endless.bin", "payload-too-large") == (
        413,
        "payload-too-large",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert files_under(instance.share_dir("documents")) == []
    assert key_rows(instance) == keys_before


def test_a_stage_that_does_not_stream_gets_no_streamed_upload(
    instance: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Third-party stages default to ``streams = False``: over the in-memory limit their
    share refuses, naming the stage; below it they see whole bodies as before."""
    from tests.integration.test_pipeline import install_plugin, use_stage

    site = tmp_path / "site"
    install_plugin(site)
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{site}")
    use_stage(instance, {"word": "FORBIDDEN"})
    data = instance.settings()
    data["limits"] = {"max_upload_bytes": 1 * MiB, "max_stream_bytes": STREAM_LIMIT}
    instance.write_settings(data)
    gateway = start_gateway(instance)
    try:
        # Declared: refused before any body byte is sent.
        answer = raw_put(gateway, put_head("/documents/big.txt", 2 * MiB), iter(()))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        assert b"X-Clindav-Error: upload-too-large-for-checks" in answer
        assert b"this share's word-filter check" in answer
        # Chunked: refused once it outgrows the in-memory limit.
        r = put(gateway, "/documents/big.txt", pieces(6, 2 * MiB), length=None)
        assert (r.status, r.getheader("X-Clindav-Error")) == (413, "upload-too-large-for-checks")
        assert gateway.session().get(f"{gateway.url}/documents/big.txt").status_code == 404
        # Whole bodies still reach it.
        r = put(gateway, "/documents/small.txt", iter([b"has FORBIDDEN inside"]), length=20)
        assert (r.status, r.getheader("X-Clindav-Error")) == (422, "forbidden-word")
    finally:
        gateway.stop()
    assert files_under(instance.share_dir("documents")) == []


# --- interrupted uploads ----------------------------------------------------------


def _fsck(instance: Instance) -> list[dict]:
    result = run_cli("fsck", "--json", config=instance.config, check=False)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout or "[]")


@pytest.mark.parametrize("close", ["reset", "fin"])
def test_client_gone_mid_stream_leaves_no_temp_file_and_no_key(
    big: Gateway, instance: Instance, close: str
) -> None:
    s = big.session()
    assert s.put(f"{big.url}/documents/keep.txt", data=b"keep").status_code == 201
    keys_before = key_rows(instance)
    declared, sent = 32 * MiB, 8 * MiB
    sock = socket.create_connection(("127.0.0.1", big.port), timeout=30)
    try:
        sock.sendall(put_head("/documents/cut.bin", declared).encode())
        for piece in pieces(5, sent):
            sock.sendall(piece)
        # The upload is streaming: its sealed temp file exists, 0600, and is ciphertext.
        for _ in range(100):
            found = temps(instance, "documents")
            if found and found[0].stat().st_size > 4 * MiB:
                break
            time.sleep(0.05)
        (temp,) = found
        assert stat.S_IMODE(temp.stat().st_mode) == 0o600
        written = temp.read_bytes()
        assert written[:4] == b"CLDV"
        assert not [run for run in samples(5, sent) if run in written]
        # fsck is right about an upload in progress: a temp file is no finding.
        assert _fsck(instance) == []
    finally:
        if close == "reset":
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.close()
        else:
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)
            sock.close()
    code = "incomplete-body" if close == "fin" else None
    for _ in range(200):
        if not temps(instance, "documents") and query(
            instance,
            "SELECT 1 FROM audit_event WHERE logical_path = '/cut.bin' AND status >= 400",
        ):
            break
        time.sleep(0.05)
    assert temps(instance, "documents") == []
    rows = query(instance, "SELECT status, code FROM audit_event WHERE logical_path = '/cut.bin'")
    assert len(rows) == 1 and rows[0][0] >= 400, rows
    if code:
        assert rows[0] == (400, code)
    assert key_rows(instance) == keys_before
    assert s.get(f"{big.url}/documents/cut.bin").status_code == 404
    assert len(files_under(instance.share_dir("documents"))) == 1
    assert _fsck(instance) == []
