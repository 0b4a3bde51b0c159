"""Test content: a phone-like JPEG with GPS EXIF, small documents, large bodies."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import piexif
from PIL import Image, ImageChops

PHOTO_SIZE = (3000, 2000)
QUICK_PHOTO_SIZE = (600, 400)
PHOTO_TARGET_BYTES = 4 * 1024 * 1024
_PIECE = 1024 * 1024


def phone_jpeg(size: tuple[int, int] = PHOTO_SIZE, target: int = PHOTO_TARGET_BYTES) -> bytes:
    """A JPEG shaped like a phone photo: gradient plus sensor-like noise, quality 92,
    EXIF with Make/Model, capture date, GPS position and a thumbnail.

    The noise level is adjusted (a few tries) until the file is within 4 % of
    ``target`` bytes; for small sizes (quick mode) the first try is kept.
    """
    exif = _phone_exif(size)
    sigma = 31.0
    data = _encode(size, sigma, exif)
    for _ in range(4):
        if target <= 0 or abs(len(data) - target) <= 0.04 * target or size != PHOTO_SIZE:
            break
        sigma *= (target / len(data)) ** 1.8
        data = _encode(size, sigma, exif)
    return data


def _noisy_image(size: tuple[int, int], sigma: float) -> Image.Image:
    horizontal = Image.linear_gradient("L").resize(size)
    radial = Image.radial_gradient("L").resize(size)
    bases = (horizontal, radial, horizontal.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    channels = [
        ImageChops.add(base, Image.effect_noise(size, sigma), scale=1.0, offset=-128)
        for base in bases
    ]
    return Image.merge("RGB", channels)


def _encode(size: tuple[int, int], sigma: float, exif: bytes) -> bytes:
    out = io.BytesIO()
    _noisy_image(size, sigma).save(out, "JPEG", quality=92, exif=exif)
    return out.getvalue()


def _thumbnail(size: tuple[int, int]) -> bytes:
    thumb = _noisy_image((max(8, size[0] // 12), max(8, size[1] // 12)), 20.0)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=80)
    return out.getvalue()


def _phone_exif(size: tuple[int, int]) -> bytes:
    """EXIF as a phone writes it, including what the gateway must strip (GPS, serials)."""
    zeroth = {
        piexif.ImageIFD.Make: b"Google",
        piexif.ImageIFD.Model: b"Pixel 7",
        piexif.ImageIFD.Software: b"HDR+ 1.0.540104767zd",
        piexif.ImageIFD.DateTime: b"2024:03:14 10:21:07",
        piexif.ImageIFD.Orientation: 1,
        piexif.ImageIFD.XResolution: (72, 1),
        piexif.ImageIFD.YResolution: (72, 1),
        piexif.ImageIFD.ResolutionUnit: 2,
    }
    exif_ifd = {
        piexif.ExifIFD.DateTimeOriginal: b"2024:03:14 10:21:07",
        piexif.ExifIFD.DateTimeDigitized: b"2024:03:14 10:21:07",
        piexif.ExifIFD.PixelXDimension: size[0],
        piexif.ExifIFD.PixelYDimension: size[1],
        piexif.ExifIFD.LensModel: b"Pixel 7 back camera 6.81mm f/1.85",
        piexif.ExifIFD.BodySerialNumber: b"28111FDH2001KX",
        piexif.ExifIFD.ExposureTime: (1, 120),
        piexif.ExifIFD.FNumber: (185, 100),
        piexif.ExifIFD.ISOSpeedRatings: 52,
    }
    gps = {
        piexif.GPSIFD.GPSVersionID: (2, 2, 0, 0),
        piexif.GPSIFD.GPSLatitudeRef: b"N",
        piexif.GPSIFD.GPSLatitude: ((52, 1), (31, 1), (1234, 100)),
        piexif.GPSIFD.GPSLongitudeRef: b"E",
        piexif.GPSIFD.GPSLongitude: ((13, 1), (24, 1), (3821, 100)),
        piexif.GPSIFD.GPSAltitudeRef: 0,
        piexif.GPSIFD.GPSAltitude: (3412, 100),
        piexif.GPSIFD.GPSTimeStamp: ((9, 1), (21, 1), (7, 1)),
        piexif.GPSIFD.GPSDateStamp: b"2024:03:14",
    }
    first = {
        piexif.ImageIFD.Compression: 6,
        piexif.ImageIFD.XResolution: (72, 1),
        piexif.ImageIFD.YResolution: (72, 1),
        piexif.ImageIFD.ResolutionUnit: 2,
    }
    return piexif.dump(
        {"0th": zeroth, "Exif": exif_ifd, "GPS": gps, "1st": first, "thumbnail": _thumbnail(size)}
    )


def small_document(index: int, size: int = 2048) -> bytes:
    """A small text document (a listing entry); distinct content per index."""
    line = f"clindav benchmark document {index:05d}\n".encode()
    return (line * (size // len(line) + 1))[:size]


def random_piece() -> bytes:
    """1 MiB of random bytes, repeated to make large bodies without holding them."""
    return os.urandom(_PIECE)


def jpeg_pieces(total: int) -> Iterator[bytes]:
    """A structurally complete JPEG of ``total`` bytes, in 1 MiB pieces: a small real
    photo's head (with its GPS EXIF) and coding tables, then entropy-coded data (random
    bytes without 0xFF) up to EOI.  Never decodable to anything sensible, and never
    decoded: the filetype stage checks structure, the scrub rewrites the head."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 90)).save(out, "JPEG", exif=_phone_exif(QUICK_PHOTO_SIZE))
    small = out.getvalue()
    sos = small.rindex(b"\xff\xda")  # the photo's own scan, not its EXIF thumbnail's
    head = small[: sos + 2 + int.from_bytes(small[sos + 2 : sos + 4], "big")]
    filler = os.urandom(_PIECE).replace(b"\xff", b"\x00")
    yield head
    left = total - len(head) - 2
    while left > 0:
        yield filler[: min(left, _PIECE)]
        left -= _PIECE
    yield b"\xff\xd9"


def body_pieces(total: int, piece: bytes) -> Iterator[memoryview]:
    """``total`` bytes as successive views of ``piece`` (nothing large is allocated)."""
    view = memoryview(piece)
    sent = 0
    while sent < total:
        n = min(len(view), total - sent)
        yield view[:n]
        sent += n
