"""Images stream through the pipeline into their sealed form (issue 21).

With the default policy every stage of the ``clinical`` share takes a JPEG
as a stream: ``filetype`` checks its structure and ``scrub`` rewrites its
metadata head as the bytes pass, and the rest goes straight into the
sealer.  So a photo is never held whole, whatever its size (the default
``limits.max_upload_bytes`` of 128 MiB no longer decides it), refusals still
leave nothing behind, and the stored bytes are exactly what the whole-file
scrub makes of the same photo.

Memory is the gateway's peak RSS growth while the upload runs (VmHWM after
``clear_refs``, :class:`tests.integration.test_large_uploads.PeakRss`).
Bodies are sent from generators: the test never holds them whole either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import piexif
import pytest
from PIL import Image

from gateway.app import build_services
from gateway.auth.base import Principal
from gateway.dav.provider import StreamedBody, commit_object
from gateway.pipeline import HEAD_BYTES, PutContext, RequestInfo, new_request_id
from gateway.settings import load_settings
from gateway.storage.backing import split_path
from plugins.filetype import UndecodableImage
from plugins.formats import scrubber_for
from plugins.scrub.base import ScrubOptions
from tests.conftest import Gateway, Instance, ProcessGateway, start_gateway
from tests.integration.test_audit import events_by_request
from tests.integration.test_large_uploads import (
    AUTH,
    PeakRss,
    files_under,
    key_rows,
    temps,
)
from tests.integration.test_scrub_gateway import exiftool_read
from tests.scrub_corpus import dirty_file
from tests.scrub_corpus_bmff import heif_exif_first
from tests.scrub_corpus_images import photo, png_chunk

MiB = 1024 * 1024
PATIENT = "9434765919"
GPS_MARKER = b"STREAMED-GPS-MAKE-MARKER"
PIECE = 256 * 1024


def _exif() -> bytes:
    return piexif.dump(
        {
            "0th": {piexif.ImageIFD.Make: GPS_MARKER, piexif.ImageIFD.Orientation: 6},
            "Exif": {},
            "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((51, 1),) * 3},
            "1st": {},
            "thumbnail": None,
        }
    )


def _coding_head() -> tuple[bytes, bytes]:
    """(SOI .. end of the SOS header, EOI) of a small real baseline JPEG with an Exif."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 90)).save(out, "JPEG", exif=_exif())
    data = out.getvalue()
    sos = data.index(b"\xff\xda")
    end = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    return data[:end], b"\xff\xd9"


def big_jpeg(total: int, seed: int, *, cut: bool = False, append: bytes = b"") -> Iterator[bytes]:
    """A structurally valid JPEG of ``total`` bytes (before ``append``), in pieces: a real
    head with GPS in its Exif, then entropy-coded data (random bytes without 0xFF)."""
    head, eoi = _coding_head()
    rng = random.Random(seed)
    yield head
    left = total - len(head) - len(eoi)
    while left > 0:
        piece = rng.randbytes(min(PIECE, left)).replace(b"\xff", b"\x00")
        left -= len(piece)
        yield piece
    if not cut:
        yield eoi
    if append:
        yield append


