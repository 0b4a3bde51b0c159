"""Encryption at rest, against the running gateway: nothing readable on the
share, Range reads, tamper detection, key rotation and crypto-shredding."""

from __future__ import annotations

import os
import random
import shutil
import socket
from pathlib import Path

import pytest
import sqlalchemy

from gateway.db import DataKey, ShareKey, StoredObject
from gateway.settings import load_settings
from tests.conftest import (
    PASSWORD,
    Gateway,
    Instance,
    make_instance,
    run_cli,
    start_gateway,
    start_in_process,
)
from tests.scrub_corpus import dirty_file

PATIENTS = ("9434765919", "4010232137", "9876543210")
CHUNK = 65536


def engine_for(instance: Instance) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())


def stored_path(instance: Instance, share: str, file_id: str) -> Path:
    """The backing file whose header names ``file_id``."""
    needle = bytes.fromhex(file_id.replace("-", ""))
    for folder, _dirs, files in os.walk(instance.share_dir(share)):
        for name in files:
            path = Path(folder) / name
            if needle in path.read_bytes()[:64]:
                return path
    raise AssertionError(f"no stored file for {file_id}")


def file_id_of(instance: Instance, share: str, logical: str) -> str:
    engine = engine_for(instance)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sqlalchemy.select(StoredObject.file_id).where(
                    StoredObject.share == share, StoredObject.logical_path == logical
                )
            ).scalar_one()
    finally:
        engine.dispose()


def stored_form(url: str, body: bytes) -> bytes:
    from plugins.formats import scrubber_for
    from plugins.scrub.base import ScrubOptions

    formats = {".jpg": "jpeg", ".png": "png"}
    fmt = formats.get(url[url.rfind(".") :])
    return scrubber_for(fmt).clean(body, ScrubOptions()).data if fmt else body


def test_backing_share_holds_nothing_readable(instance: Instance, tmp_path: Path) -> None:
    temp_dir = tmp_path / "gateway-tmp"
    temp_dir.mkdir()
    os.environ["TMPDIR"] = str(temp_dir)  # the gateway subprocess inherits it
    try:
        gw = start_gateway(instance)  # its own process: TMPDIR applies to it
    finally:
        del os.environ["TMPDIR"]
    photo = dirty_file("phone.jpg").data
    png = dirty_file("dirty.png").data
    document = b"Referral letter for patient 9434765919, Mrs Example. " * 50
    uploads = {}
    try:
        s = gw.session()
        for patient in PATIENTS:
            assert s.request("MKCOL", f"{gw.url}/documents/{patient}").status_code == 201
            for name, body in (
                ("rash-left-arm.jpg", photo),
                ("mole.png", png),
                ("letter.txt", document),
            ):
                url = f"{gw.url}/documents/{patient}/{name}"
                assert s.put(url, data=body).status_code == 201
                uploads[url] = body
        for url, body in uploads.items():
            # Images come back as the pipeline stored them: scrubbed.
            assert s.get(url).content == stored_form(url, body)
    finally:
        gw.stop()
    needles = [
        b"\xff\xd8\xff",
        b"\x89PNG",
        b"ftypheic",
        b"Exif",
        b"rash-left-arm",
        b"mole",
        b"letter",
    ]
    needles += [p.encode() for p in PATIENTS] + [b"Referral", b"Mrs Example"]
    for root in (instance.folder / "shares", temp_dir):
        for folder, dirs, files in os.walk(root):
            for name in files + dirs:
                assert not any(n.decode("latin-1") in name for n in needles[4:]), name
            for name in files:
                data = (Path(folder) / name).read_bytes()
                found = [n for n in needles if n in data]
                assert not found, f"{name} holds {found}"


