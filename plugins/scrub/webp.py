"""WebP: a RIFF chunk-level rewrite; bitstreams are copied untouched.

Keeps (allowlist): VP8, VP8L and ALPH (pixels), ANIM (background and loop
count), ANMF frames re-built with only their ALPH/VP8/VP8L sub-chunks, ICCP
(reduced to its colour data, :mod:`plugins.scrub.icc`), VP8X re-built with its reserved bits zeroed,
the XMP flag cleared and the ICC/EXIF flags matching what is written, and an
EXIF chunk re-built as the minimal EXIF (Orientation and, by policy,
DateTimeOriginal; only in the extended format, where EXIF is defined).

Everything else goes: the original EXIF and XMP chunks, unknown chunks (top
level and inside ANMF) and bytes after the RIFF payload (``trailing-data``).
The RIFF size is recomputed.  Truncation, chunk sizes past the RIFF payload
and bad frame headers raise MalformedImage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from plugins.scrub.base import (
    MalformedImage,
    Scrubber,
    ScrubOptions,
    ScrubResult,
    check_pixels,
    count,
)
from plugins.scrub.bmff import fourcc_name
from plugins.scrub.exif import exif_residue, minimal_exif, strip_exif_prefix
from plugins.scrub.icc import profile_residue, sanitize_profile

_BITSTREAMS = (b"VP8 ", b"VP8L", b"ALPH")
_ICC_FLAG, _ALPHA_FLAG, _EXIF_FLAG, _XMP_FLAG, _ANIM_FLAG = 0x20, 0x10, 0x08, 0x04, 0x02


@dataclass(frozen=True)
class Chunk:
    fourcc: bytes
    data: bytes


def read_chunks(data: bytes, start: int, end: int) -> list[Chunk]:
    """The RIFF chunks in ``data[start:end]``; MalformedImage if one overruns."""
    chunks: list[Chunk] = []
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise MalformedImage("webp: truncated chunk header")
        fourcc, size = struct.unpack("<4sI", data[pos : pos + 8])
        if pos + 8 + size > end:
            raise MalformedImage(f"webp: chunk {fourcc!r} runs past its container")
        chunks.append(Chunk(fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def read_riff(data: bytes) -> tuple[list[Chunk], int]:
    """Top-level chunks and the offset just past the RIFF payload."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise MalformedImage("webp: not a RIFF WEBP file")
    end = 8 + struct.unpack("<I", data[4:8])[0]
    if end > len(data):
        raise MalformedImage("webp: truncated (RIFF size exceeds the data)")
    chunks = read_chunks(data, 12, end)
    if not chunks:
        raise MalformedImage("webp: no chunks")
    return chunks, end


def check_structure(data: bytes) -> None:
    """A complete WebP without decoding it: the RIFF chunks whole, and image data (a
    VP8/VP8L bitstream, or animation frames); MalformedImage otherwise."""
    chunks, _ = read_riff(data)
    if not any(c.fourcc in (b"VP8 ", b"VP8L", b"ANMF") for c in chunks):
        raise MalformedImage("webp: no image data")


def _pack(chunk: Chunk) -> bytes:
    pad = b"\x00" * (len(chunk.data) & 1)
    return struct.pack("<4sI", chunk.fourcc, len(chunk.data)) + chunk.data + pad


def _check_bitstream(chunk: Chunk, options: ScrubOptions) -> None:
    """Refuse bombs in the frame header of a simple-format file."""
    payload = chunk.data
    if chunk.fourcc == b"VP8 ":
        if len(payload) < 10 or payload[3:6] != b"\x9d\x01\x2a":
            raise MalformedImage("webp: bad VP8 frame header")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", payload[6:10]))
    elif chunk.fourcc == b"VP8L":
        if len(payload) < 5 or payload[0] != 0x2F:
            raise MalformedImage("webp: bad VP8L header")
        bits = struct.unpack("<I", payload[1:5])[0]
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        raise MalformedImage(f"webp: simple file starts with {chunk.fourcc!r}")
    check_pixels(width, height, options, "webp")


def _dimensions(header: bytes, what: str) -> tuple[int, int]:
    """Canvas/frame size stored as two 24-bit little-endian ``size - 1`` values."""
    if len(header) < 6:
        raise MalformedImage(f"webp: short {what} header")
    width = int.from_bytes(header[0:3], "little") + 1
    return width, int.from_bytes(header[3:6], "little") + 1


