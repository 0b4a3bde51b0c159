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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from plugins.scrub.base import (
    HeaderCheck,
    MalformedImage,
    PieceWalk,
    Scrubber,
    ScrubOptions,
    ScrubRefused,
    check_pixels,
    count,
)
from plugins.scrub.exif import exif_residue, minimal_exif, strip_exif_prefix
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


# What a walk yields: ("chunk", Chunk) for a chunk held whole; for image data
# (IDAT, fdAT) and any chunk over _HELD_LIMIT, ("open", header bytes), then
# ("data", piece) as it arrives, then ("close", CRC bytes) once its CRC is
# checked; ("trailing", bytes) after IEND.
Event = tuple[str, Any]
_STREAMED = (b"IDAT", b"fdAT")
_HELD_LIMIT = 16 << 20


class PngWalker(PieceWalk):
    """The chunk walk of a PNG fed in pieces of any size, every CRC checked.

    Memory: at most one chunk of up to 16 MiB other than image data (which
    passes in pieces) and the piece being fed.  Broken structure (a bad
    signature, chunk type or CRC) raises MalformedImage as soon as it is
    seen; :meth:`finish` raises it when the data ended before IEND.
    """

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._ended = False
        self._open: tuple[bytes, int, int] | None = None  # type, bytes left, running CRC
        self.offset = 0  # bytes of the file walked so far (the end of IEND, once there)

    def feed(self, data: bytes) -> list[Event]:
        if self._ended:
            return [("trailing", data)] if data else []
        return self._walk(data)

    def finish(self) -> None:
        if not self._ended:
            raise MalformedImage("png: truncated before IEND")

    def _take(self, size: int) -> bytes:
        piece = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        self.offset += size
        return piece

    def _step(self) -> Event | None:
        left = len(self._buf) - self._pos
        if self._ended:
            return ("trailing", self._take(left)) if left else None
        if not self._started:
            if left < len(SIGNATURE):
                return None
            if self._take(len(SIGNATURE)) != SIGNATURE:
                raise MalformedImage("png: bad signature")
            self._started = True
            left -= len(SIGNATURE)
        if self._open is not None:
            return self._streamed(left)
        if left < 8:
            return None
        length, ctype = struct.unpack(">I4s", self._buf[self._pos : self._pos + 8])
        if length > 0x7FFFFFFF:
            raise MalformedImage(f"png: chunk at {self.offset} runs past the end")
        if not ctype.isalpha() or not ctype.isascii():
            raise MalformedImage(f"png: bad chunk type at {self.offset}")
        if ctype in _STREAMED or length > _HELD_LIMIT:
            header = self._take(8)
            self._open = (ctype, length, zlib.crc32(ctype))
            return ("open", header)
        if left < 12 + length:
            return None
        self._take(8)
        body = self._take(length)
        self._check_crc(ctype, zlib.crc32(ctype + body), self._take(4))
        self._ended = ctype == b"IEND"
        return ("chunk", Chunk(ctype, body))

    def _streamed(self, left: int) -> Event | None:
        assert self._open is not None
        ctype, remaining, crc = self._open
        if remaining:
            if not left:
                return None
            piece = self._take(min(remaining, left))
            self._open = (ctype, remaining - len(piece), zlib.crc32(piece, crc))
            return ("data", piece)
        if left < 4:
            return None
        stored = self._take(4)
        self._check_crc(ctype, crc, stored)
        self._open = None
        return ("close", stored)

    @staticmethod
    def _check_crc(ctype: bytes, crc: int, stored: bytes) -> None:
        if crc != struct.unpack(">I", stored)[0]:
            raise MalformedImage(f"png: bad CRC in {ctype!r} chunk")