def put(
    gateway: Gateway,
    path: str,
    body: Iterator[bytes],
    length: int,
    conn: http.client.HTTPConnection | None = None,
) -> http.client.HTTPResponse:
    conn = conn or http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=300)
    conn.putrequest("PUT", path)
    conn.putheader("Authorization", AUTH)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    for piece in body:
        conn.send(piece)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def logged_in(gateway: Gateway, folder: str) -> http.client.HTTPConnection:
    """A connection that has logged in (a PROPFIND of ``folder``): the serving process
    it reached (one of the workers) has the login cached, so what it does next on this
    connection is measured without scrypt's 32 MiB of a worker's first login."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=300)
    conn.request("PROPFIND", folder, headers={"Authorization": AUTH, "Depth": "0"})
    response = conn.getresponse()
    response.read()
    assert response.status == 207
    return conn


def _length(body: Iterator[bytes]) -> int:
    return sum(len(piece) for piece in body)


def make_patient_folder(gateway: Gateway) -> str:
    assert (
        gateway.session().request("MKCOL", f"{gateway.url}/clinical/{PATIENT}").status_code == 201
    )
    return f"/clinical/{PATIENT}"


@pytest.fixture
def patient_folder(gateway: Gateway) -> str:
    return make_patient_folder(gateway)


@pytest.fixture
def two_workers(instance: Instance) -> Iterator[ProcessGateway]:
    """``clindav serve`` with two serving processes, as on a 2-core machine by default."""
    data = instance.settings()
    data["server"]["workers"] = 2
    instance.write_settings(data)
    gateway = start_gateway(instance)
    yield gateway
    gateway.stop()


def test_a_100_mb_photo_streams_with_flat_memory(
    two_workers: ProcessGateway, instance: Instance
) -> None:
    """Under limits.max_upload_bytes (128 MiB), yet never held whole: each of three PUTs
    grows the serving processes (a gateway of its own, so that its memory is the
    gateway's) by under 16 MiB, whichever of the two workers takes it (the body's blocks, the
    sealer's chunk and a thread's malloc arena: about 5 MiB).  Each PUT's connection has
    logged in first: a worker's first login runs scrypt, 32 MiB, however small the body."""
    gateway = two_workers
    patient_folder = make_patient_folder(gateway)
    total = 100 * MiB
    s = gateway.session()
    warm = dirty_file("phone.jpg").data
    assert s.put(f"{gateway.url}{patient_folder}/warm.jpg", data=warm).status_code == 201
    growths = []
    for seed in (3, 2, 1):
        conn = logged_in(gateway, patient_folder)
        peak = PeakRss(gateway)
        r = put(gateway, f"{patient_folder}/big.jpg", big_jpeg(total, seed), total, conn)
        growths.append(peak.growth())
        assert r.status in (201, 204), r.read()
    assert r.getheader("ETag") is None  # the scrub changed the bytes
    assert max(growths) < 16 * 1024, f"PUTs grew RSS by {[g // 1024 for g in growths]} MiB"

    (_, code, _, details) = next(
        (e.status, e.code, e.reason, e.details)
        for e in events_by_request(instance)[r.getheader("X-Request-Id")]
    )
    assert code == "stored" and details["streamed"] is True and details["format"] == "jpeg"
    assert "gps:GPSLatitude" in details["removed"] and "ifd0:Make" in details["removed"]
    assert details["kept"] == ["jfif", "orientation"]

    # Read back: the coded data byte for byte, the GPS and the camera make gone.
    got, size = hashlib.sha256(), 0
    expected = hashlib.sha256()
    for piece in list(big_jpeg(total, 1))[1:]:
        expected.update(piece)
    with s.get(f"{gateway.url}{patient_folder}/big.jpg", stream=True) as response:
        assert response.status_code == 200
        first = True
        for piece in response.iter_content(PIECE):
            if first:
                head, first = piece, False
                sos = head.index(b"\xff\xda")
                head_end = sos + 2 + struct.unpack(">H", head[sos + 2 : sos + 4])[0]
                assert GPS_MARKER not in head[:head_end]
                piece = head[head_end:]
            got.update(piece)
            size += len(piece)
    assert got.hexdigest() == expected.hexdigest()


