"""PNG (and APNG): a chunk-level rewrite; pixel data is copied untouched.

Keeps (allowlist): IHDR, PLTE, IDAT, IEND, tRNS, gAMA, cHRM, sRGB, sBIT,
pHYs; the APNG frame chunks acTL, fcTL, fdAT (frame geometry, timing and
pixels, no text); iCCP re-written with a fixed profile name (the name is free
text) and the profile reduced to its colour data (:mod:`plugins.scrub.icc`)
and recompressed; and eXIf re-built as the minimal EXIF
(Orientation and, by policy, DateTimeOriginal), placed before the first IDAT.
Decision: orientation is kept rather than dropped, so a rotated phone
screenshot stays upright.

Everything else goes: tEXt, zTXt, iTXt, tIME, all other ancillary chunks and
anything after IEND (``trailing-data``).  Every input CRC is verified: a bad
CRC, truncation, a wrong-sized fixed chunk or a bad IHDR raises
MalformedImage; an unknown critical chunk raises ScrubRefused.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar

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
    build_exif,
    exif_residue,
    kept_values,
    read_tiff,
    removed_tags,
    strip_exif_prefix,
)
from plugins.scrub.icc import profile_residue, sanitize_profile

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks copied verbatim, with their exact size where the format fixes it.
_COPIED = {
    b"IHDR": 13,
    b"IEND": 0,
    b"gAMA": 4,
    b"cHRM": 32,
    b"sRGB": 1,
    b"pHYs": 9,
    b"acTL": 8,
    b"fcTL": 26,
    b"PLTE": None,
    b"IDAT": None,
    b"tRNS": None,
    b"sBIT": None,
    b"fdAT": None,
}
_MAX_SIZES = {b"PLTE": 768, b"tRNS": 256, b"sBIT": 4}
ICC_NAME = b"ICC profile"
_MAX_ICC = 16 << 20


@dataclass(frozen=True)
class Chunk:
    type: bytes
    data: bytes


def read_chunks(data: bytes) -> tuple[list[Chunk], int]:
    """CRC-checked chunks up to IEND, and the offset just past IEND."""
    if not data.startswith(SIGNATURE):
        raise MalformedImage("png: bad signature")
    chunks: list[Chunk] = []
    pos = len(SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise MalformedImage("png: truncated before IEND")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise MalformedImage(f"png: chunk at {pos} runs past the end")
        if not ctype.isalpha() or not ctype.isascii():
            raise MalformedImage(f"png: bad chunk type at {pos}")
        body = data[pos + 8 : end - 4]
        if zlib.crc32(ctype + body) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise MalformedImage(f"png: bad CRC in {ctype!r} chunk")
        chunks.append(Chunk(ctype, body))
        if ctype == b"IEND":
            return chunks, end
        pos = end


def _chunk(chunk: Chunk) -> bytes:
    crc = zlib.crc32(chunk.type + chunk.data)
    return struct.pack(">I4s", len(chunk.data), chunk.type) + chunk.data + struct.pack(">I", crc)


def _check_copied(chunk: Chunk) -> None:
    size = _COPIED[chunk.type]
    if size is not None and len(chunk.data) != size:
        raise MalformedImage(f"png: {chunk.type!r} chunk has {len(chunk.data)} bytes")
    if len(chunk.data) > _MAX_SIZES.get(chunk.type, 1 << 31):
        raise MalformedImage(f"png: oversized {chunk.type!r} chunk")


def _icc_profile(chunk: Chunk) -> bytes:
    """The decompressed ICC profile of an iCCP chunk; MalformedImage if unsound."""
    name, sep, rest = chunk.data.partition(b"\x00")
    if not sep or not 1 <= len(name) <= 79 or rest[:1] != b"\x00":
        raise MalformedImage("png: bad iCCP header")
    inflater = zlib.decompressobj()
    profile = inflater.decompress(rest[1:], _MAX_ICC)
    if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise MalformedImage("png: iCCP profile is truncated, oversized or has trailing bytes")
    if len(profile) < 128 or profile[36:40] != b"acsp":
        raise MalformedImage("png: iCCP profile without an acsp header")
    return profile


class _Rewrite:
    """Collects the kept chunks of one PNG while its chunks are visited."""

    def __init__(self, options: ScrubOptions) -> None:
        self.options = options
        self.removed: dict[str, int] = {}
        self.kept: list[str] = []
        self.out: list[Chunk] = []
        self.exif: bytes | None = None
        self.exif_seen = False

    def visit(self, chunk: Chunk) -> None:
        if chunk.type in _COPIED:
            _check_copied(chunk)
            self.out.append(chunk)
        elif chunk.type == b"iCCP" and "icc-profile" not in self.kept:
            clean = sanitize_profile(_icc_profile(chunk))
            for name, n in clean.removed.items():
                count(self.removed, name, n)
            profile = zlib.compress(clean.data)
            self.out.append(Chunk(b"iCCP", ICC_NAME + b"\x00\x00" + profile))
            self.kept.append("icc-profile")
        elif chunk.type == b"eXIf" and not self.exif_seen:
            self.exif_seen = True
            self.exif = self._minimal_exif(strip_exif_prefix(chunk.data))
        elif chunk.type[:1].isupper():
            raise ScrubRefused(f"png: unknown critical chunk {chunk.type!r}")
        else:
            count(self.removed, chunk.type.decode("ascii"))

    def _minimal_exif(self, tiff: bytes) -> bytes | None:
        layout = read_tiff(tiff)
        orientation, date = kept_values(layout, self.options)
        for name in removed_tags(layout, orientation, date):
            count(self.removed, name)
        self.kept += ["orientation"] * bool(orientation) + ["DateTimeOriginal"] * bool(date)
        return build_exif(orientation, date)

    def output(self) -> bytes:
        types = [chunk.type for chunk in self.out]
        if types[0] != b"IHDR" or b"IDAT" not in types:
            raise MalformedImage("png: IHDR is not first or there is no IDAT")
        if self.exif:
            # eXIf must precede the image data.
            self.out.insert(types.index(b"IDAT"), Chunk(b"eXIf", self.exif))
        return SIGNATURE + b"".join(_chunk(chunk) for chunk in self.out)


def _check_header(chunks: list[Chunk], options: ScrubOptions) -> None:
    if chunks[0].type != b"IHDR" or len(chunks[0].data) != 13:
        raise MalformedImage("png: first chunk is not a valid IHDR")
    width, height = struct.unpack(">II", chunks[0].data[:8])
    check_pixels(width, height, options, "png")


def check_structure(data: bytes) -> None:
    """A complete PNG without decoding it; MalformedImage otherwise.

    Every chunk through IEND is whole and its CRC right, IHDR comes first
    and is sound, and there is image data (IDAT).  Bytes after IEND are the
    scrub stage's to judge.
    """
    chunks, _ = read_chunks(data)
    if chunks[0].type != b"IHDR" or len(chunks[0].data) != 13:
        raise MalformedImage("png: first chunk is not a valid IHDR")
    if not any(chunk.type == b"IDAT" for chunk in chunks):
        raise MalformedImage("png: no image data (IDAT)")


class PngScrubber(Scrubber):
    """PNG/APNG; chunk rewrite (see module docstring)."""

    format_name: ClassVar[str] = "png"

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        chunks, end = read_chunks(data)
        _check_header(chunks, options)
        rewrite = _Rewrite(options)
        for chunk in chunks:
            rewrite.visit(chunk)
        if end < len(data):
            count(rewrite.removed, "trailing-data")
        return ScrubResult(
            rewrite.output(), rewrite.removed, tuple(rewrite.kept), trailing=data[end:]
        )

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        chunks, end = read_chunks(data)
        found = ["trailing-data"] if end < len(data) else []
        for chunk in chunks:
            found.extend(_chunk_residue(chunk, options))
        return found


def _chunk_residue(chunk: Chunk, options: ScrubOptions) -> list[str]:
    """What the allowlist does not admit in one output chunk."""
    if chunk.type in _COPIED:
        _check_copied(chunk)
        return []
    if chunk.type == b"iCCP":
        found = profile_residue(_icc_profile(chunk))
        return found if chunk.data.startswith(ICC_NAME + b"\x00") else [*found, "iCCP:name"]
    if chunk.type == b"eXIf":
        return exif_residue(strip_exif_prefix(chunk.data), options)
    return [chunk.type.decode("ascii")]
