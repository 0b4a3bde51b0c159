"""The item structure of a HEIF ``meta`` box, parsed with bounds checks.

Used by :mod:`plugins.scrub.heif`.  :func:`parse_meta` reads hdlr, pitm,
iinf/infe, iloc, iref, iprp (ipco + ipma) and idat; any other child is listed
in ``Meta.others``.  Truncated or inconsistent structures raise
MalformedImage; features that cannot be cleaned safely (legacy infe versions,
protected items, data in other files, item-offset construction, zero-length
"to the end" extents) raise ScrubRefused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plugins.scrub.base import MalformedImage, ScrubRefused
from plugins.scrub.bmff import Box, Cursor, children, read_boxes


@dataclass(frozen=True)
class Item:
    id: int
    type: bytes
    hidden: bool
    named: bool
    content_type: bytes


@dataclass(frozen=True)
class Reference:
    type: bytes
    source: int
    targets: tuple[int, ...]


@dataclass(frozen=True)
class Association:
    essential: bool
    index: int


@dataclass
class Meta:
    """What a ``meta`` box says; ``extents`` are (method, offset, length) per item."""

    handler: bytes = b""
    hdlr_raw: bytes = b""
    primary: int = -1
    items: dict[int, Item] = field(default_factory=dict)
    extents: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    refs: list[Reference] = field(default_factory=list)
    properties: list[Box] = field(default_factory=list)
    associations: dict[int, list[Association]] = field(default_factory=dict)
    idat: tuple[int, int] = (0, 0)
    others: list[bytes] = field(default_factory=list)


def parse_meta(data: bytes, meta_box: Box) -> Meta:
    meta = Meta()
    seen: set[bytes] = set()
    for box in children(data, meta_box, skip=4):
        if box.type in seen:
            raise MalformedImage(f"heif: duplicate {box.type!r} box in meta")
        seen.add(box.type)
        cursor = Cursor(data, box.body, box.end)
        if box.type == b"hdlr":
            cursor.version_flags()
            cursor.uint(4)
            meta.handler, meta.hdlr_raw = cursor.take(4), data[box.start : box.end]
        elif box.type == b"pitm":
            version, _ = cursor.version_flags()
            meta.primary = cursor.uint(2 if version == 0 else 4)
        elif box.type == b"iinf":
            _parse_iinf(data, box, cursor, meta)
        elif box.type == b"iloc":
            _parse_iloc(cursor, meta)
        elif box.type == b"iref":
            _parse_iref(data, box, cursor, meta)
        elif box.type == b"iprp":
            _parse_iprp(data, box, meta)
        elif box.type == b"idat":
            meta.idat = (box.body, box.end)
        else:
            meta.others.append(box.type)
    if meta.primary not in meta.items:
        raise MalformedImage("heif: the primary item is not declared")
    return meta


def _parse_iinf(data: bytes, box: Box, cursor: Cursor, meta: Meta) -> None:
    version, _ = cursor.version_flags()
    declared = cursor.uint(2 if version == 0 else 4)
    entries = [b for b in read_boxes(data, cursor.pos, box.end) if b.type == b"infe"]
    if len(entries) != declared:
        raise MalformedImage("heif: iinf entry count does not match its infe boxes")
    for entry in entries:
        item = _parse_infe(Cursor(data, entry.body, entry.end))
        if item.id in meta.items:
            raise MalformedImage(f"heif: item {item.id} declared twice")
        meta.items[item.id] = item


def _parse_infe(cursor: Cursor) -> Item:
    version, flags = cursor.version_flags()
    if version < 2:
        raise ScrubRefused("heif: legacy infe version")
    item_id = cursor.uint(2 if version == 2 else 4)
    if cursor.uint(2):
        raise ScrubRefused("heif: protected item")
    item_type = cursor.take(4)
    named = bool(cursor.cstring())
    content_type = cursor.cstring() if item_type == b"mime" else b""
    return Item(item_id, item_type, bool(flags & 1), named, content_type)


def _parse_iloc(cursor: Cursor, meta: Meta) -> None:
    version, _ = cursor.version_flags()
    if version > 2:
        raise MalformedImage(f"heif: iloc version {version}")
    sizes = cursor.uint(1)
    offset_size, length_size = sizes >> 4, sizes & 15
    sizes = cursor.uint(1)
    base_size, index_size = sizes >> 4, (sizes & 15) if version else 0
    for _ in range(cursor.uint(2 if version < 2 else 4)):
        item_id = cursor.uint(2 if version < 2 else 4)
        method = cursor.uint(2) & 15 if version else 0
        if cursor.uint(2) != 0 or method not in (0, 1):
            raise ScrubRefused("heif: item data in another file or by item offset")
        base = cursor.uint(base_size)
        extents = []
        for _ in range(cursor.uint(2)):
            cursor.uint(index_size)
            offset, length = cursor.uint(offset_size), cursor.uint(length_size)
            if length == 0:
                raise ScrubRefused("heif: zero-length ('to the end') extent")
            extents.append((method, base + offset, length))
        meta.extents[item_id] = extents


def _parse_iref(data: bytes, box: Box, cursor: Cursor, meta: Meta) -> None:
    version, _ = cursor.version_flags()
    id_size = 2 if version == 0 else 4
    for ref in read_boxes(data, cursor.pos, box.end):
        fields = Cursor(data, ref.body, ref.end)
        source = fields.uint(id_size)
        targets = tuple(fields.uint(id_size) for _ in range(fields.uint(2)))
        meta.refs.append(Reference(ref.type, source, targets))


def _parse_iprp(data: bytes, box: Box, meta: Meta) -> None:
    for child in children(data, box):
        if child.type == b"ipco":
            meta.properties = children(data, child)
        elif child.type == b"ipma":
            _parse_ipma(Cursor(data, child.body, child.end), meta)
        else:
            meta.others.append(b"iprp/" + child.type)


def _parse_ipma(cursor: Cursor, meta: Meta) -> None:
    version, flags = cursor.version_flags()
    wide = bool(flags & 1)
    for _ in range(cursor.uint(4)):
        item_id = cursor.uint(2 if version < 1 else 4)
        found = meta.associations.setdefault(item_id, [])
        for _ in range(cursor.uint(1)):
            value = cursor.uint(2 if wide else 1)
            top = 0x8000 if wide else 0x80
            found.append(Association(bool(value & top), value & (top - 1)))


def item_data(data: bytes, meta: Meta, item_id: int) -> bytes:
    """The bytes of one item (its extents joined); MalformedImage if out of range."""
    return b"".join(data[start:end] for start, end in _spans(len(data), meta, item_id))


def check_extents(size: int, meta: Meta) -> None:
    """Every item's data lies inside a file of ``size`` bytes; MalformedImage if not."""
    for item_id in {meta.primary, *meta.extents}:
        _spans(size, meta, item_id)


def _spans(size: int, meta: Meta, item_id: int) -> list[tuple[int, int]]:
    """Where one item's extents lie in a file of ``size`` bytes."""
    if item_id not in meta.extents:
        raise MalformedImage(f"heif: item {item_id} has no location")
    spans = []
    for method, offset, length in meta.extents[item_id]:
        start, end = (0, size) if method == 0 else meta.idat
        if start + offset + length > end:
            raise MalformedImage(f"heif: item {item_id} data lies outside its container")
        spans.append((start + offset, start + offset + length))
    return spans