def read_chunks(data: bytes) -> tuple[list[Chunk], int]:
    """CRC-checked chunks up to IEND, and the offset just past IEND."""
    walker = PngWalker()
    chunks: list[Chunk] = []
    pieces: list[bytes] = []
    ctype = b""
    for kind, value in walker.feed(data):
        if kind == "chunk":
            chunks.append(value)
        elif kind == "open":
            ctype, pieces = value[4:8], []
        elif kind == "data":
            pieces.append(value)
        elif kind == "close":
            chunks.append(Chunk(ctype, b"".join(pieces)))
    walker.finish()
    return chunks, walker.offset


def _mode(ihdr: bytes) -> str:
    """Pillow's mode for an image of this IHDR (what a decode of it would hold)."""
    depth, colour = ihdr[8], ihdr[9]
    if colour == 0:
        return {1: "1", 16: "I;16"}.get(depth, "L")
    return {2: "RGB", 3: "P", 4: "LA"}.get(colour, "RGBA")


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
            tiff = strip_exif_prefix(chunk.data)
            self.exif, kept = minimal_exif(tiff, self.options, self.removed)
            self.kept += kept
        elif chunk.type[:1].isupper():
            raise ScrubRefused(f"png: unknown critical chunk {chunk.type!r}")
        else:
            count(self.removed, chunk.type.decode("ascii"))

    def head(self) -> bytes:
        """The kept chunks before the first image data, and the minimal eXIf (which must
        precede the image data)."""
        chunks, self.out = self.out, []
        if self.exif:
            chunks.append(Chunk(b"eXIf", self.exif))
        return SIGNATURE + b"".join(_chunk(chunk) for chunk in chunks)

    def tail(self, chunk: Chunk) -> bytes:
        """A chunk after the image data began: kept ones pass on; an eXIf can no longer
        precede the image data, so it goes."""
        if chunk.type == b"eXIf":
            count(self.removed, "eXIf")
            return b""
        self.visit(chunk)
        chunks, self.out = self.out, []
        return b"".join(_chunk(c) for c in chunks)


def _check_ihdr(chunk: Chunk) -> None:
    if chunk.type != b"IHDR" or len(chunk.data) != 13:
        raise MalformedImage("png: first chunk is not a valid IHDR")


class PngStructure:
    """Whether a PNG is complete, without decoding it, on a stream (every byte is passed
    on unchanged); MalformedImage otherwise.

    Every chunk through IEND is whole and its CRC right, IHDR comes first
    and is sound, and there is image data (IDAT).  Bytes after IEND are the
    scrub stage's to judge.  ``on_header`` gets the size and Pillow mode
    from IHDR.
    """

    def __init__(self, on_header: HeaderCheck | None = None, walk: object | None = None) -> None:
        self._walker = PngWalker()  # ``walk``: none shared (a PNG's chunks are walked by each)
        self._on_header = on_header
        self._first = True
        self._image_data = False

    def feed(self, data: bytes) -> bytes:
        for kind, value in self._walker.feed(data):
            if self._first and kind in ("chunk", "open"):
                self._first = False
                if kind != "chunk":
                    raise MalformedImage("png: first chunk is not a valid IHDR")
                _check_ihdr(value)
                if self._on_header is not None:
                    width, height = struct.unpack(">II", value.data[:8])
                    self._on_header((width, height), _mode(value.data))
            self._image_data = self._image_data or (kind == "open" and value[4:8] == b"IDAT")
        return data

    def finish(self) -> bytes:
        self._walker.finish()
        if not self._image_data:
            raise MalformedImage("png: no image data (IDAT)")
        return b""


def check_structure(data: bytes) -> None:
    """:class:`PngStructure` over a whole file held in memory."""
    check = PngStructure()
    check.feed(data)
    check.finish()