def test_a_streamed_photo_is_stored_as_the_whole_file_scrub_makes_it(
    gateway: Gateway, patient_folder: str
) -> None:
    dirty = dirty_file("phone.jpg").data
    photo = _large_phone_photo()
    assert len(photo) > 256 * 1024  # well past the head: streamed
    url = f"{gateway.url}{patient_folder}/photo.jpg"
    s = gateway.session()
    r = s.put(url, data=photo)
    assert r.status_code == 201, r.text
    stored = s.get(url).content
    assert stored == scrubber_for("jpeg").clean(photo, ScrubOptions()).data
    # Already clean: stored unchanged, so the answer carries the ETag.
    again = s.put(url, data=stored)
    assert again.status_code == 204 and again.headers.get("ETag"), again.headers
    assert s.get(url).content == stored
    assert len(dirty) < 64 * 1024  # the small corpus photo is held whole: the same result
    small = s.put(f"{gateway.url}{patient_folder}/small.jpg", data=dirty)
    assert small.status_code == 201
    assert s.get(f"{gateway.url}{patient_folder}/small.jpg").content == (
        scrubber_for("jpeg").clean(dirty, ScrubOptions()).data
    )


def _large_phone_photo() -> bytes:
    from tests.scrub_corpus_images import phone_jpeg

    return phone_jpeg(1600, 1200, quality=95)


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("index.html", "<script>alert(1)</script>")
    return out.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("cut", 422, "undecodable-image"),
        ("zip-appended", 415, "polyglot-refused"),
    ],
)
def test_a_streamed_photo_refused_at_its_end_leaves_nothing(
    gateway: Gateway, instance: Instance, patient_folder: str, case: str, status: int, code: str
) -> None:
    """The refusal comes only once the end is seen; the sealed temp file and its key go."""
    total = 8 * MiB

    def body() -> Iterator[bytes]:
        return big_jpeg(total, 2, cut=case == "cut", append=_zip() if case != "cut" else b"")

    keys_before = key_rows(instance)
    before = sorted(files_under(instance.share_dir("clinical")))
    r = put(gateway, f"{patient_folder}/refused.jpg", body(), _length(body()))
    assert (r.status, r.getheader("X-Clindav-Error")) == (status, code)
    assert temps(instance, "clinical") == []
    assert sorted(files_under(instance.share_dir("clinical"))) == before
    assert key_rows(instance) == keys_before
    s = gateway.session()
    assert s.get(f"{gateway.url}{patient_folder}/refused.jpg").status_code == 404
    (event,) = events_by_request(instance)[r.getheader("X-Request-Id")]
    assert (event.status, event.code) == (status, code)


