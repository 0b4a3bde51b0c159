"""TIFF: a lossless re-encode of the pixels into a fresh file.

Decision: a TIFF's metadata is interleaved with its structure (any IFD tag,
sub-IFDs, private IFDs), so instead of editing IFDs the decoded pixels are
copied into a new Pillow image (which carries no tags) and saved with the
original compression when it is lossless (raw, LZW, Deflate, PackBits),
otherwise with LZW.  The output is decoded again and must be pixel-identical
(mode, size, palette, bytes), else ScrubRefused.

Keeps (allowlist): the structural tags Pillow writes, the orientation (Pillow
applies it to the pixels on load, losslessly; the tag is written only if a
Pillow version did not), the ICC profile (its colour data only, see
:mod:`plugins.scrub.icc`), the resolution (X/YResolution, ResolutionUnit:
the physical scale of a scan) and, by policy, DateTimeOriginal in a fresh
EXIF IFD.  Everything else goes: every other IFD0 tag (Make, Model, Artist,
Copyright, XMP, IPTC, Photoshop...), the EXIF, GPS and Interop IFDs, SubIFDs
and reduced-resolution thumbnail pages.  A file with more than one
full-resolution page raises
ScrubRefused; a broken IFD structure or a bomb raises MalformedImage.
"""

from __future__ import annotations

import io
import struct
from typing import ClassVar

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from gateway import decoding
from gateway.errors import ClindavError
from plugins.scrub.base import (
    MalformedImage,
    Scrubber,
    ScrubOptions,
    ScrubRefused,
    ScrubResult,
    check_pixels,
    count,
)
from plugins.scrub.exif import (
    DATE_TIME_ORIGINAL,
    EXIF_POINTER,
    ORIENTATION,
    TiffLayout,
    kept_values,
    read_tiff,
    removed_tags,
    tag_name,
)
from plugins.scrub.icc import profile_residue, sanitize_profile

ICC_PROFILE = 34675
_RESOLUTION = frozenset({282, 283, 296})
# Tags that describe the pixel layout Pillow writes (not metadata).
_STRUCTURE = frozenset(
    {
        254,
        256,
        257,
        258,
        259,
        262,
        273,
        277,
        278,
        279,
        284,
        317,
        320,
        338,
        339,
        530,
        531,
        532,
    }
)
_SINGLE_VALUED = frozenset({254, 256, 257, 259, 262, 274, 277, 278, 284, 296, 317})
_ALLOWED_IFD0 = _STRUCTURE | _RESOLUTION | {ORIENTATION, ICC_PROFILE, EXIF_POINTER}
# IFD0 tags the re-encode writes afresh: not reported as removed.
_REWRITTEN = frozenset(tag_name("ifd0", tag) for tag in _STRUCTURE | _RESOLUTION | {ICC_PROFILE})
_LOSSLESS = frozenset({"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"})


def _check_pages(layout: TiffLayout, removed: dict[str, int]) -> None:
    """Drop reduced-resolution pages (thumbnails); refuse other extra pages."""
    for ifd in layout.ifds:
        if not ifd.name.startswith("ifd") or ifd.name == "ifd0":
            continue
        subfile = ifd.entries.get(254)
        if subfile is None or not (layout.uint(subfile) or 0) & 1:
            raise ScrubRefused("tiff: multi-page files are not supported")
        count(removed, f"{ifd.name}:thumbnail")


def _check_header(layout: TiffLayout, options: ScrubOptions) -> None:
    """Refuse odd layout tags and bombs from the IFD, before Pillow sees the file.

    Pillow's own limit (its DecompressionBombWarning, made an error at import)
    is applied here too, so the refusal does not depend on warning filters.
    """
    ifd0 = layout.ifds[0].entries
    if any(ifd0[tag].count != 1 for tag in _SINGLE_VALUED & ifd0.keys()):
        raise MalformedImage("tiff: a single-valued layout tag holds several values")
    width = layout.uint(ifd0[256]) if 256 in ifd0 else None
    height = layout.uint(ifd0[257]) if 257 in ifd0 else None
    if width is None or height is None:
        raise MalformedImage("tiff: no valid ImageWidth/ImageLength")
    check_pixels(width, height, options, "tiff")
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise MalformedImage(f"tiff: {width}x{height} exceeds Pillow's limit (decompression bomb)")


def _reencode(
    data: bytes,
    layout: TiffLayout,
    orientation: int | None,
    date: bytes | None,
    removed: dict[str, int],
) -> tuple[bytes, bool]:
    """The pixels in a fresh, verified TIFF, and whether an ICC profile was kept.

    Pillow is a third-party decoder fed hostile bytes: whatever it raises is
    reported as MalformedImage.
    """
    try:
        # The re-encode holds about six copies of the pixels at its peak
        # (decoded, fresh copy, written file, its decode, two tobytes()).
        with (
            Image.open(io.BytesIO(data), formats=["TIFF"]) as image,
            decoding.reserve(image.size, image.mode, copies=6, what="tiff"),
        ):
            return _reencode_loaded(image, layout, orientation, date, removed)
    except ClindavError:
        raise
    except Exception as exc:
        raise MalformedImage(f"tiff: Pillow: {type(exc).__name__}: {exc}") from exc


def _reencode_loaded(
    image: Image.Image,
    layout: TiffLayout,
    orientation: int | None,
    date: bytes | None,
    removed: dict[str, int],
) -> tuple[bytes, bool]:
    image.load()
    # Pillow applies Orientation to TIFF pixels on load and then drops the
    # tag; write the tag only if the pixels are still as stored.
    tag = orientation if image.getexif().get(ORIENTATION) == orientation else None
    out = _encode(image, layout, tag, removed)
    if date:
        out = _add_capture_date(out, date)
    _verify_pixels(image, out)
    return out, "icc_profile" in image.info