class PngScrubStream:
    """The scrub of one PNG as it streams (:class:`~plugins.scrub.base.ScrubStream`).

    The chunks before the first image data are rewritten (the allowlist
    above) and sent on as one head when it begins; image data (IDAT, fdAT)
    passes on as it arrives, CRC-checked; later chunks are judged one by
    one; the bytes after IEND go to ``trailing``, never on.
    """

    def __init__(self, options: ScrubOptions, trailing: Callable[[bytes], None]) -> None:
        self._walker = PngWalker()
        self._rewrite = _Rewrite(options)
        self._options = options
        self._trailing = trailing
        self._head_in = [SIGNATURE]
        self._head_sent = False
        self._passing = False
        self._first = True
        self._idat = False
        self.removed = self._rewrite.removed
        self.kept: tuple[str, ...] = ()
        self.changed = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for kind, value in self._walker.feed(data):
            if kind == "chunk":
                out.append(self._chunk(value))
            elif kind == "open":
                out.append(self._open(value))
            elif kind in ("data", "close"):
                if self._passing:
                    out.append(value)
            elif value:
                if "trailing-data" not in self.removed:
                    count(self.removed, "trailing-data")
                self._trailing(value)
        return out[0] if len(out) == 1 else b"".join(out)

    def _chunk(self, chunk: Chunk) -> bytes:
        if self._first:
            self._first = False
            _check_ihdr(chunk)
            width, height = struct.unpack(">II", chunk.data[:8])
            check_pixels(width, height, self._options, "png")
        if self._head_sent:
            return self._rewrite.tail(chunk)
        if chunk.type == b"IEND":
            raise MalformedImage("png: IHDR is not first or there is no IDAT")
        self._head_in.append(_chunk(chunk))
        self._rewrite.visit(chunk)
        return b""

    def _open(self, header: bytes) -> bytes:
        ctype = header[4:8]
        if self._first:
            raise MalformedImage("png: first chunk is not a valid IHDR")
        self._passing = ctype in _STREAMED
        if not self._passing:
            _drop_streamed(ctype, self.removed)
            return b""
        self._idat = self._idat or ctype == b"IDAT"
        if self._head_sent:
            return header
        head = self._rewrite.head()
        self._head_sent = True
        self.changed = head != b"".join(self._head_in)
        return head + header

    def finish(self) -> bytes:
        self._walker.finish()
        if not self._idat:
            raise MalformedImage("png: IHDR is not first or there is no IDAT")
        self.kept = tuple(self._rewrite.kept)
        self.changed = self.changed or bool(self.removed)
        return b""


def _drop_streamed(ctype: bytes, removed: dict[str, int]) -> None:
    """A chunk too large to hold (over 16 MiB) that is not image data: only unknown
    ancillary chunks may be that large, and they go."""
    if ctype in _COPIED or ctype in (b"iCCP", b"eXIf"):
        raise MalformedImage(f"png: oversized {ctype!r} chunk")
    if ctype[:1].isupper():
        raise ScrubRefused(f"png: unknown critical chunk {ctype!r}")
    count(removed, ctype.decode("ascii"))


class PngResidue:
    """The allowlist checked again on a PNG as it streams
    (:class:`~plugins.scrub.base.ResidueStream`)."""

    def __init__(self, options: ScrubOptions) -> None:
        self._walker = PngWalker()
        self._options = options
        self.found: list[str] = []

    def feed(self, data: bytes) -> bytes:
        for kind, value in self._walker.feed(data):
            if kind == "chunk":
                self.found.extend(_chunk_residue(value, self._options))
            elif kind == "open" and value[4:8] not in _STREAMED:
                self.found.append(value[4:8].decode("ascii"))
            elif kind == "trailing" and value and "trailing-data" not in self.found:
                self.found.append("trailing-data")
        return data

    def finish(self) -> list[str]:
        self._walker.finish()
        return self.found


class PngScrubber(Scrubber):
    """PNG/APNG; chunk rewrite (see module docstring)."""

    format_name: ClassVar[str] = "png"

    def scrub_stream(
        self,
        options: ScrubOptions,
        trailing: Callable[[bytes], None],
        walk: object | None = None,  # a PNG's chunks are walked by each reader
    ) -> PngScrubStream:
        return PngScrubStream(options, trailing)

    def residue_stream(self, options: ScrubOptions) -> PngResidue:
        return PngResidue(options)


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
