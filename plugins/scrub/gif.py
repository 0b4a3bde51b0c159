"""GIF: a block-level rewrite; LZW image data is copied untouched.

Keeps (allowlist): the header, logical screen descriptor and global colour
table; every image (descriptor, local colour table, LZW data); Graphic
Control Extensions re-built from their fields (delay, disposal,
transparency) with reserved bits zeroed; and, decision, the NETSCAPE2.0
looping extension re-built holding only its loop count: it carries no
personal data, and dropping it would change how an animation plays.

Everything else goes: comment extensions, plain-text extensions, every other
application extension (XMP, ICC, vendor data), other sub-blocks of the
NETSCAPE extension, and bytes after the trailer (``trailing-data``).  A
missing trailer, truncated sub-blocks or an unknown block type raise
MalformedImage.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
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

_IMAGE, _EXTENSION, _TRAILER = 0x2C, 0x21, 0x3B
_GCE, _COMMENT, _PLAIN_TEXT, _APPLICATION = 0xF9, 0xFE, 0x01, 0xFF
_NETSCAPE = b"NETSCAPE2.0"
_APPLICATION_NAMES = {_NETSCAPE: "NETSCAPE2.0", b"XMP DataXMP": "XMP", b"ICCRGBG1012": "ICC"}


@dataclass(frozen=True)
class Block:
    """One top-level block: ``kind`` is the introducer, ``label`` the extension label."""

    kind: int
    label: int
    raw: bytes
    subblocks: tuple[bytes, ...]


def _screen_end(data: bytes) -> int:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise MalformedImage("gif: bad header")
    packed = data[10]
    return 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)


def _subblocks(data: bytes, pos: int) -> tuple[tuple[bytes, ...], int]:
    """Data sub-blocks from ``pos`` up to the terminator, and the offset after it."""
    blocks: list[bytes] = []
    while True:
        if pos >= len(data):
            raise MalformedImage("gif: truncated sub-blocks")
        size = data[pos]
        if size == 0:
            return tuple(blocks), pos + 1
        if pos + 1 + size > len(data):
            raise MalformedImage("gif: sub-block runs past the end")
        blocks.append(data[pos + 1 : pos + 1 + size])
        pos += 1 + size


def read_blocks(data: bytes) -> Iterator[Block]:
    """Blocks after the global colour table up to and including the trailer."""
    pos = _screen_end(data)
    while pos < len(data):
        kind, start = data[pos], pos
        if kind == _TRAILER:
            yield Block(kind, 0, data[pos : pos + 1], ())
            return
        if kind == _IMAGE:
            if pos + 11 > len(data):
                raise MalformedImage("gif: truncated image descriptor")
            packed = data[pos + 9]
            pos += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0) + 1
            label = 0
        elif kind == _EXTENSION and pos + 1 < len(data):
            label, pos = data[pos + 1], pos + 2
        else:
            raise MalformedImage(f"gif: unknown block {kind:#04x} at {pos}")
        subblocks, pos = _subblocks(data, pos)
        yield Block(kind, label, data[start:pos], subblocks)
    raise MalformedImage("gif: no trailer (truncated)")


def check_structure(data: bytes) -> None:
    """A complete GIF without decoding it: every block whole up to the trailer, and at
    least one image; MalformedImage otherwise."""
    blocks = list(read_blocks(data))  # to the trailer: read_blocks is lazy
    if not any(block.kind == _IMAGE for block in blocks):
        raise MalformedImage("gif: no image")


def _trailing(data: bytes, blocks: list[Block]) -> bytes:
    """The bytes after the GIF trailer (empty when there are none)."""
    consumed = _screen_end(data) + sum(len(block.raw) for block in blocks)
    return data[consumed:]


def _fresh_gce(block: Block) -> bytes:
    if len(block.subblocks) != 1 or len(block.subblocks[0]) != 4:
        raise MalformedImage("gif: bad graphic control extension")
    fields = block.subblocks[0]
    return bytes([_EXTENSION, _GCE, 4, fields[0] & 0x1F]) + fields[1:4] + b"\x00"


def _fresh_loop(block: Block) -> bytes | None:
    """The NETSCAPE2.0 extension with only its loop count, or None if it has none."""
    loop = next((sub for sub in block.subblocks[1:] if len(sub) == 3 and sub[0] == 1), None)
    if loop is None:
        return None
    return bytes([_EXTENSION, _APPLICATION, 11]) + _NETSCAPE + b"\x03" + loop + b"\x00"


def _extension_name(block: Block) -> str:
    if block.label == _APPLICATION:
        ident = block.subblocks[0] if block.subblocks else b""
        return "application:" + _APPLICATION_NAMES.get(ident, "other")
    return {_COMMENT: "comment", _PLAIN_TEXT: "plain-text"}.get(block.label, "extension:other")


class GifScrubber(Scrubber):
    """GIF87a/GIF89a; block rewrite (see module docstring)."""

    format_name: ClassVar[str] = "gif"

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        out = [data[: _screen_end(data)]]
        width, height = struct.unpack("<HH", data[6:10])
        check_pixels(width, height, options, "gif")
        blocks = list(read_blocks(data))
        removed: dict[str, int] = {}
        kept: list[str] = []
        for block in blocks:
            fresh = self._keep(block, options)
            if fresh is None:
                count(removed, _extension_name(block))
                continue
            out.append(fresh)
            if block.label == _APPLICATION and "netscape-loop" not in kept:
                kept.append("netscape-loop")
        if _trailing(data, blocks):
            count(removed, "trailing-data")
        return ScrubResult(b"".join(out), removed, tuple(kept), trailing=_trailing(data, blocks))

    def _keep(self, block: Block, options: ScrubOptions) -> bytes | None:
        """The block to write in place of ``block``, or None to drop it."""
        if block.kind == _IMAGE:
            width, height = struct.unpack("<HH", block.raw[5:9])
            check_pixels(width, height, options, "gif frame")
            return block.raw
        if block.kind == _TRAILER:
            return block.raw
        if block.label == _GCE:
            return _fresh_gce(block)
        if block.label == _APPLICATION and block.subblocks[:1] == (_NETSCAPE,):
            return _fresh_loop(block)
        return None

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        blocks = list(read_blocks(data))
        found = ["trailing-data"] if _trailing(data, blocks) else []
        for block in blocks:
            if block.kind in (_IMAGE, _TRAILER):
                continue
            if block.label == _GCE and block.raw == _fresh_gce(block):
                continue
            if block.label == _APPLICATION and block.raw == _fresh_loop(block):
                continue
            found.append(_extension_name(block))
        return found