def _fresh_copy(image: Image.Image) -> Image.Image:
    """The pixels (and palette) alone, in an image that has no tags or info."""
    fresh = Image.frombytes(image.mode, image.size, image.tobytes())
    if image.mode == "P":
        fresh.putpalette(image.getpalette() or [])
    return fresh


def _resolution(layout: TiffLayout) -> dict[int, object]:
    """X/YResolution and ResolutionUnit, if all three are well-formed; else none."""
    ifd0 = layout.ifds[0].entries
    rationals = [ifd0.get(tag) for tag in (282, 283)]
    unit = layout.uint(ifd0[296]) if 296 in ifd0 else 2  # TIFF's default unit: inch
    if unit not in (1, 2, 3) or any(r is None or r.type != 5 or r.count != 1 for r in rationals):
        return {}
    values = [struct.unpack(layout.order + "II", r.value) for r in rationals if r is not None]
    if any(den == 0 for _, den in values):
        return {}
    return {282: IFDRational(*values[0]), 283: IFDRational(*values[1]), 296: unit}


def _encode(
    image: Image.Image, layout: TiffLayout, orientation: int | None, removed: dict[str, int]
) -> bytes:
    compression = image.info.get("compression", "raw")
    tiffinfo = _resolution(layout)
    if orientation:
        tiffinfo[ORIENTATION] = orientation
    icc = image.info.get("icc_profile")
    if icc:
        clean = sanitize_profile(icc)
        for name, n in clean.removed.items():
            count(removed, name, n)
        icc = clean.data
    out = io.BytesIO()
    _fresh_copy(image).save(
        out,
        "TIFF",
        compression=compression if compression in _LOSSLESS else "tiff_lzw",
        tiffinfo=tiffinfo,
        **({"icc_profile": icc} if icc else {}),
    )
    return out.getvalue()


def _add_capture_date(tiff: bytes, date: bytes) -> bytes:
    """Move IFD0 to the end with a pointer to a fresh EXIF IFD holding ``date``.

    Pillow's libtiff writer cannot write sub-IFDs; the old IFD0 is zeroed.
    """
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd0,) = struct.unpack(order + "I", tiff[4:8])
    (n,) = struct.unpack(order + "H", tiff[ifd0 : ifd0 + 2])
    entries = [tiff[ifd0 + 2 + 12 * i : ifd0 + 14 + 12 * i] for i in range(n)]
    base = len(tiff) + (len(tiff) & 1)
    exif_at = base + 2 + 12 * (n + 1) + 4
    entries.append(struct.pack(order + "HHII", EXIF_POINTER, 4, 1, exif_at))
    entries.sort(key=lambda entry: struct.unpack(order + "H", entry[:2])[0])
    out = bytearray(tiff)
    out[ifd0 : ifd0 + 6 + 12 * n] = bytes(6 + 12 * n)
    out += b"\x00" * (base - len(tiff))
    out += struct.pack(order + "H", n + 1) + b"".join(entries) + bytes(4)
    out += struct.pack(order + "HHHII", 1, DATE_TIME_ORIGINAL, 2, len(date), exif_at + 18)
    out += bytes(4) + date
    out[4:8] = struct.pack(order + "I", base)
    return bytes(out)


def _verify_pixels(image: Image.Image, out: bytes) -> None:
    with Image.open(io.BytesIO(out), formats=["TIFF"]) as written:
        same = written.mode == image.mode and written.size == image.size
        same = same and written.tobytes() == image.tobytes()
        if image.mode == "P":
            same = same and written.getpalette() == image.getpalette()
    if not same:
        raise ScrubRefused(f"tiff: mode {image.mode} does not round-trip losslessly")


class TiffScrubber(Scrubber):
    """Baseline TIFF; lossless re-encode (see module docstring)."""

    format_name: ClassVar[str] = "tiff"

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        layout = read_tiff(data)
        removed: dict[str, int] = {}
        _check_pages(layout, removed)
        _check_header(layout, options)
        orientation, date = kept_values(layout, options)
        out, icc = _reencode(data, layout, orientation, date, removed)
        kept = ["icc-profile"] * icc
        for name in removed_tags(layout, orientation, date):
            if name not in _REWRITTEN:
                count(removed, name)
        kept += ["orientation"] * bool(orientation) + ["DateTimeOriginal"] * bool(date)
        kept += ["resolution"] * bool(_resolution(layout))
        return ScrubResult(out, removed, tuple(kept))

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        layout = read_tiff(data)
        found = []
        for ifd in layout.ifds:
            allowed = {"ifd0": _ALLOWED_IFD0, "exif": {DATE_TIME_ORIGINAL}}.get(ifd.name, set())
            found += [tag_name(ifd.name, tag) for tag in ifd.entries if tag not in allowed]
            if ifd.name not in ("ifd0", "exif"):
                found.append(f"{ifd.name}:ifd")
        orientation, date = kept_values(layout, options)
        exif = layout.ifd("exif")
        if exif is not None and date is None:
            found.append("exif:DateTimeOriginal")
        ifd0 = layout.ifds[0].entries
        if ORIENTATION in ifd0 and orientation is None:
            found.append("ifd0:Orientation")
        if ICC_PROFILE in ifd0:
            found += profile_residue(ifd0[ICC_PROFILE].value)
        return found
