"""ISO base media file format (ISO/IEC 14496-12) boxes, read with bounds checks.

Shared by the HEIF and MP4/MOV scrubbers.  :func:`read_boxes` lists the boxes
in a byte range (32-bit sizes, 64-bit ``largesize``, size 0 = "to the end");
a box that overruns its container raises MalformedImage.  :class:`Cursor`
reads fields sequentially and raises MalformedImage instead of running off
the end of a box.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from plugins.scrub.base import MalformedImage


@dataclass(frozen=True)
class Box:
    """A box: ``start`` of its header, ``body`` offset after the header, ``end``."""

    type: bytes
    start: int
    body: int
    end: int


def read_boxes(data: bytes | bytearray, start: int, end: int) -> list[Box]:
    """The boxes in ``data[start:end]``; MalformedImage if one overruns ``end``.

    A QuickTime list may end with a 4-byte zero terminator; it is tolerated.
    """
    boxes: list[Box] = []
    pos = start
    while pos < end:
        if end - pos == 4 and data[pos:end] == b"\x00" * 4:
            break
        if pos + 8 > end:
            raise MalformedImage(f"bmff: truncated box header at {pos}")
        size, btype = struct.unpack(">I4s", data[pos : pos + 8])
        body = pos + 8
        if size == 1:
            if pos + 16 > end:
                raise MalformedImage(f"bmff: truncated largesize at {pos}")
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            body = pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos or pos + size > end:
            raise MalformedImage(f"bmff: box {btype!r} at {pos} has bad size {size}")
        boxes.append(Box(btype, pos, body, pos + size))
        pos += size
    return boxes


def children(data: bytes | bytearray, box: Box, skip: int = 0) -> list[Box]:
    """The child boxes of ``box``, after ``skip`` bytes (4 for a FullBox)."""
    if box.body + skip > box.end:
        raise MalformedImage(f"bmff: box {box.type!r} too short")
    return read_boxes(data, box.body + skip, box.end)


def fourccs(names: str) -> frozenset[bytes]:
    """Box types or brands from a space-separated list; short names are space-padded."""
    return frozenset(name.encode("latin-1").ljust(4) for name in names.split())


def fourcc_name(btype: bytes) -> str:
    """A box type or chunk id for reports: printable ASCII as is, else hex."""
    text = btype.decode("latin-1")
    return text if text.isascii() and text.isprintable() else btype.hex()


def pack_box(btype: bytes, payload: bytes) -> bytes:
    """A box with a 32-bit size (payloads here are far below 4 GiB)."""
    return struct.pack(">I4s", 8 + len(payload), btype) + payload


def pack_full_box(btype: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return pack_box(btype, struct.pack(">I", (version << 24) | flags) + payload)


class Cursor:
    """Sequential big-endian field reader over ``data[pos:end]``."""

    def __init__(self, data: bytes | bytearray, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > self.end:
            raise MalformedImage("bmff: field runs past the end of its box")
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk

    def uint(self, size: int) -> int:
        """An unsigned integer of ``size`` bytes (0 reads nothing and gives 0)."""
        if size not in (0, 1, 2, 4, 8):
            raise MalformedImage(f"bmff: bad field size {size}")
        return int.from_bytes(self.take(size), "big")

    def version_flags(self) -> tuple[int, int]:
        word = self.uint(4)
        return word >> 24, word & 0xFFFFFF

    def cstring(self) -> bytes:
        """A NUL-terminated string (the NUL is consumed, not returned)."""
        nul = self.data.find(b"\x00", self.pos, self.end)
        if nul < 0:
            raise MalformedImage("bmff: unterminated string")
        text = bytes(self.data[self.pos : nul])
        self.pos = nul + 1
        return text
