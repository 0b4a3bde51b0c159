"""Issue 4 acceptance 1 and 2 through the real gateway: scrubbed on the way in,
malformed input refused, every outcome audited.

One ``clindav serve`` (SQLite) runs for the whole module; every test gets its
own patient folder (a fresh valid NHS number) in the ``clinical`` share.

Acceptance 1: every file of the generated dirty corpus (:mod:`tests.scrub_corpus`)
is PUT, read back with GET and checked by (a) a raw byte search for every
planted marker (ASCII, UTF-16LE, UTF-16BE), (b) an independent reader,
``exiftool -a -G1 -ee -j -b``, against the allowlist of
``tests/unit/scrub/test_scrub_exiftool.py``, (c) for JPEG: identical decoded
pixels, orientation, ICC profile and capture date (dropped in ``teaching``).
The PUT's audit event names what was removed; no marker ever reaches the
audit table or the gateway log.  A PUT whose bytes the pipeline changed
answers without an ETag; the listing then shows the stored file's ETag.

Acceptance 2, observed against the default policy (status, X-Clindav-Error);
"expected" differs only where noted:

=====================================  ======  =======================  ===========================
input (share, name)                    status  code                     note
=====================================  ======  =======================  ===========================
truncated JPEG, cut at 60%             422     undecodable-image        filetype's full decode
EXIF IFD0 offset outside the block     422     malformed-image          scrub (JPEG decodes fine)
EXIF IFD loop (next-IFD -> IFD0)       422     malformed-image          scrub
EXIF tag count 0x7FFFFFFF              422     malformed-image          scrub
EXIF IFD entry count 0xFFFF            422     malformed-image          scrub
PNG with a bad IHDR CRC                422     undecodable-image        Pillow refuses to identify
PNG bomb, declares 20000x20000         422     undecodable-image        Pillow's bomb error (400M px)
JPEG + appended ZIP                    415     polyglot-refused
JPEG + fake MPF index + ZIP            201     (stored, ZIP stripped)   expected 415: GATEWAY BUG
HTML named .jpg (clinical)             415     file-type-not-allowed    brief said extension-mismatch;
                                                                        the allow list is checked first
HTML named .jpg (documents)            415     extension-mismatch       allow: any, so the name decides
SVG with <script> named .svg           415     file-type-not-allowed
JPEG named .png                        415     extension-mismatch
zero-byte .jpg (Explorer placeholder)  201     (stored as placeholder)  the real PUT then answers 204
=====================================  ======  =======================  ===========================

Dirty corpus files refused today (expected 201: acceptance 1 needs every
format through the gateway; a gateway bug or a policy conflict): ``dirty.png``, ``still.webp``, ``animated.webp``,
``animated.gif`` answer 415 ``polyglot-refused`` because the corpus plants
bytes after the image end and the scrub stage refuses any trailing data
unless the file has an MPF index (``plugins/scrub/stage.py``), which JPEG
alone can have.  ``test_refusal_log_line_carries_the_request_id`` fails too:
the ``clindav.audit`` refusal warning (``gateway/records/audit.py``) omits the
request id that docs/ERRORS.md promises on every log line of a request.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import piexif
import pytest
import requests
import sqlalchemy
from PIL import Image

from gateway.settings import load_settings
from plugins.scrub.icc import sanitize_profile
from tests.conftest import Gateway, Instance, make_instance, require_tool, start_gateway
from tests.integration.test_consent import written_consent
from tests.integration.test_pipeline import audit_rows
from tests.scrub_corpus import CAPTURE_DATE, MARKER_PREFIX, NAMES, ORIENTATION, dirty_file
from tests.scrub_corpus_images import _mpf, _segment, icc_profile, photo, png_chunk
from tests.unit.scrub.test_scrub_exiftool import _outside_allowlist

ORIENTATION_TAG = 0x0112
EXIF_IFD_TAG = 0x8769
DATE_TIME_ORIGINAL = 0x9003

# --------------------------------------------------------------------------- fixtures


def nhs_check_digit(nine: str) -> int | None:
    """The NHS number modulus-11 check digit of nine digits (None: no valid number)."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(nine))
    check = 11 - total % 11
    return {11: 0, 10: None}.get(check, check)


def _valid_nhs_numbers() -> Iterator[str]:
    yield from ("9434765919", "4010232137")
    for n in itertools.count(943476600):
        check = nhs_check_digit(str(n))
        if check is not None:
            yield f"{n}{check}"


_PATIENTS = _valid_nhs_numbers()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    instance = make_instance(tmp_path_factory.mktemp("scrub-gateway"))
    gateway = start_gateway(instance)
    yield gateway
    gateway.stop()


