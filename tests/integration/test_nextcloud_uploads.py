"""Chunked upload v2 as the apps send it (../shared/NEXTCLOUD.md §5), against the real gateway.

Android's sequence (MKCOL and chunks with Destination, PROPFIND to resume,
6-digit names from 1, final MOVE with OC-Total-Length, X-OC-Mtime and
Overwrite), iOS's (names 1..11 ordered numerically, a PROPFIND 404 before the
MKCOL), cancelling, a wrong total, another user's folder, abandoned
transfers swept, no chunk plaintext on disk while a chunk arrives, and
nextcloudcmd sending a file over 10 MB with chunking v2, stored streamed.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import sqlite3
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    PASSWORD,
    Gateway,
    make_instance,
    run_cli,
    start_in_process,
)
from tests.integration.test_nextcloud_files import dav, listing, nextcloudcmd
from tests.integration.test_nextcloud_inbox import inbox_gateway  # noqa: F401 - a fixture
from tests.scrub_corpus_bmff import heif_from_pillow_heif, heif_from_pillow_heif_markers


def uploads(gateway: Gateway, user: str = "alice") -> str:
    return f"{gateway.url}/remote.php/dav/uploads/{user}"


def put_events(gateway: Gateway, path: str) -> list[tuple[int, str, dict]]:
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        rows = db.execute(
            "SELECT status, code, details FROM audit_event WHERE action = 'PUT' "
            "AND logical_path = ? ORDER BY seq",
            (path,),
        ).fetchall()
    return [(status, code, json.loads(details or "{}")) for status, code, details in rows]


def staging(gateway: Gateway) -> Path:
    return gateway.instance.folder / "nextcloud-uploads"


def test_android_chunked_heic_upload_is_scrubbed_stored_and_answered(gateway: Gateway) -> None:
    s = gateway.session()
    heic = heif_from_pillow_heif()
    target = dav(gateway) + "/documents/IMG_0001.heic"
    folder = uploads(gateway) + "/" + hashlib.md5(heic).hexdigest()  # Android names it so
    with_dest = {"Destination": target}
    assert s.request("MKCOL", folder, headers=with_dest).status_code == 201
    assert s.request("MKCOL", folder, headers=with_dest).status_code == 405
    empty = s.request("PROPFIND", folder, headers={"Depth": "1"})
    assert empty.status_code == 207 and empty.text.count("<d:response>") == 1
    third = len(heic) // 3
    pieces = [heic[:third], heic[third : 2 * third], heic[2 * third :]]
    for number, piece in enumerate(pieces[:2], start=1):
        put = s.put(f"{folder}/{number:06d}", data=piece, headers=with_dest)
        assert put.status_code == 201, put.text
    # The app resumes: it asks what arrived and sends the rest.
    resumed = s.request("PROPFIND", folder, headers={"Depth": "1"})
    assert f"{third}</d:getcontentlength>" in resumed.text and "000002" in resumed.text
    assert s.put(f"{folder}/000003", data=pieces[2], headers=with_dest).status_code == 201

    final = s.request(
        "MOVE",
        folder + "/.file",
        headers={
            "Destination": target,
            "Overwrite": "T",
            "OC-Total-Length": str(len(heic)),
            "X-OC-Mtime": "1700000200.5",
            "X-OC-CTime": "1700000100",
        },
    )
    assert final.status_code == 201, final.text
    assert final.headers["OC-FileId"].endswith("occlindav01")
    assert final.headers["X-OC-MTime"] == "accepted"
    stored = listing(s, target, "0")["/remote.php/dav/files/alice/documents/IMG_0001.heic"]
    assert final.headers["OC-ETag"] != stored["getetag"]  # scrubbed: the apps fetch it
    assert stored["id"] == final.headers["OC-FileId"]
    body = s.get(target).content
    assert body != heic
    leaked = [m for m in heif_from_pillow_heif_markers() if m.encode() in body]
    assert leaked == []
    # Audited as any PUT, with what the scrubber removed.
    [(status, code, details)] = put_events(gateway, "/IMG_0001.heic")
    assert (status, code) == (201, "stored") and details, details
    # The transfer is gone.
    assert s.request("PROPFIND", folder, headers={"Depth": "0"}).status_code == 404
    assert list(staging(gateway).glob("*/*")) == []


def test_ios_chunk_names_are_ordered_as_numbers(gateway: Gateway) -> None:
    s = gateway.session()
    folder = uploads(gateway) + "/5E1B2C3D-0000-4000-8000-000000000001"
    assert s.request("PROPFIND", folder, headers={"Depth": "0"}).status_code == 404
    assert s.request("MKCOL", folder).status_code == 201
    parts = [f"part {n:02d};".encode() * 50 for n in range(1, 12)]
    for number in (11, 2, 10, 1, 3, 4, 5, 6, 7, 8, 9):  # out of order, as parallel PUTs land
        assert s.put(f"{folder}/{number}", data=parts[number - 1]).status_code == 201
    final = s.request(
        "MOVE",
        folder + "/.file",
        headers={
            "Destination": dav(gateway) + "/documents/notes.txt",
            "OC-Total-Length": str(sum(map(len, parts))),
        },
    )
    assert final.status_code == 201, final.text
    assert s.get(dav(gateway) + "/documents/notes.txt").content == b"".join(parts)


def test_cancel_wrong_total_and_other_users_folders(gateway: Gateway) -> None:
    s = gateway.session()
    folder = uploads(gateway) + "/cancel-me"
    s.request("MKCOL", folder)
    s.put(folder + "/1", data=b"abc")
    assert s.delete(folder).status_code == 204
    assert s.delete(folder).status_code == 404

    folder = uploads(gateway) + "/short"
    s.request("MKCOL", folder)
    s.put(folder + "/1", data=b"abc")
    wrong = s.request(
        "MOVE",
        folder + "/.file",
        headers={"Destination": dav(gateway) + "/documents/short.txt", "OC-Total-Length": "4"},
    )
    assert wrong.status_code == 400 and wrong.headers["X-Clindav-Error"] == "upload-size-mismatch"
    assert s.head(dav(gateway) + "/documents/short.txt").status_code == 404
    assert s.request("PROPFIND", folder, headers={"Depth": "1"}).status_code == 207  # kept

    theirs = s.request("MKCOL", uploads(gateway, "ivy") + "/x")
    assert theirs.status_code == 403 and theirs.headers["X-Clindav-Error"] == "other-users-files"
    elsewhere = s.request(
        "MOVE",
        folder + "/.file",
        headers={"Destination": dav(gateway, "ivy") + "/documents/short.txt"},
    )
    assert elsewhere.status_code == 400
    assert elsewhere.headers["X-Clindav-Error"] == "bad-upload-destination"
    assert _announce_only(gateway, "/remote.php/dav/uploads/alice/short/9", 2**50) == 413
    bad_name = s.request("MKCOL", uploads(gateway) + "/bad name!")
    assert bad_name.status_code == 400
    assert s.put(folder + "/abc", data=b"a").headers["X-Clindav-Error"] == "invalid-chunk-name"


def _announce_only(gateway: Gateway, path: str, length: int) -> int:
    """The status of a PUT that announces ``length`` bytes and sends none."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.putrequest("PUT", path)
        token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        conn.putheader("Authorization", f"Basic {token}")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_final_put_meets_the_destinations_policy(gateway: Gateway) -> None:
    """The consent and file-type checks of a PUT there: an executable is refused, nothing stored."""
    s = gateway.session()
    folder = uploads(gateway) + "/refused"
    s.request("MKCOL", folder)
    s.put(folder + "/1", data=b"MZ\x90\x00" + b"\x00" * 200)
    final = s.request(
        "MOVE", folder + "/.file", headers={"Destination": dav(gateway) + "/teaching/tool.exe"}
    )
    assert final.status_code in (403, 415), final.text
    assert s.head(dav(gateway) + "/teaching/tool.exe").status_code == 404


