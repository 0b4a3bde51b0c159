"""The apps' file tree, remote.php/dav/files/<uid>/, replayed as the apps send it (../shared/NEXTCLOUD.md §4).

The same shares as WebDAV, through the same gate; the properties the apps
require (oc:id, oc:permissions, folder ETags that change below), the OC-*
answer headers, X-OC-Mtime (fractional too), stable file numbers across a
MOVE and a restart, HEAD existence checks, legacy chunks refused, and the
ETag rule that makes the desktop client fetch a scrubbed photo.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from pathlib import Path

import piexif
import requests
from PIL import Image

from tests.conftest import Gateway, Instance, require_tool, run_cli, start_gateway, start_in_process
from tests.integration.test_console_http import form_token, sign_in
from tests.integration.test_nextcloud_login import poll, start_flow

NS = {"d": "DAV:", "oc": "http://owncloud.org/ns", "nc": "http://nextcloud.org/ns"}
# The body nextcloudcmd 3.7.3 sends for every folder it lists (NEXTCLOUD.md §4.2).
DESKTOP_PROPFIND = b"""<?xml version="1.0" ?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>
<d:resourcetype /><d:getlastmodified /><d:getcontentlength /><d:getetag />
<oc:size /><oc:id /><oc:fileid /><oc:downloadURL /><oc:dDC /><oc:permissions />
<oc:checksums /><oc:data-fingerprint /><oc:share-types /></d:prop></d:propfind>"""


def dav(gateway: Gateway, user: str = "alice") -> str:
    return f"{gateway.url}/remote.php/dav/files/{user}"


def listing(session: requests.Session, url: str, depth: str = "1") -> dict[str, dict[str, str]]:
    """href -> {property: text} of a PROPFIND, as the desktop client asks it."""
    answer = session.request("PROPFIND", url, data=DESKTOP_PROPFIND, headers={"Depth": depth})
    assert answer.status_code == 207, answer.text
    assert answer.headers["Content-Type"] == "application/xml; charset=utf-8"
    found = {}
    for response in ET.fromstring(answer.content).findall("d:response", NS):
        href = response.findtext("d:href", namespaces=NS)
        assert href is not None
        props = response.find("d:propstat/d:prop", NS)
        assert props is not None
        found[href] = {
            el.tag.split("}")[1]: (el.text or "") + ("collection" if len(el) else "")
            for el in props
        }
    return found


def gps_jpeg() -> bytes:
    exif = piexif.dump(
        {
            "0th": {piexif.ImageIFD.Make: b"PhoneMaker"},
            "GPS": {
                piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((51, 1), (30, 1), (0, 1)),
            },
        }
    )
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 90)).save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_the_tree_lists_the_shares_with_what_the_apps_require(gateway: Gateway) -> None:
    s = gateway.session()
    root = listing(s, dav(gateway) + "/")
    prefix = "/remote.php/dav/files/alice/"
    assert all(href.startswith(prefix) for href in root)
    assert set(root) == {
        prefix,
        *(f"{prefix}{share}/" for share in ("clinical", "documents", "referrals", "teaching")),
        f"{prefix}Camera%20inbox/",  # the default instance's inbox share, as the user's folder
    }
    for props in root.values():
        assert re.fullmatch(r"\d{8}occlindav01", props["id"])
        assert props["getetag"].startswith('"') and props["resourcetype"] == "collection"
        assert props["permissions"].startswith("G")
    assert root[prefix]["data-fingerprint"] == ""
    assert root[prefix + "documents/"]["permissions"] == "GCK"  # the share itself: no delete
    # The legacy root and the desktop's double slash name the same tree, the inbox included.
    legacy = "/remote.php/webdav/"
    legacy_root = listing(s, gateway.url + legacy)
    assert {h[len(legacy) :]: p["id"] for h, p in legacy_root.items()} == {
        h[len(prefix) :]: p["id"] for h, p in root.items()
    }
    put = s.put(f"{gateway.url}{legacy}Camera inbox/IMG_2.jpg", data=gps_jpeg())
    assert put.status_code == 201, put.text
    assert f"{prefix}Camera%20inbox/IMG_2.jpg" in listing(s, f"{dav(gateway)}/Camera inbox/")
    assert f"{legacy}Camera%20inbox/IMG_2.jpg" in listing(s, f"{gateway.url}{legacy}Camera inbox/")
    assert listing(s, dav(gateway) + "//", "0")
    # Another user's tree is not listed, whatever the path says.
    other = s.request("PROPFIND", dav(gateway, "ivy") + "/", headers={"Depth": "1"})
    assert other.status_code == 403 and other.headers["X-Clindav-Error"] == "other-users-files"


def test_put_mkcol_move_answer_oc_headers_and_keep_the_file_number(gateway: Gateway) -> None:
    s = gateway.session()
    base = dav(gateway) + "/documents"
    before = listing(s, dav(gateway) + "/", "1")["/remote.php/dav/files/alice/documents/"][
        "getetag"
    ]

    made = s.request("MKCOL", base + "/sub")
    assert made.status_code == 201 and made.headers["OC-FileId"].endswith("occlindav01")
    put = s.put(
        base + "/notes.txt",
        data=b"ward round notes\n",
        headers={
            "X-OC-Mtime": "1700000000.75",  # iOS sends fractions
            "OC-Checksum": "SHA1:0000000000000000000000000000000000000000",
            "OC-Total-Length": "17",
        },
    )
    assert put.status_code == 201, put.text
    assert put.headers["X-OC-MTime"] == "accepted"
    assert put.headers["ETag"] == put.headers["OC-ETag"]
    file_id = put.headers["OC-FileId"]

    listed = listing(s, base + "/")
    entry = listed["/remote.php/dav/files/alice/documents/notes.txt"]
    assert entry["getetag"] == put.headers["ETag"]  # no re-download on the next sync
    assert entry["id"] == file_id and entry["fileid"] == str(int(file_id[:8]))
    assert entry["getcontentlength"] == "17" and entry["permissions"] == "GWDNV"
    assert parsedate_to_datetime(entry["getlastmodified"]).timestamp() == 1700000000
    assert "checksums" not in entry  # never the client's checksum back
    after = listing(s, dav(gateway) + "/", "1")["/remote.php/dav/files/alice/documents/"]["getetag"]
    assert after != before  # the desktop descends only into changed folders

    moved = s.request(
        "MOVE",
        base + "/notes.txt",
        headers={"Destination": "/remote.php/dav/files/alice/documents/sub/ward%20notes.txt"},
    )
    assert moved.status_code == 201, moved.text
    assert moved.headers["OC-FileId"] == file_id
    assert moved.headers["OC-ETag"] == put.headers["ETag"]
    assert s.get(base + "/sub/ward notes.txt").content == b"ward round notes\n"
    # The WebDAV view of the same file: one tree.
    assert s.get(f"{gateway.url}/documents/sub/ward notes.txt").status_code == 200

    gateway.stop()
    # A new process: the number comes from the database, nothing of the first's memory.
    again = start_gateway(gateway.instance)
    try:
        s2 = again.session()
        entry = listing(s2, f"{again.url}/remote.php/dav/files/alice/documents/sub/")[
            "/remote.php/dav/files/alice/documents/sub/ward%20notes.txt"
        ]
        assert entry["id"] == file_id
        assert (
            s2.delete(
                f"{again.url}/remote.php/dav/files/alice/documents/sub/ward notes.txt"
            ).status_code
            == 204
        )
        # A new file at the old name never gets the number back.
        fresh = s2.put(
            f"{again.url}/remote.php/dav/files/alice/documents/sub/ward notes.txt", data=b"x"
        )
        assert fresh.headers["OC-FileId"] != file_id
    finally:
        again.stop()


def test_file_numbers_follow_moves_and_deletes_made_through_any_door(gateway: Gateway) -> None:
    s = gateway.session()
    apps, web = dav(gateway), gateway.url
    s.request("MKCOL", f"{web}/documents/a")
    s.put(f"{web}/documents/a/letter.txt", data=b"dear colleague\n")
    s.put(f"{apps}/Camera inbox/IMG_1.jpg", data=gps_jpeg())
    shown = listing(s, f"{apps}/documents/a/")
    letter = shown["/remote.php/dav/files/alice/documents/a/letter.txt"]["id"]
    folder = shown["/remote.php/dav/files/alice/documents/a/"]["id"]
    photo = listing(s, f"{apps}/Camera inbox/")[
        "/remote.php/dav/files/alice/Camera%20inbox/IMG_1.jpg"
    ]["id"]

    # A plain WebDAV rename of the file, then of its folder.
    renamed = s.request(
        "MOVE", f"{web}/documents/a/letter.txt", headers={"Destination": "/documents/a/l.txt"}
    )
    assert renamed.status_code == 201, renamed.text
    assert s.request("MOVE", f"{web}/documents/a", headers={"Destination": "/documents/b"}).ok
    shown = listing(s, f"{apps}/documents/b/")
    assert shown["/remote.php/dav/files/alice/documents/b/l.txt"]["id"] == letter
    assert shown["/remote.php/dav/files/alice/documents/b/"]["id"] == folder
    # A plain WebDAV DELETE retires the number: a new file at that name never gets it.
    assert s.delete(f"{web}/documents/b/l.txt").status_code == 204
    s.put(f"{web}/documents/b/l.txt", data=b"another letter\n")
    shown = listing(s, f"{apps}/documents/b/")
    assert shown["/remote.php/dav/files/alice/documents/b/l.txt"]["id"] != letter

    # Filing by plain WebDAV: a MOVE across shares, from the inbox into a patient folder.
    assert s.request("MKCOL", f"{web}/clinical/9434765919").status_code == 201
    filed = s.request(
        "MOVE",
        f"{web}/inbox/alice/IMG_1.jpg",
        headers={"Destination": f"{web}/clinical/9434765919/IMG_1.jpg"},
    )
    assert filed.status_code == 201, filed.text
    shown = listing(s, f"{apps}/clinical/9434765919/")
    assert shown["/remote.php/dav/files/alice/clinical/9434765919/IMG_1.jpg"]["id"] == photo
    assert "/remote.php/dav/files/alice/Camera%20inbox/IMG_1.jpg" not in listing(
        s, f"{apps}/Camera inbox/"
    )


def test_head_answers_existence_of_files_and_folders(gateway: Gateway) -> None:
    s = gateway.session()
    base = dav(gateway) + "/documents"
    s.put(base + "/here.txt", data=b"present")
    assert s.head(base + "/here.txt").status_code == 200
    assert s.head(base + "/absent.txt").status_code == 404
    assert s.head(base + "/").status_code == 200
    assert s.head(dav(gateway) + "/").status_code == 200


def test_legacy_chunks_are_refused_never_stored(gateway: Gateway) -> None:
    s = gateway.session()
    base = dav(gateway) + "/documents"
    by_name = s.put(base + "/big.bin-chunking-604089626-2-0", data=b"x" * 1000)
    assert by_name.status_code == 400
    assert by_name.headers["X-Clindav-Error"] == "legacy-chunking-refused"
    by_header = s.put(base + "/big.bin", data=b"x" * 1000, headers={"OC-Chunked": "1"})
    assert by_header.status_code == 400
    assert list(gateway.instance.share_dir("documents").iterdir()) == [] or all(
        p.name.startswith(".clindav-") for p in gateway.instance.share_dir("documents").iterdir()
    )


def test_a_scrubbed_upload_answers_an_etag_the_next_listing_replaces(gateway: Gateway) -> None:
    s = gateway.session()
    url = dav(gateway) + "/documents/photo.jpg"
    original = gps_jpeg()
    put = s.put(url, data=original, headers={"X-OC-Mtime": "1700000100"})
    assert put.status_code == 201, put.text
    stored = listing(s, url, "0")["/remote.php/dav/files/alice/documents/photo.jpg"]
    # Different ETags: the desktop fetches the scrubbed copy over the local original.
    assert put.headers["OC-ETag"] != stored["getetag"]
    scrubbed = s.get(url).content
    assert scrubbed != original and b"PhoneMaker" not in scrubbed
    assert piexif.load(scrubbed)["GPS"] == {}
    assert stored["getcontentlength"] == str(len(scrubbed))


def nextcloudcmd(
    gateway: Gateway, local: Path, secret: str, *, trust: bool = False
) -> subprocess.CompletedProcess[str]:
    """One sync of ``local`` with /documents; ``trust``: accept a certificate no CA signed
    (nextcloudcmd has no CA option and reads no SSL_CERT_FILE)."""
    tool = require_tool("nextcloudcmd")
    home = local.parent / "home"  # the client's own settings, not the user's
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [
            tool,
            "--non-interactive",
            *(["--trust"] if trust else []),
            "-u",
            "alice",
            "-p",
            secret,
            "--path",
            "/documents",
            str(local),
            gateway.url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)},
    )


def _reads(gateway: Gateway) -> list[str]:
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        rows = db.execute(
            "SELECT logical_path FROM audit_event WHERE action = 'GET' AND status = 200 ORDER BY seq"
        ).fetchall()
    return [row[0] for row in rows]


def test_nextcloudcmd_syncs_both_ways_and_converges_on_the_scrubbed_photo(
    gateway: Gateway, tmp_path: Path
) -> None:
    made = run_cli(
        "user", "app-password", "alice", "--device", "desktop", config=gateway.instance.config
    )
    secret = made.stdout.splitlines()[0].rsplit(" ", 1)[1]
    s = gateway.session()
    s.put(dav(gateway) + "/documents/from-server.txt", data=b"made on the server\n")
    local = tmp_path / "sync"
    local.mkdir()
    (local / "notes.txt").write_bytes(b"made on the desktop\n")
    original = gps_jpeg()
    (local / "photo.jpg").write_bytes(original)

    first = nextcloudcmd(gateway, local, secret)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (local / "from-server.txt").read_bytes() == b"made on the server\n"
    assert s.get(dav(gateway) + "/documents/notes.txt").content == b"made on the desktop\n"
    read_before = len(_reads(gateway))

    # Both sides change between the runs.
    (local / "notes.txt").write_bytes(b"changed on the desktop\n")
    s.put(dav(gateway) + "/documents/from-server.txt", data=b"changed on the server\n")
    second = nextcloudcmd(gateway, local, secret)
    assert second.returncode == 0, second.stdout + second.stderr
    fetched = _reads(gateway)[read_before:]  # before this test's own GETs
    assert s.get(dav(gateway) + "/documents/notes.txt").content == b"changed on the desktop\n"
    assert (local / "from-server.txt").read_bytes() == b"changed on the server\n"
    # The photo came back scrubbed: the desktop holds what the server holds.
    converged = (local / "photo.jpg").read_bytes()
    assert converged != original and piexif.load(converged)["GPS"] == {}
    assert sorted(fetched) == ["/from-server.txt", "/photo.jpg"], fetched
    assert not [p for p in local.iterdir() if "conflict" in p.name.lower()]

    read_before = len(_reads(gateway))
    third = nextcloudcmd(gateway, local, secret)
    assert third.returncode == 0, third.stdout + third.stderr
    assert _reads(gateway)[read_before:] == []  # nothing downloaded again


def _granted_app_password(gw: Gateway) -> str:
    """Login Flow v2 as the desktop wizard runs it; the poll must name the https server."""
    token, endpoint, login = start_flow(gw)
    browser = sign_in(gw)
    grant = browser.get(login)
    assert browser.post(login, data={"csrf_token": form_token(grant.text)}).ok
    creds = poll(gw, endpoint, token).json()
    assert creds["server"] == gw.url and gw.url.startswith("https://")
    return creds["appPassword"]


def test_nextcloudcmd_syncs_over_tls_with_the_instance_certificate(
    instance: Instance, tmp_path: Path
) -> None:
    """clindav serving https with the certificate `clindav init` made: the desktop
    client signs in by Login Flow v2, syncs up and down, and the files are stored
    encrypted; without accepting the certificate it does not talk at all."""
    gw = start_in_process(instance, tls=True)
    try:
        status = gw.session(user=None).get(gw.url + "/status.php")
        assert status.json()["installed"] is True
        assert status.headers["Strict-Transport-Security"].startswith("max-age=")
        secret = _granted_app_password(gw)
        gw.session().put(dav(gw) + "/documents/from-server.txt", data=b"made on the server\n")
        local = tmp_path / "sync"
        local.mkdir()
        (local / "notes.txt").write_bytes(b"made on the desktop over tls\n")

        untrusted = nextcloudcmd(gw, local, secret)
        assert untrusted.returncode != 0
        assert "self-signed" in untrusted.stdout + untrusted.stderr
        assert not (local / "from-server.txt").exists()

        synced = nextcloudcmd(gw, local, secret, trust=True)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert (local / "from-server.txt").read_bytes() == b"made on the server\n"
        uploaded = gw.session().get(dav(gw) + "/documents/notes.txt")
        assert uploaded.content == b"made on the desktop over tls\n"
        stored = [f for f in instance.share_dir("documents").rglob("*") if f.is_file()]
        stored = [f for f in stored if not f.name.startswith(".clindav-share")]
        assert len(stored) == 2
        for path in stored:
            data = path.read_bytes()
            assert data[:4] == b"CLDV" and b"made on the" not in data  # encrypted at rest
    finally:
        gw.stop()