@pytest.fixture
def patient(gw: Gateway) -> str:
    """A new patient folder in the clinical share; returns its NHS number."""
    number = next(_PATIENTS)
    made = gw.session().request("MKCOL", f"{gw.url}/clinical/{number}")
    assert made.status_code == 201, diagnose(gw, made)
    return number


# --------------------------------------------------------------------------- helpers


def diagnose(gw: Gateway, response: requests.Response) -> str:
    """Request, response and the gateway's log lines for that request id."""
    request_id = response.headers.get("X-Request-Id", "")
    lines = [line for line in gw.log().splitlines() if request_id and request_id in line]
    request = response.request
    body = request.body if isinstance(request.body, bytes | str) else b""
    return (
        f"{request.method} {request.url} ({len(body)} bytes) -> "
        f"{response.status_code} {response.headers.get('X-Clindav-Error')} "
        f"id={request_id}\n{response.text[:400]}\n--- gateway log ---\n"
        + ("\n".join(lines) or gw.log()[-2000:])
    )


def encodings(text: str) -> list[bytes]:
    return [text.encode("ascii"), text.encode("utf-16-le"), text.encode("utf-16-be")]


def marker_hits(markers: tuple[str, ...] | list[str], data: bytes) -> list[str]:
    """Every marker (and the common prefix) found in ``data`` in any encoding."""
    hits = [m for m in markers if any(e in data for e in encodings(m))]
    if any(e in data for e in encodings(MARKER_PREFIX.decode())):
        hits.append(MARKER_PREFIX.decode() + "*")
    return hits


def exiftool_read(files: dict[str, bytes], directory: Path) -> dict[str, dict]:
    """``exiftool -a -G1 -ee -j -b`` over ``files`` (name -> bytes), keyed by name."""
    exiftool = require_tool("exiftool")
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    run = subprocess.run(
        [exiftool, "-a", "-G1", "-ee", "-j", "-b", *(str(directory / n) for n in files)],
        capture_output=True,
        check=False,
        timeout=60,
    )
    return {Path(entry["SourceFile"]).name: entry for entry in json.loads(run.stdout)}


def exif_values(tags: dict) -> bytes:
    """All of exiftool's values as bytes (binary ones base64-decoded) for a marker search."""
    parts = []
    for value in tags.values():
        text = value if isinstance(value, str) else json.dumps(value)
        if text.startswith("base64:"):
            parts.append(base64.b64decode(text[7:]))
        else:
            parts.append(text.encode("utf-8", "replace"))
    return b"\n".join(parts)


def propfind_etag(session: requests.Session, url: str) -> str | None:
    r = session.request("PROPFIND", url, headers={"Depth": "0"})
    assert r.status_code == 207, (r.status_code, r.text[:400])
    etag = ElementTree.fromstring(r.content).find(".//{DAV:}getetag")
    return None if etag is None else (etag.text or "")


def share_snapshot(instance: Instance, share: str) -> dict[str, int]:
    """Every entry under the share's backing folder (encrypted names) with its size."""
    root = instance.share_dir(share)
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*")}


def put_events(instance: Instance, logical_path: str) -> list:
    return [e for e in audit_rows(instance, "PUT") if e.logical_path == logical_path]


def audit_table_dump(instance: Instance) -> str:
    """repr of every row of the audit table, every column (whatever the model adds)."""
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return "\n".join(
                repr(tuple(row)) for row in conn.exec_driver_sql("SELECT * FROM audit_event")
            )
    finally:
        engine.dispose()


def assert_no_marker_leaked(gw: Gateway) -> None:
    dump = audit_table_dump(gw.instance)
    assert MARKER_PREFIX.decode() not in dump, "a planted value reached the audit table"
    assert MARKER_PREFIX.decode() not in gw.log(), "a planted value reached the gateway log"