def abandoned_transfer(gateway: Gateway) -> Path:
    """A transfer with a chunk, untouched for two days: its staging folder."""
    s = gateway.session()
    s.request("MKCOL", uploads(gateway) + "/old")
    s.put(uploads(gateway) + "/old/1", data=b"left behind")
    [old] = list(staging(gateway).glob("*/*"))
    long_ago = time.time() - 2 * 86400
    os.utime(old, (long_ago, long_ago))
    return old


def test_abandoned_transfers_are_swept(gateway: Gateway) -> None:
    s = gateway.session()
    old = abandoned_transfer(gateway)
    s.request("MKCOL", uploads(gateway) + "/new")
    assert not old.exists()
    assert (
        s.request("PROPFIND", uploads(gateway) + "/old", headers={"Depth": "0"}).status_code == 404
    )


def test_abandoned_transfers_go_without_another_upload_starting(
    inbox_gateway: Gateway,  # noqa: F811 - the fixture (its sweeper runs every second)
) -> None:
    """The server's sweeper removes them: a gateway the apps stopped using keeps no chunk of
    a patient's photo past nextcloud.upload_expiry."""
    old = abandoned_transfer(inbox_gateway)
    deadline = time.monotonic() + 30
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not old.exists()


class SlowChunk:
    """A chunk body that arrives in 64 KiB pieces with pauses (requests reads it by length)."""

    def __init__(self, marker: bytes, pieces: int, arrived: threading.Event) -> None:
        self.piece = marker * (65536 // len(marker))
        self.left = pieces
        self.sent = 0
        self.arrived = arrived

    def __len__(self) -> int:
        return self.left * len(self.piece)

    def read(self, size: int = -1) -> bytes:
        if self.left == 0:
            return b""
        self.left -= 1
        self.sent += 1
        if self.sent == 3:
            self.arrived.set()
        time.sleep(0.05)
        return self.piece


def _plaintext_on_disk(roots: list[Path], marker: bytes) -> list[str]:
    found = []
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                try:
                    if stat.S_ISREG(path.lstat().st_mode) and marker in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    continue  # removed while we looked
    return found


def test_no_chunk_plaintext_on_disk_while_the_upload_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway's temp folder is one of the scanned places: its own, not the host's
    # (for the programs it runs, and for Python's tempfile, which read TMPDIR once).
    temp = tmp_path / "gateway-tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    gateway = start_in_process(make_instance(tmp_path))
    try:
        _watch_a_chunked_upload(gateway, [gateway.instance.folder, temp])
    finally:
        gateway.stop()


def _watch_a_chunked_upload(gateway: Gateway, roots: list[Path]) -> None:
    s = gateway.session()
    folder = uploads(gateway) + "/watched"
    s.request("MKCOL", folder)
    marker = os.urandom(16).hex().encode()
    pieces = 40
    arrived = threading.Event()
    answers: list[requests.Response] = []
    sender = threading.Thread(
        target=lambda: answers.append(
            gateway.session().put(
                folder + "/1",
                data=SlowChunk(marker, pieces, arrived),
            )
        )
    )
    sender.start()
    assert arrived.wait(30)
    scans = 0
    while sender.is_alive():
        assert _plaintext_on_disk(roots, marker) == []
        scans += 1
    sender.join()
    assert answers[0].status_code == 201, answers[0].text
    assert scans >= 2
    assert _plaintext_on_disk(roots, marker) == []
    final = s.request(
        "MOVE", folder + "/.file", headers={"Destination": dav(gateway) + "/documents/watched.bin"}
    )
    assert final.status_code == 201
    assert _plaintext_on_disk(roots, marker) == []
    assert marker in s.get(dav(gateway) + "/documents/watched.bin").content


def test_nextcloudcmd_sends_a_large_file_with_chunking_v2(tmp_path: Path) -> None:
    instance = make_instance(tmp_path)
    settings = instance.settings()
    settings["limits"] = {"max_upload_bytes": 4 * 1024 * 1024}  # 12 MB is then streamed
    instance.write_settings(settings)
    gateway = start_in_process(instance)
    try:
        _sync_large_file(gateway, tmp_path)
    finally:
        gateway.stop()


def _sync_large_file(gateway: Gateway, tmp_path: Path) -> None:
    made = run_cli("user", "app-password", "alice", config=gateway.instance.config)
    secret = made.stdout.splitlines()[0].rsplit(" ", 1)[1]
    local = tmp_path / "sync"
    local.mkdir()
    big = os.urandom(12 * 1024 * 1024 + 5)
    (local / "big.bin").write_bytes(big)
    run = nextcloudcmd(gateway, local, secret)
    assert run.returncode == 0, run.stdout + run.stderr
    s = gateway.session()
    assert hashlib.sha256(s.get(dav(gateway) + "/documents/big.bin").content).digest() == (
        hashlib.sha256(big).digest()
    )
    [(status, _code, details)] = put_events(gateway, "/big.bin")
    assert status == 201 and details.get("streamed") is True  # never whole in memory
    # It went in chunks: the transfer's start is on the audit trail.
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        started = db.execute("SELECT count(*) FROM audit_event WHERE action = 'UPLOAD'").fetchone()
    assert started[0] >= 1


def test_staged_chunks_are_bounded_per_user(tmp_path: Path) -> None:
    """Chunks are unbounded in number: without a cap one account fills the staging disk."""
    instance = make_instance(tmp_path)
    settings = instance.settings()
    settings["limits"] = {"max_upload_bytes": 64 * 1024, "max_stream_bytes": 250 * 1024}
    instance.write_settings(settings)
    gateway = start_in_process(instance)
    try:
        _fill_the_staging_area(gateway)
    finally:
        gateway.stop()


def _fill_the_staging_area(gateway: Gateway) -> None:
    s = gateway.session()
    piece = os.urandom(100 * 1024)
    first, second = uploads(gateway) + "/first", uploads(gateway) + "/second"
    for folder in (first, second):
        assert s.request("MKCOL", folder).status_code == 201
    assert s.put(first + "/1", data=piece).status_code == 201
    assert s.put(first + "/2", data=piece).status_code == 201
    assert s.put(first + "/2", data=piece).status_code == 201  # a resent chunk replaces its own
    for refused in (s.put(first + "/3", data=piece), s.put(second + "/1", data=piece)):
        assert refused.status_code == 507, refused.text
        assert refused.headers["X-Clindav-Error"] == "upload-staging-full"
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        audited = db.execute(
            "SELECT count(*) FROM audit_event WHERE action = 'UPLOAD' AND status = 507 "
            "AND code = 'upload-staging-full'"
        ).fetchone()
    assert audited == (2,)
    on_disk = sum(p.stat().st_size for p in staging(gateway).rglob("*") if p.is_file())
    assert on_disk < 250 * 1024
    other = gateway.session("ivy")  # another account's staging is its own
    assert other.request("MKCOL", uploads(gateway, "ivy") + "/x").status_code == 201
    assert other.put(uploads(gateway, "ivy") + "/x/1", data=piece).status_code == 201
    assert s.delete(first).status_code == 204  # cancelling frees the room
    assert s.put(second + "/1", data=piece).status_code == 201