class _Rewrite:
    """Collects the kept chunks of an extended-format WebP."""

    def __init__(self, options: ScrubOptions, flags: int) -> None:
        self.options = options
        self.flags = flags
        self.removed: dict[str, int] = {}
        self.kept: list[str] = []
        self.body: list[Chunk] = []
        self.exif: bytes | None = None

    def visit(self, chunk: Chunk) -> None:
        if chunk.fourcc in _BITSTREAMS or chunk.fourcc == b"ANIM":
            self.body.append(chunk)
        elif chunk.fourcc == b"ANMF":
            self.body.append(self._frame(chunk))
        elif chunk.fourcc == b"ICCP" and "icc-profile" not in self.kept:
            clean = sanitize_profile(chunk.data)
            for name, n in clean.removed.items():
                count(self.removed, name, n)
            self.body.insert(0, Chunk(b"ICCP", clean.data))
            self.kept.append("icc-profile")
        elif chunk.fourcc == b"EXIF" and self.exif is None:
            exif, kept = minimal_exif(strip_exif_prefix(chunk.data), self.options, self.removed)
            self.exif = exif or b""  # read once: any later EXIF chunk is dropped
            self.kept += kept
        else:
            count(self.removed, fourcc_name(chunk.fourcc).strip())

    def _frame(self, chunk: Chunk) -> Chunk:
        if len(chunk.data) < 16:
            raise MalformedImage("webp: short ANMF header")
        check_pixels(*_dimensions(chunk.data[6:12], "ANMF"), self.options, "webp frame")
        kept = []
        for sub in read_chunks(chunk.data, 16, len(chunk.data)):
            if sub.fourcc in _BITSTREAMS:
                kept.append(_pack(sub))
            else:
                count(self.removed, "ANMF/" + fourcc_name(sub.fourcc).strip())
        return Chunk(b"ANMF", chunk.data[:16] + b"".join(kept))

    def chunks(self, canvas: bytes) -> list[Chunk]:
        flags = self.flags & (_ALPHA_FLAG | _ANIM_FLAG)
        flags |= _ICC_FLAG * ("icc-profile" in self.kept) | _EXIF_FLAG * bool(self.exif)
        head = Chunk(b"VP8X", bytes([flags]) + b"\x00\x00\x00" + canvas)
        tail = [Chunk(b"EXIF", self.exif)] if self.exif else []
        return [head, *self.body, *tail]


class WebpScrubber(Scrubber):
    """WebP (simple and extended); RIFF chunk rewrite (see module docstring)."""

    format_name: ClassVar[str] = "webp"

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        chunks, end = read_riff(data)
        removed: dict[str, int] = {"trailing-data": 1} if end < len(data) else {}
        first = chunks[0]
        if first.fourcc != b"VP8X":
            _check_bitstream(first, options)
            for extra in chunks[1:]:
                count(removed, fourcc_name(extra.fourcc).strip())
            return ScrubResult(_riff([first]), removed, (), trailing=data[end:])
        if len(first.data) != 10:
            raise MalformedImage("webp: VP8X chunk is not 10 bytes")
        check_pixels(*_dimensions(first.data[4:10], "VP8X"), options, "webp")
        rewrite = _Rewrite(options, first.data[0])
        for chunk in chunks[1:]:
            rewrite.visit(chunk)
        rewrite.removed.update(removed)
        return ScrubResult(
            _riff(rewrite.chunks(first.data[4:10])),
            rewrite.removed,
            tuple(rewrite.kept),
            trailing=data[end:],
        )

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        chunks, end = read_riff(data)
        found = ["trailing-data"] if end < len(data) else []
        if chunks[0].fourcc != b"VP8X":
            return found + [fourcc_name(c.fourcc) for c in chunks[1:]]
        fourccs = [chunk.fourcc for chunk in chunks]
        expected = _ICC_FLAG * (b"ICCP" in fourccs) | _EXIF_FLAG * (b"EXIF" in fourccs)
        if chunks[0].data[0] & ~(_ALPHA_FLAG | _ANIM_FLAG) != expected or any(chunks[0].data[1:4]):
            found.append("VP8X:flags")
        for chunk in chunks[1:]:
            found.extend(_chunk_residue(chunk, options))
        return found


def _chunk_residue(chunk: Chunk, options: ScrubOptions) -> list[str]:
    if chunk.fourcc in _BITSTREAMS or chunk.fourcc == b"ANIM":
        return []
    if chunk.fourcc == b"ICCP":
        return profile_residue(chunk.data)
    if chunk.fourcc == b"EXIF":
        return exif_residue(strip_exif_prefix(chunk.data), options)
    if chunk.fourcc == b"ANMF":
        subs = read_chunks(chunk.data, 16, len(chunk.data))
        return ["ANMF/" + fourcc_name(s.fourcc) for s in subs if s.fourcc not in _BITSTREAMS]
    return [fourcc_name(chunk.fourcc)]


def _riff(chunks: list[Chunk]) -> bytes:
    body = b"WEBP" + b"".join(_pack(chunk) for chunk in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