def small_jpeg(exif: bytes | None = None, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    extra = {"exif": b"Exif\x00\x00" + exif} if exif else {}
    photo(*size).save(out, "JPEG", quality=85, **extra)
    return out.getvalue()


# --------------------------------------------------------------------------- acceptance 1

# Names of removed things that show the location went (the audit's "removed GPS").
# Video: ©xyz lives in moov/udta, ISO6709 in moov/meta, the GPS track is a "meta" trak.
LOCATION_NAMES = {"isobmff-video": ("moov/udta", "moov/meta", "trak:meta")}


@pytest.mark.parametrize("name", NAMES)
def test_corpus_file_is_stored_without_any_planted_metadata(
    gw: Gateway, patient: str, name: str, tmp_path: Path
) -> None:
    dirty = dirty_file(name)
    s = gw.session()
    url = f"{gw.url}/clinical/{patient}/{name}"
    put = s.put(url, data=dirty.data)
    assert put.status_code == 201, diagnose(gw, put)
    got = s.get(url)
    assert got.status_code == 200, diagnose(gw, got)
    stored = got.content
    assert stored != dirty.data

    # The bytes changed, so the PUT must not describe them with an ETag; the listing does.
    assert "ETag" not in put.headers, put.headers
    listed = propfind_etag(s, url)
    assert listed, "PROPFIND shows no getetag for the stored file"
    assert got.headers.get("ETag", "").strip('"') == listed.strip('"')

    # (a) raw bytes
    assert marker_hits(dirty.markers, stored) == []
    # (b) an independent reader: nothing outside the allowlist, no marker in any value
    read = exiftool_read({f"in-{name}": dirty.data, f"out-{name}": stored}, tmp_path)
    before, after = read[f"in-{name}"], read[f"out-{name}"]
    assert _outside_allowlist(dirty.format, before), "the allowlist check would be vacuous"
    assert _outside_allowlist(dirty.format, after) == [], after
    assert "ExifTool:Warning" not in after, after.get("ExifTool:Warning")
    assert marker_hits(dirty.markers, exif_values(after)) == []

    # The audit event says what went, by name and count.
    (event,) = put_events(gw.instance, f"/{patient}/{name}")
    assert (event.status, event.code) == (201, "stored")
    removed = event.details["removed"]
    assert removed and all(isinstance(k, str) and isinstance(v, int) for k, v in removed.items())
    if dirty.format in LOCATION_NAMES:
        assert set(LOCATION_NAMES[dirty.format]) <= set(removed), removed
    elif any(m.endswith("GPSAREA-1") for m in dirty.markers):  # an EXIF GPS IFD was planted
        assert any("GPS" in k for k in removed), removed
    assert_no_marker_leaked(gw)


@pytest.mark.parametrize(("share", "keeps_date"), [("clinical", True), ("teaching", False)])
def test_jpeg_is_lossless_and_keeps_orientation_icc_and_date_by_policy(
    gw: Gateway, share: str, keeps_date: bool
) -> None:
    dirty = dirty_file("phone.jpg")
    s = gw.session()
    number = next(_PATIENTS)
    assert s.request("MKCOL", f"{gw.url}/clinical/{number}").status_code == 201
    url = f"{gw.url}/clinical/{number}/phone.jpg"
    put = s.put(url, data=dirty.data)
    assert put.status_code == 201, diagnose(gw, put)
    if share == "teaching":
        # Teaching material arrives as a copy of a recorded image, with written consent.
        written_consent(gw.instance, "record", "teaching", form="forms/t-1.pdf", patient=number)
        teaching = f"{gw.url}/teaching/case-{number[-4:]}.jpg"
        copied = s.request("COPY", url, headers={"Destination": teaching})
        assert copied.status_code == 201, diagnose(gw, copied)
        url = teaching
    stored = s.get(url).content
    assert marker_hits(dirty.markers, stored) == []

    with Image.open(io.BytesIO(dirty.data)) as before, Image.open(io.BytesIO(stored)) as after:
        assert after.format == "JPEG"
        assert after.size == before.size and after.mode == before.mode
        assert after.tobytes() == before.tobytes(), "decoded pixels differ"
        assert before.info["icc_profile"] == icc_profile()
        # The colour data stay; the profile's texts are neutral (plugins/scrub/icc.py).
        assert after.info.get("icc_profile") == sanitize_profile(icc_profile()).data
        exif = after.getexif()
        assert exif[ORIENTATION_TAG] == before.getexif()[ORIENTATION_TAG] == ORIENTATION
        date = exif.get_ifd(EXIF_IFD_TAG).get(DATE_TIME_ORIGINAL)
    if keeps_date:
        assert date == CAPTURE_DATE
    else:
        assert date is None
        assert CAPTURE_DATE.encode() not in stored


def test_put_etag_only_when_the_stored_bytes_are_the_sent_bytes(gw: Gateway, patient: str) -> None:
    """CLIENTS.md "ETags and syncing clients": changed upload -> no ETag, on 201 and 204."""
    dirty = dirty_file("phone.jpg")
    s = gw.session()
    url = f"{gw.url}/clinical/{patient}/sync.jpg"
    first = s.put(url, data=dirty.data)
    assert first.status_code == 201 and "ETag" not in first.headers, diagnose(gw, first)
    again = s.put(url, data=dirty.data)
    assert again.status_code == 204 and "ETag" not in again.headers, diagnose(gw, again)
    clean = s.get(url).content
    unchanged = s.put(url, data=clean)  # already clean: the pipeline keeps the bytes
    assert unchanged.status_code == 204, diagnose(gw, unchanged)
    assert s.get(url).content == clean
    assert unchanged.headers.get("ETag"), unchanged.headers
    assert unchanged.headers["ETag"].strip('"') == (propfind_etag(s, url) or "").strip('"')


# --------------------------------------------------------------------------- acceptance 2


def _exif_block() -> tuple[bytes, str, int, int]:
    """A valid EXIF TIFF block; its byte order, IFD0 offset and IFD0 entry count."""
    blob = piexif.dump(
        {
            "0th": {piexif.ImageIFD.Make: "Camera", piexif.ImageIFD.Orientation: 6},
            "Exif": {piexif.ExifIFD.DateTimeOriginal: CAPTURE_DATE},
            "GPS": {},
            "1st": {},
            "thumbnail": None,
        }
    )[len(b"Exif\x00\x00") :]
    order = "<" if blob[:2] == b"II" else ">"
    (ifd0,) = struct.unpack(order + "I", blob[4:8])
    (entries,) = struct.unpack(order + "H", blob[ifd0 : ifd0 + 2])
    return blob, order, ifd0, entries


def _patched(blob: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(blob)
    out[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


def _bad_exif(kind: str) -> bytes:
    blob, order, ifd0, entries = _exif_block()
    if kind == "offset":  # IFD0 offset far outside the block
        return small_jpeg(_patched(blob, 4, order + "I", 0xFFFFFF00))
    if kind == "loop":  # IFD0's next-IFD pointer points back at IFD0
        return small_jpeg(_patched(blob, ifd0 + 2 + 12 * entries, order + "I", ifd0))
    if kind == "tag-count":  # first entry claims 2**31-1 values
        return small_jpeg(_patched(blob, ifd0 + 2 + 4, order + "I", 0x7FFFFFFF))
    if kind == "entry-count":  # IFD0 claims 65535 entries
        return small_jpeg(_patched(blob, ifd0, order + "H", 0xFFFF))
    raise AssertionError(kind)


def _truncated_jpeg() -> bytes:
    data = small_jpeg(_exif_block()[0], size=(320, 240))
    return data[: int(len(data) * 0.6)]


def _bad_crc_png() -> bytes:
    out = io.BytesIO()
    photo(32, 32).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[29] ^= 0xFF  # last byte of the IHDR CRC
    return bytes(data)


def _png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A complete 1-bit PNG of width x height zeros: 400M pixels in ~50 kB."""
    rows = height * (width // 8 + 1)  # a filter byte per row
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + png_chunk(b"IEND", b"")
    )


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("index.html", "<script>alert(document.cookie)</script>")
    return out.getvalue()


def _jpeg_zip_polyglot() -> bytes:
    return small_jpeg() + _zip()


def _jpeg_mpf_zip_polyglot() -> bytes:
    """A JPEG+ZIP polyglot with an APP2 MPF index that names no image at the ZIP."""
    jpeg = small_jpeg()
    mpf = _segment(0xE2, _mpf(len(jpeg) + len(_segment(0xE2, _mpf(0, 0, 0))), 0, 0))
    return jpeg[:2] + mpf + jpeg[2:] + _zip()


HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>\n"
SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(document.cookie)</script></svg>\n"
)

# case -> (share, file name, builder, status, code)
MALFORMED: dict[str, tuple[str, str, Callable[[], bytes], int, str]] = {
    "truncated-jpeg": ("clinical", "cut.jpg", _truncated_jpeg, 422, "undecodable-image"),
    "exif-ifd-offset": ("clinical", "ifd.jpg", lambda: _bad_exif("offset"), 422, "malformed-image"),
    "exif-ifd-loop": ("clinical", "loop.jpg", lambda: _bad_exif("loop"), 422, "malformed-image"),
    "exif-huge-tag-count": (
        "clinical", "count.jpg", lambda: _bad_exif("tag-count"), 422, "malformed-image",
    ),
    "exif-huge-entry-count": (
        "clinical", "entries.jpg", lambda: _bad_exif("entry-count"), 422, "malformed-image",
    ),
    "png-bad-crc": ("clinical", "crc.png", _bad_crc_png, 422, "undecodable-image"),
    "png-bomb": ("clinical", "bomb.png", _png_bomb, 422, "undecodable-image"),
    "jpeg-zip-polyglot": ("clinical", "poly.jpg", _jpeg_zip_polyglot, 415, "polyglot-refused"),
    # Expected per issue 4 ("data after the image's end that is not a known secondary
    # image"); today stored (201). See the module docstring.
    "jpeg-fake-mpf-zip-polyglot": (
        "clinical", "poly-mpf.jpg", _jpeg_mpf_zip_polyglot, 415, "polyglot-refused",
    ),
    # The clinical allow list is checked before the name, so the type refusal wins there.
    "html-named-jpg": ("clinical", "page.jpg", lambda: HTML, 415, "file-type-not-allowed"),
    "html-named-jpg-in-documents": (
        "documents", "page.jpg", lambda: HTML, 415, "extension-mismatch",
    ),
    "svg-with-script": ("clinical", "drawing.svg", lambda: SVG, 415, "file-type-not-allowed"),
    "jpeg-named-png": ("clinical", "photo.png", small_jpeg, 415, "extension-mismatch"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_refused_not_stored_and_audited(
    gw: Gateway, patient: str, case: str
) -> None:
    share, name, build, status, code = MALFORMED[case]
    data = build()
    folder = f"/{patient}" if share == "clinical" else f"/{case}-{patient}"
    if share != "clinical":
        assert gw.session().request("MKCOL", f"{gw.url}/{share}{folder}").status_code == 201
    logical = f"{folder}/{name}"
    url = f"{gw.url}/{share}{logical}"
    s = gw.session()
    before = share_snapshot(gw.instance, share)
    log_at = len(gw.log())

    put = s.put(url, data=data)
    observed = (put.status_code, put.headers.get("X-Clindav-Error"))
    assert observed == (status, code), diagnose(gw, put)
    assert "ETag" not in put.headers

    # Nothing stored: not readable, not listed, no new backing entry.
    assert s.get(url).status_code == 404
    listing = s.request("PROPFIND", f"{gw.url}/{share}{folder}/", headers={"Depth": "1"})
    assert listing.status_code == 207 and name.encode() not in listing.content
    assert share_snapshot(gw.instance, share) == before

    # A handled refusal, not a crash; the server is still up and stores a normal photo.
    logged = gw.log()[log_at:]
    assert " ERROR " not in logged and "Traceback" not in logged, logged
    assert gw.process.poll() is None, gw.log()[-3000:]
    ok = s.put(f"{gw.url}/{share}{folder}/after-{case}.jpg", data=small_jpeg())
    assert ok.status_code == 201, diagnose(gw, ok)

    # The refusal is audited once, with its code.
    events = put_events(gw.instance, logical)
    assert [(e.status, e.code) for e in events] == [(status, code)], events
    assert events[0].actor == "alice"


def test_the_builders_start_from_valid_files() -> None:
    """The malformed inputs are edits of files the gateway would take."""
    blob = _exif_block()[0]
    for data in (small_jpeg(blob), small_jpeg(blob, size=(320, 240))):
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.getexif()[ORIENTATION_TAG] == 6


def test_zero_byte_placeholder_is_accepted_then_replaced(gw: Gateway, patient: str) -> None:
    """Explorer PUTs 0 bytes first: accepted (not treated as an image), then replaced."""
    s = gw.session()
    logical = f"/{patient}/explorer.jpg"
    url = f"{gw.url}/clinical{logical}"
    placeholder = s.put(url, data=b"")
    assert placeholder.status_code == 201, diagnose(gw, placeholder)
    assert s.get(url).content == b""
    dirty = dirty_file("phone.jpg")
    real = s.put(url, data=dirty.data)
    assert real.status_code == 204, diagnose(gw, real)
    stored = s.get(url).content
    assert stored.startswith(b"\xff\xd8") and marker_hits(dirty.markers, stored) == []
    events = put_events(gw.instance, logical)
    assert [(e.status, e.code) for e in events] == [(201, "stored"), (204, "stored")]
    assert events[1].details["removed"]
    assert gw.process.poll() is None


def test_refusal_log_line_carries_the_request_id(gw: Gateway, patient: str) -> None:
    """docs/ERRORS.md: the X-Request-Id is on the gateway's log lines for that request,
    so an admin can go from a user's report (or the audit event) to the log."""
    s = gw.session()
    refused = s.put(f"{gw.url}/clinical/{patient}/loop.jpg", data=_bad_exif("loop"))
    assert refused.status_code == 422, diagnose(gw, refused)
    request_id = refused.headers["X-Request-Id"]
    (event,) = put_events(gw.instance, f"/{patient}/loop.jpg")
    assert event.request_id == request_id
    lines = [line for line in gw.log().splitlines() if "loop.jpg" in line and "PUT" in line]
    assert lines, gw.log()[-2000:]
    assert any(request_id in line for line in lines), lines