def test_range_reads_at_and_across_chunk_boundaries(gateway: Gateway) -> None:
    body = random.Random(7).randbytes(3 * CHUNK + 1234)
    s = gateway.session()
    url = f"{gateway.url}/documents/ranges.bin"
    assert s.put(url, data=body).status_code == 201
    ranges = [
        (0, 0),
        (CHUNK - 1, CHUNK),
        (CHUNK, CHUNK),
        (CHUNK - 10, 2 * CHUNK + 10),
        (2 * CHUNK, 3 * CHUNK - 1),
        (3 * CHUNK, len(body) - 1),
        (100, 200),
    ]
    for start, end in ranges:
        r = s.get(url, headers={"Range": f"bytes={start}-{end}"})
        assert r.status_code == 206, (start, end)
        assert r.content == body[start : end + 1], (start, end)
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(body)}"
    tail = s.get(url, headers={"Range": "bytes=-500"})
    assert tail.content == body[-500:]
    listing = s.request("PROPFIND", url, headers={"Depth": "0"})
    assert f"<D:getcontentlength>{len(body)}</D:getcontentlength>".encode() in listing.content


def test_tampered_byte_fails_the_get_and_the_server_stays_up(gateway: Gateway) -> None:
    s = gateway.session()
    body = random.Random(1).randbytes(200_000)
    url = f"{gateway.url}/documents/tamper.bin"
    assert s.put(url, data=body).status_code == 201
    path = stored_path(
        gateway.instance, "documents", file_id_of(gateway.instance, "documents", "/tamper.bin")
    )
    data = bytearray(path.read_bytes())
    data[CHUNK + 500] ^= 0x01
    path.write_bytes(bytes(data))
    r = s.get(url)
    assert r.status_code == 500
    assert r.headers["X-Clindav-Error"] == "content-authentication-failed"
    assert body[:1000] not in r.content  # not one verified-or-not byte of the file
    assert "content-authentication-failed" in gateway.log()
    assert s.put(f"{gateway.url}/documents/other.txt", data=b"still alive").status_code == 201
    assert s.get(f"{gateway.url}/documents/other.txt").content == b"still alive"
    from tests.integration.test_pipeline import audit_rows

    failed = [
        e for e in audit_rows(gateway.instance, "GET") if e.code == "content-authentication-failed"
    ]
    assert [(e.status, e.logical_path) for e in failed] == [(500, "/tamper.bin")]


def raw_get(gateway: Gateway, path: str) -> bytes:
    """All bytes a GET delivers before the server ends the connection."""
    import base64

    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n".encode()
        )
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
    return received


def test_large_file_streams_and_aborts_at_a_bad_chunk(gateway: Gateway) -> None:
    body = random.Random(2).randbytes(20 * 1024 * 1024)
    s = gateway.session()
    url = f"{gateway.url}/documents/big.bin"
    assert s.put(url, data=body).status_code == 201
    assert s.get(url).content == body
    path = stored_path(
        gateway.instance, "documents", file_id_of(gateway.instance, "documents", "/big.bin")
    )
    bad_chunk = 200
    with open(path, "r+b") as f:
        f.seek(45 + bad_chunk * (CHUNK + 16) + 10)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    received = raw_get(gateway, "/documents/big.bin")
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    # Only verified chunks went out: a strict prefix, ending before the bad chunk.
    assert len(payload) <= bad_chunk * CHUNK
    assert body.startswith(payload)