def test_chunks_poured_into_a_streamed_body_are_stored_as_a_put_stores_them(
    gateway: Gateway, instance: Instance, patient_folder: str
) -> None:
    """``StreamedBody`` is the way into the streamed path for a door that has an upload in
    chunks (assembled chunked uploads): the pipeline judges its head, the chunks pour
    through the filters into the sealer, ``commit_object`` stores it, atomically."""
    services = build_services(load_settings(instance.config), sweep_temp_files=False)
    share = services.shares["clinical"]
    photo = _large_phone_photo()
    path = f"/{PATIENT}/poured.jpg"
    alice = Principal("alice", frozenset({"clinicians"}))
    ctx = PutContext(
        request=RequestInfo(new_request_id(), alice, "127.0.0.1", "test", "PUT"),
        share="clinical",
        path=path,
        body=photo[:HEAD_BYTES],
        content_type="image/jpeg",
        streamed_size=len(photo),
    )
    target = share.store.locate(split_path(path))
    body = StreamedBody.open(
        services.policy.pipeline("clinical"), ctx, share.content, target.parent
    )
    sealed = body.pour(photo[i : i + 5000] for i in range(0, len(photo), 5000))
    commit_object(services, share, ctx, target, audit=None, sealed=sealed)
    stored = gateway.session().get(f"{gateway.url}{patient_folder}/poured.jpg")
    assert stored.status_code == 200
    assert stored.content == scrubber_for("jpeg").clean(photo, ScrubOptions()).data
    assert ctx.details["streamed"] is True and "gps:GPSLatitude" in ctx.details["removed"]

    # A refused upload (cut short) leaves no temp file and nothing committed.
    cut = photo[: len(photo) // 2]
    ctx = dataclasses.replace(ctx, path=f"/{PATIENT}/cut.jpg", details={}, filters=[])
    body = StreamedBody.open(
        services.policy.pipeline("clinical"), ctx, share.content, target.parent
    )
    with pytest.raises(UndecodableImage):
        body.pour(cut[i : i + 5000] for i in range(0, len(cut), 5000))
    assert temps(instance, "clinical") == []


def _png_with_text(image: Image.Image, text: bytes) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    data = out.getvalue()
    return data[:33] + png_chunk(b"tEXt", b"Comment\x00" + text) + data[33:]


def test_a_streamed_png_is_stored_as_the_whole_file_scrub_makes_it(
    gateway: Gateway, patient_folder: str
) -> None:
    png = _png_with_text(photo(640, 480), b"STREAMED-PNG-MARKER")
    assert len(png) > 256 * 1024
    url = f"{gateway.url}{patient_folder}/scan.png"
    s = gateway.session()
    r = s.put(url, data=png)
    assert r.status_code == 201, r.text
    stored = s.get(url).content
    assert b"STREAMED-PNG-MARKER" not in stored
    assert stored == scrubber_for("png").clean(png, ScrubOptions()).data
    (event,) = events_by_request(gateway.instance)[r.headers["X-Request-Id"]]
    assert event.details["streamed"] is True and event.details["removed"]["tEXt"] == 1


def test_a_streamed_png_over_the_pixel_limit_is_refused_from_its_header(
    gateway: Gateway, instance: Instance, patient_folder: str
) -> None:
    """20000 x 20000 declared in IHDR, padded past the head so that it streams: refused
    422 from the header (nothing decoded), once the body is read; nothing stored."""
    width = height = 20_000
    rows = zlib.compress(bytes(height * (width // 8 + 1)), 9)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + png_chunk(b"tEXt", b"Comment\x00" + b"x" * (128 * 1024))
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )
    keys_before = key_rows(instance)
    r = gateway.session().put(f"{gateway.url}{patient_folder}/bomb.png", data=bomb)
    assert (r.status_code, r.headers.get("X-Clindav-Error")) == (422, "undecodable-image")
    assert "max_pixels" in (events_by_request(instance)[r.headers["X-Request-Id"]][0].reason or "")
    assert temps(instance, "clinical") == [] and key_rows(instance) == keys_before


def test_a_100_mb_heic_streams_with_flat_memory(
    process_gateway: ProcessGateway, instance: Instance, tmp_path: Path
) -> None:
    """An iPhone's layout (ftyp, meta, then the mdat with its Exif item first): the head is
    held until the Exif item is in, the rest passes; the date kept, the GPS gone."""
    gateway = process_gateway
    patient_folder = make_patient_folder(gateway)
    heic = heif_exif_first(100 * MiB)
    s = gateway.session()
    warm = dirty_file("hand-built.heic").data
    assert s.put(f"{gateway.url}{patient_folder}/warm.heic", data=warm).status_code == 201
    peak = PeakRss(gateway)
    view = memoryview(heic)
    pieces = (bytes(view[i : i + PIECE]) for i in range(0, len(heic), PIECE))
    r = put(gateway, f"{patient_folder}/big.heic", pieces, len(heic))
    growth = peak.growth()
    assert r.status == 201, r.read()
    assert growth < 32 * 1024, f"PUT grew RSS by {growth // 1024} MiB"
    details = next(e.details for e in events_by_request(instance)[r.getheader("X-Request-Id")])
    assert details["streamed"] is True and details["format"] == "heif"
    assert "gps:GPSLatitude" in details["removed"] and "DateTimeOriginal" in details["kept"]

    stored = s.get(f"{gateway.url}{patient_folder}/big.heic").content
    assert stored == scrubber_for("heif").clean(heic, ScrubOptions()).data
    del heic, view
    tags = exiftool_read({"big.heic": stored}, tmp_path)["big.heic"]
    assert "DateTimeOriginal" in " ".join(tags) and not any("GPS" in t for t in tags), tags
