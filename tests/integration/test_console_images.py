"""The console's thumbnails and pictures: from the decrypted, scrubbed image, in memory.

Each is a read of the stored file as WebDAV's GET is (the same bytes, the
same refusals, an audited ``GET``), sent with ``no-store``, made without a
file on disk; HEIC is converted; decoding stays within the decode budget;
a missing key file is a 503, not a broken picture.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pillow_heif
from PIL import Image

from tests.conftest import Gateway, Instance, start_in_process
from tests.integration.test_consent import consent
from tests.integration.test_console_http import form_token, sign_in
from tests.scrub_corpus_images import phone_jpeg

PATIENT = "9434765919"


def heic(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (width, height), (30, 140, 200))).save(out, quality=70)
    return out.getvalue()


def transparent_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (255, 0, 0, 0)).save(out, "PNG")
    return out.getvalue()


def stored(gateway: Gateway, files: dict[str, bytes], *scopes: str) -> dict[str, str]:
    """Consent, then each file PUT into the patient's folder; name -> file id."""
    consent(gateway.instance, "--scope", "record", *scopes)
    dav = gateway.session("alice")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert dav.request("MKCOL", folder).status_code == 201
    for name, body in files.items():
        assert dav.put(f"{folder}/{name}", data=body).status_code == 201
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        return dict(
            (path.rsplit("/", 1)[1], file_id)
            for path, file_id in db.execute("SELECT logical_path, file_id FROM stored_object")
        )


def files_under(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith("clindav.db")
    }


def test_thumbnails_and_pictures_are_made_in_memory(gateway: Gateway) -> None:
    ids = stored(
        gateway,
        {
            "phone.jpg": phone_jpeg(1600, 1200),
            "photo.heic": heic(),
            "clear.png": transparent_png(400, 300),
        },
    )
    on_disk = files_under(gateway.instance.folder)
    s = sign_in(gateway)
    dav = gateway.session("alice")
    for name, size in (
        ("phone.jpg", (240, 320)),  # its EXIF orientation: turned a quarter
        ("photo.heic", (320, 240)),
        ("clear.png", (320, 240)),
    ):
        r = s.get(f"{gateway.url}/app/images/{ids[name]}/thumbnail")
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
        with Image.open(io.BytesIO(r.content)) as thumb:
            assert thumb.format == "JPEG" and thumb.size == size
            if name == "clear.png":
                assert thumb.getpixel((5, 5)) == (255, 255, 255)  # transparency on white
    # Full size: a JPEG exactly as stored (scrubbed: what WebDAV's GET gives), HEIC converted.
    full = s.get(f"{gateway.url}/app/images/{ids['phone.jpg']}/full")
    assert (
        full.headers["Content-Type"] == "image/jpeg" and full.headers["Cache-Control"] == "no-store"
    )
    assert full.content == dav.get(f"{gateway.url}/clinical/{PATIENT}/phone.jpg").content
    converted = s.get(f"{gateway.url}/app/images/{ids['photo.heic']}/full")
    assert converted.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(converted.content)) as picture:
        assert picture.format == "JPEG" and picture.size == (640, 480)
    assert files_under(gateway.instance.folder) == on_disk  # nothing written
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        reads = db.execute(
            "SELECT share, logical_path, patient_id, json_extract(details, '$.view') "
            "FROM audit_event WHERE action = 'GET' AND actor = 'alice' AND status = 200 "
            "AND json_extract(details, '$.console')"
        ).fetchall()
    assert ("clinical", f"/{PATIENT}/phone.jpg", PATIENT, "thumbnail") in reads
    assert ("clinical", f"/{PATIENT}/photo.heic", PATIENT, "full") in reads
    assert len(reads) == 5


def test_a_picture_over_the_decode_budget_is_refused(instance: Instance) -> None:
    gw = start_in_process(instance)
    try:
        ids = stored(gw, {"big.png": transparent_png(3000, 2000)})  # 24 MB of pixels
    finally:
        gw.stop()
    data = instance.settings()
    data.setdefault("limits", {})["decode_memory"] = 16 * 1024 * 1024
    instance.write_settings(data)
    gw = start_in_process(instance)
    try:
        s = sign_in(gw)
        r = s.get(f"{gw.url}/app/images/{ids['big.png']}/thumbnail")
        assert r.status_code == 413
        assert r.headers["X-Clindav-Error"] == "image-too-large-to-decode"
        assert r.headers["Cache-Control"] == "no-store"
    finally:
        gw.stop()


def test_without_the_key_file_pictures_show_and_copies_are_refused(gateway: Gateway) -> None:
    """As on WebDAV: reads go on with the keys loaded, writes need the key file (503)."""
    ids = stored(gateway, {"a.jpg": phone_jpeg()}, "--scope", "share")
    s = sign_in(gateway)
    page = s.get(f"{gateway.url}/app/images/{ids['a.jpg']}")
    copy = {"csrf_token": form_token(page.text), "share": "referrals", "name": "case-1.jpg"}
    from gateway.settings import load_settings

    settings = load_settings(gateway.instance.config)
    assert settings.keys.file is not None
    key_file = settings.resolve(settings.keys.file)
    aside = key_file.with_name("moved-away")
    key_file.rename(aside)
    try:
        assert s.get(f"{gateway.url}/app/images/{ids['a.jpg']}/thumbnail").status_code == 200
        r = s.post(f"{gateway.url}/app/images/{ids['a.jpg']}/copy", data=copy)
        assert r.status_code == 503, r.text
        assert r.headers["X-Clindav-Error"] == "key-file-unavailable"
        assert "request id" in r.text
    finally:
        aside.rename(key_file)
    dav = gateway.session("alice")
    assert dav.get(f"{gateway.url}/referrals/case-1.jpg").status_code == 404  # nothing stored
    r = s.post(f"{gateway.url}/app/images/{ids['a.jpg']}/copy", data=copy, allow_redirects=False)
    assert r.status_code == 303
    assert dav.get(f"{gateway.url}/referrals/case-1.jpg").status_code == 200
