"""Pictures for the console, made in memory from the decrypted, scrubbed image.

Nothing here touches the disk or is kept: the caller reads the plaintext
through the share's content codec (``open``, verified chunk by chunk), these
functions turn it into the bytes a browser shows, and the answer is sent
with ``Cache-Control: no-store``.

* :func:`thumbnail`: a JPEG of at most :data:`THUMBNAIL_SIDE` pixels a side,
  the right way up (EXIF orientation).  A JPEG is decoded at a fraction of
  its size (the decoder's DCT scaling), so a 12-megapixel photo costs a
  sixty-fourth of its pixels; what is left is the entropy decoding of the
  whole file (about 34 ms for a 4 MB photo on the bench machine).
* :func:`for_browser`: JPEG, PNG, GIF and WebP as stored; HEIC/HEIF and TIFF,
  which browsers do not show, converted to JPEG.

Every decode reserves its pixels in the process's decode budget first
(gateway/decoding.py, ``limits.decode_memory``), as the upload checks do,
and opens the image with the one decoder its bytes name.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageOps

from gateway import decoding
from gateway.errors import UnsupportedMediaType
from gateway.stages import picture_format

THUMBNAIL_SIDE = 320
_JPEG_QUALITY = 85
# What browsers show as they are.
_SHOWN = frozenset({"jpeg", "png", "gif", "webp"})


class NotAPicture(UnsupportedMediaType):
    code = "not-a-picture"
    message = "This file cannot be shown as a picture; download it instead."


def thumbnail(body: bytes) -> bytes:
    """A small JPEG of the picture in ``body``."""
    with _opened(body) as img:
        # JPEG only (others ignore it): decode straight at the smallest DCT scale (1/8 at
        # most) that still covers the thumbnail's own box; asking for a square box would
        # keep a 3:2 photo at 1/4, four times the pixels.
        img.draft("RGB", _box(img.size))
        # The decode and, while it is turned, its turned copy: never more than twice the
        # pixels.  Turned and shrunk in place: an upright photo (and every scrubbed HEIC,
        # which keeps no Exif) is never copied whole.
        with decoding.reserve(img.size, img.mode, copies=2, what="thumbnail"):
            ImageOps.exif_transpose(img, in_place=True)
            img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            return _jpeg(img)


def _box(size: tuple[int, int]) -> tuple[int, int]:
    """The size of the thumbnail of an image of ``size``: its long side THUMBNAIL_SIDE."""
    scale = min(1.0, THUMBNAIL_SIDE / max(size))
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def for_browser(body: bytes) -> tuple[bytes, str]:
    """(bytes, content type) a browser shows: as stored, or converted to JPEG."""
    fmt = picture_format(body)
    if fmt is None:
        raise NotAPicture("not an image the console can show")
    if fmt.name in _SHOWN:
        return body, fmt.mime_type
    with _opened(body) as img, decoding.reserve(img.size, img.mode, copies=3, what="picture"):
        return _jpeg(ImageOps.exif_transpose(img)), "image/jpeg"


@contextmanager
def _opened(body: bytes) -> Iterator[Image.Image]:
    fmt = picture_format(body)
    if fmt is None:
        raise NotAPicture("not an image the console can show")
    assert fmt.pillow is not None  # picture_format() says so
    try:
        with decoding.opened(body, fmt.pillow) as img:
            yield img
    except (OSError, ValueError, SyntaxError, EOFError, Warning) as exc:
        raise NotAPicture(f"{fmt.name}: {type(exc).__name__}: {exc}") from None


def _jpeg(img: Image.Image) -> bytes:
    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, "white")
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()