def test_rotation_rewraps_keys_without_touching_files(instance: Instance, tmp_path: Path) -> None:
    gw = start_in_process(instance)
    bodies = {f"/documents/r{i}.bin": random.Random(i).randbytes(1000 + i) for i in range(5)}
    s = gw.session()
    for path, body in bodies.items():
        assert s.put(gw.url + path, data=body).status_code == 201
    props = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
        "<Z:note>patient 9434765919</Z:note></D:prop></D:set></D:propertyupdate>"
    )
    assert s.request("PROPPATCH", gw.url + "/documents/r0.bin", data=props).status_code == 207
    gw.stop()
    backup = tmp_path / "backup"
    shutil.copytree(instance.folder, backup)
    mtimes = {
        p: p.stat().st_mtime_ns for p in (instance.folder / "shares").rglob("*") if p.is_file()
    }

    result = run_cli("keys", "rotate", config=instance.config)
    assert "new master key k2" in result.stdout
    status = run_cli("keys", "status", config=instance.config).stdout
    assert "k2\tactive" in status and "k1\tloaded\t0" in status
    retired = run_cli("keys", "retire", config=instance.config)
    assert "retired unused master keys: k1" in retired.stdout
    assert "k1" not in run_cli("keys", "status", config=instance.config).stdout

    engine = engine_for(instance)
    with engine.connect() as conn:
        assert set(conn.execute(sqlalchemy.select(DataKey.master_key_id)).scalars()) == {"k2"}
        assert set(conn.execute(sqlalchemy.select(ShareKey.master_key_id)).scalars()) == {"k2"}
    engine.dispose()
    assert mtimes == {
        p: p.stat().st_mtime_ns for p in (instance.folder / "shares").rglob("*") if p.is_file()
    }

    rotated, old = (
        start_in_process(instance),
        start_in_process(Instance(backup, backup / "clindav.yaml", "sqlite")),
    )
    try:
        for path, body in bodies.items():
            assert rotated.session().get(rotated.url + path).content == body
            assert old.session().get(old.url + path).content == body
        find = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:note xmlns:Z="urn:x"/></D:prop></D:propfind>'
        r = rotated.session().request(
            "PROPFIND", rotated.url + "/documents/r0.bin", data=find, headers={"Depth": "0"}
        )
        assert b"patient 9434765919" in r.content
    finally:
        rotated.stop()
        old.stop()
    # The dead property is stored encrypted, like the files.
    assert b"9434765919" not in (instance.folder / "clindav.db").read_bytes()


def test_running_gateway_follows_a_rotation(instance: Instance) -> None:
    gw = start_in_process(instance)
    try:
        s = gw.session()
        assert s.put(f"{gw.url}/documents/before.txt", data=b"before").status_code == 201
        run_cli("keys", "rotate", config=instance.config)
        # Rows now wrapped by k2, which this process has not loaded yet: it reloads.
        assert s.get(f"{gw.url}/documents/before.txt").content == b"before"
        assert s.put(f"{gw.url}/documents/after.txt", data=b"after").status_code == 201
    finally:
        gw.stop()
    engine = engine_for(instance)
    with engine.connect() as conn:
        assert set(conn.execute(sqlalchemy.select(DataKey.master_key_id)).scalars()) == {"k2"}
    engine.dispose()


def test_rotation_resumes_after_interruption(instance: Instance) -> None:
    gw = start_in_process(instance)
    s = gw.session()
    for i in range(3):
        assert s.put(f"{gw.url}/documents/x{i}.txt", data=b"x" * i).status_code == 201
    gw.stop()
    key_file = instance.folder / "keys" / "master.key"
    # An interrupted rotation: the new key was appended, no row re-wrapped yet.
    with open(key_file, "a") as f:
        f.write("k2 " + os.urandom(32).hex() + "\n")
    result = run_cli("keys", "rotate", config=instance.config)
    assert "new master key" not in result.stdout
    engine = engine_for(instance)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT (SELECT count(*) FROM data_key) + (SELECT count(*) FROM share_key)"
            )
        ).scalar_one()
    engine.dispose()
    assert rows >= 3 + 4  # three files, four share name seeds, and the seeds of no share
    assert f"re-wrapped {rows} key rows" in result.stdout
    assert key_file.read_text().split()[-2] == "k2"
    gw = start_in_process(instance)
    try:
        assert gw.session().get(f"{gw.url}/documents/x2.txt").content == b"xx"
    finally:
        gw.stop()


