"""The camera inbox: phone photos land held and scrubbed, and are filed by a MOVE.

An instance as ``clindav init`` makes it: its ``inbox`` share (the ``hold``
stage) is ``nextcloud.inbox_share``, with no editing (docs/NEXTCLOUD-APPS.md).  A chunked HEIC from the Android app goes into ``Camera
inbox``; it is held (private to its uploader and admins), scrubbed and
encrypted; filing it into a patient folder meets the consent checks of a PUT
there; its window ending purges it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    Gateway,
    InstanceClock,
    make_instance,
    run_cli,
    start_in_process,
)
from tests.integration.test_nextcloud_files import gps_jpeg, listing
from tests.scrub_corpus_bmff import heif_from_pillow_heif, heif_from_pillow_heif_markers

PATIENT = "9434765919"
INBOX = "/remote.php/dav/files/alice/Camera%20inbox/"


@pytest.fixture
def inbox_gateway(tmp_path: Path, clock: InstanceClock) -> Iterator[Gateway]:
    inst = make_instance(tmp_path)  # `clindav init`'s instance: its inbox needs no editing
    settings = inst.settings()
    settings["trash"] = {"sweep_interval": 1, "max_clock_jump": "30d"}
    inst.write_settings(settings)
    gw = start_in_process(inst)
    yield gw
    gw.stop()


def chunked_upload(gw: Gateway, data: bytes, destination: str) -> dict[str, str]:
    s = gw.session()
    folder = f"{gw.url}/remote.php/dav/uploads/alice/{hashlib.md5(data).hexdigest()}"
    headers = {"Destination": gw.url + destination}
    assert s.request("MKCOL", folder, headers=headers).status_code == 201
    half = len(data) // 2
    for number, piece in ((1, data[:half]), (2, data[half:])):
        assert s.put(f"{folder}/{number:06d}", data=piece, headers=headers).status_code == 201
    final = s.request(
        "MOVE",
        folder + "/.file",
        headers={**headers, "OC-Total-Length": str(len(data)), "Overwrite": "T"},
    )
    assert final.status_code == 201, final.text
    return dict(final.headers)


def held_rows(gw: Gateway) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(gw.instance.folder / "clindav.db") as db:
        return db.execute(
            "SELECT share, logical_path, held_until FROM stored_object ORDER BY id"
        ).fetchall()


def test_phone_photo_lands_held_scrubbed_and_private(inbox_gateway: Gateway) -> None:
    gw = inbox_gateway
    s = gw.session()
    root = listing(s, f"{gw.url}/remote.php/dav/files/alice/")
    assert "/remote.php/dav/files/alice/Camera%20inbox/" in root
    assert "/remote.php/dav/files/alice/inbox/" not in root  # the share itself is not shown
    assert "CK" in root["/remote.php/dav/files/alice/Camera%20inbox/"]["permissions"]

    heic = heif_from_pillow_heif()
    answer = chunked_upload(gw, heic, INBOX.replace("%20", " ") + "IMG_0042.heic")
    assert answer["X-Clindav-Held-Until"]
    [(share, path, held_until)] = held_rows(gw)
    assert (share, path) == ("inbox", "/alice/IMG_0042.heic") and held_until
    body = s.get(f"{gw.url}{INBOX}IMG_0042.heic").content
    assert [m for m in heif_from_pillow_heif_markers() if m.encode() in body] == []
    for stored in (gw.instance.folder / "shares" / "inbox").rglob("*"):
        if stored.is_file():
            assert stored.read_bytes()[:4] == b"CLDV"  # encrypted at rest

    # Ivy (another clinician) sees neither alice's inbox nor the photo.
    ivy = gw.session("ivy")
    assert ivy.get(f"{gw.url}/inbox/alice/IMG_0042.heic").status_code == 404
    ivy_root = listing(ivy, f"{gw.url}/remote.php/dav/files/ivy/Camera%20inbox/")
    assert list(ivy_root) == ["/remote.php/dav/files/ivy/Camera%20inbox/"]
    # An admin does.
    assert gw.session("root-admin").get(f"{gw.url}/inbox/alice/IMG_0042.heic").status_code == 200
    # Nobody drops into someone else's inbox, even by its WebDAV path.
    dropped = ivy.put(f"{gw.url}/inbox/alice/x.jpg", data=gps_jpeg())
    assert dropped.status_code == 403 and dropped.headers["X-Clindav-Error"] == "inbox-not-yours"


def test_filing_meets_the_consent_checks_of_a_put_there(inbox_gateway: Gateway) -> None:
    gw = inbox_gateway
    s = gw.session()
    chunked_upload(gw, heif_from_pillow_heif(), INBOX.replace("%20", " ") + "rash.heic")
    assert (
        s.request("MKCOL", f"{gw.url}/remote.php/dav/files/alice/clinical/{PATIENT}").status_code
        == 201
    )
    destination = f"/remote.php/dav/files/alice/clinical/{PATIENT}/rash.heic"
    # No consent recorded: the clinical share holds it there too (missing: hold).
    run_cli(
        "consent", "add", "--patient", PATIENT, "--scope", "record", "--given-by", "patient",
        "--method", "verbal", "--recorded-by", "dr-jones", config=gw.instance.config,
    )  # fmt: skip
    filed = s.request("MOVE", f"{gw.url}{INBOX}rash.heic", headers={"Destination": destination})
    assert filed.status_code == 201, filed.text
    assert "OC-FileId" in filed.headers
    rows = [r for r in held_rows(gw) if r[0] == "clinical"]
    assert rows == [("clinical", f"/{PATIENT}/rash.heic", None)]  # consent attached: not held
    assert s.head(f"{gw.url}{INBOX}rash.heic").status_code == 404
    # Filing into a folder that names no valid patient is refused, nothing moves.
    chunked_upload(gw, heif_from_pillow_heif(), INBOX.replace("%20", " ") + "other.heic")
    s.request("MKCOL", f"{gw.url}/remote.php/dav/files/alice/clinical/not-a-patient")
    refused = s.request(
        "MOVE",
        f"{gw.url}{INBOX}other.heic",
        headers={"Destination": "/remote.php/dav/files/alice/clinical/not-a-patient/other.heic"},
    )
    assert refused.status_code in (400, 403, 409, 422), refused.text
    assert s.head(f"{gw.url}{INBOX}other.heic").status_code == 200


def test_an_unfiled_photo_is_purged_when_its_hold_ends(
    inbox_gateway: Gateway, clock: InstanceClock
) -> None:
    gw = inbox_gateway
    s = gw.session()
    chunked_upload(gw, heif_from_pillow_heif(), INBOX.replace("%20", " ") + "forgotten.heic")
    clock.advance("6d")
    time.sleep(2.5)
    assert s.head(f"{gw.url}{INBOX}forgotten.heic").status_code == 200  # within its window
    clock.advance("8d")
    deadline = time.monotonic() + 20
    while s.head(f"{gw.url}{INBOX}forgotten.heic").status_code != 404:
        assert time.monotonic() < deadline, "not purged"
        time.sleep(0.5)
    with sqlite3.connect(gw.instance.folder / "clindav.db") as db:
        purged = db.execute(
            "SELECT share, logical_path FROM audit_event WHERE reason LIKE '%hold window%'"
        ).fetchall()
    assert ("inbox", "/alice/forgotten.heic") in purged