def test_deleted_key_row_makes_backup_ciphertext_unreadable(
    instance: Instance, tmp_path: Path
) -> None:
    gw = start_in_process(instance)
    s = gw.session()
    body = b"a photo of a wound" * 100
    assert s.put(f"{gw.url}/documents/wound.txt", data=body).status_code == 201
    file_id = file_id_of(instance, "documents", "/wound.txt")
    share_backup = tmp_path / "share-backup"
    shutil.copytree(instance.share_dir("documents"), share_backup)
    engine = engine_for(instance)
    with engine.begin() as conn:
        wrapped = conn.execute(
            sqlalchemy.select(DataKey.wrapped).where(DataKey.file_id == file_id)
        ).scalar_one()
        conn.execute(sqlalchemy.delete(DataKey).where(DataKey.file_id == file_id))
    engine.dispose()
    shutil.rmtree(instance.share_dir("documents"))
    shutil.copytree(share_backup, instance.share_dir("documents"))
    r = s.get(f"{gw.url}/documents/wound.txt")
    assert r.status_code == 410
    assert r.headers["X-Clindav-Error"] == "content-key-purged"
    assert body[:50] not in r.content
    gw.stop()
    fsck = run_cli("fsck", config=instance.config, check=False)
    assert fsck.returncode == 1
    assert "key-purged\tdocuments:/wound.txt" in fsck.stdout
    assert wrapped not in (instance.folder / "clindav.db").read_bytes()


def test_fsck_finds_and_quarantines(instance: Instance) -> None:
    gw = start_in_process(instance)
    s = gw.session()
    for name in ("a.txt", "b.txt", "c.txt"):
        assert s.put(f"{gw.url}/documents/{name}", data=name.encode() * 100).status_code == 201
    gw.stop()
    a = stored_path(instance, "documents", file_id_of(instance, "documents", "/a.txt"))
    b = stored_path(instance, "documents", file_id_of(instance, "documents", "/b.txt"))
    data = bytearray(a.read_bytes())
    data[-1] ^= 1
    a.write_bytes(bytes(data))
    b.unlink()
    (instance.share_dir("documents") / "legacy.jpg").write_bytes(b"\xff\xd8\xff plaintext")
    clean = run_cli("fsck", "--json", config=instance.config, check=False)
    import json

    kinds = sorted((f["kind"], f["logical_path"]) for f in json.loads(clean.stdout))
    assert kinds == [
        ("authentication-failed", "/a.txt"),
        ("legacy-file", None),
        ("missing-ciphertext", "/b.txt"),
    ]
    run_cli("fsck", "--repair", config=instance.config, check=False)
    assert not a.exists()
    quarantined = list((instance.share_dir("documents") / ".clindav-quarantine").rglob("*"))
    assert any(p.is_file() for p in quarantined)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1])
def test_sizes_round_trip(gateway: Gateway, size: int) -> None:
    body = random.Random(size).randbytes(size)
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/s.bin", data=body).status_code == 201
    r = s.get(f"{gateway.url}/documents/s.bin")
    assert r.content == body
    assert int(r.headers["Content-Length"]) == size


def test_make_instance_helper_isolated(tmp_path: Path) -> None:
    """Two instances never share keys: the same name is stored differently."""
    one, two = make_instance(tmp_path / "one"), make_instance(tmp_path / "two")
    names = []
    for inst in (one, two):
        gw = start_in_process(inst)
        try:
            assert gw.session().put(f"{gw.url}/documents/same.txt", data=b"x").status_code == 201
        finally:
            gw.stop()
        names.append({p.name for p in inst.share_dir("documents").iterdir()})
    assert names[0] and names[1] and names[0] != names[1]


def test_fsck_reregisters_a_version_renamed_before_its_commit(instance: Instance) -> None:
    """The trace of a crash between rename and commit: registry names another file id."""
    gw = start_in_process(instance)
    assert gw.session().put(f"{gw.url}/documents/v.txt", data=b"new version").status_code == 201
    gw.stop()
    engine = engine_for(instance)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.update(StoredObject)
            .where(StoredObject.logical_path == "/v.txt")
            .values(file_id="00000000-0000-4000-8000-000000000000", sha256="0" * 64)
        )
    engine.dispose()
    before = run_cli("fsck", "--json", config=instance.config, check=False)
    import json

    kinds = sorted(f["kind"] for f in json.loads(before.stdout))
    assert kinds == ["missing-ciphertext", "orphan-ciphertext"]
    run_cli("fsck", "--repair", config=instance.config, check=False)
    after = run_cli("fsck", config=instance.config, check=False)
    assert after.returncode == 0, after.stdout
    gw = start_in_process(instance)
    try:
        assert gw.session().get(f"{gw.url}/documents/v.txt").content == b"new version"
    finally:
        gw.stop()
