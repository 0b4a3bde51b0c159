"""HEIF/HEIC/AVIF still images: a lossless rewrite of the item structure.

Decision: no re-encode.  pillow_heif can save losslessly (``quality=-1``,
``chroma=444``, ``matrix_coefficients=0``) and that round-trips 8-bit RGB
exactly, but it triples the file size, is slow, and cannot carry a 10-bit
image or its original coding; so the file is rebuilt at the box level
instead, and the coded image data is copied byte for byte.

Keeps (allowlist): the primary item and the items it is derived from
(``dimg``: grid tiles, overlays), with their image properties (codec
configuration, size, colour incl. ICC (its colour data only, see
:mod:`plugins.scrub.icc`), rotation/mirror (HEIF's orientation),
crop, pixel aspect, HDR light levels); a rebuilt ftyp of known brands; and,
by policy, a fresh minimal Exif item holding only DateTimeOriginal (HEIF's
orientation lives in irot/imir, not EXIF).  A new ``meta`` (hdlr without a
name, item names blanked) and a new ``mdat`` holding only the kept items'
bytes are written.

Everything else goes: Exif and XMP items, thumbnails, auxiliary images
(depth maps, HDR gain maps) with their own metadata, other top-level images,
entity groups, unknown properties (e.g. ``udes`` user descriptions), any
other top-level box and every unreferenced byte.  An alpha plane, an
unknown *essential* property, an image sequence (``moov``) or a primary item
that is not an image raises ScrubRefused; broken structure raises
MalformedImage.

Streamed (:class:`HeifScrubStream`, :class:`HeifResidue`, :class:`HeifStructure`):
the head is held until the meta and the Exif item the date comes from are
in (at most :data:`HEAD_LIMIT`), then the rewritten head goes out and the
kept items' bytes pass as they come; the output is byte for byte the
whole-file scrub's.  :func:`streams_from` tells from a body's first bytes
whether it can go so.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from gateway.errors import UnprocessableContent
from gateway.pipeline import UploadTooLargeForChecks
from plugins.scrub.base import (
    HeaderCheck,
    MalformedImage,
    Scrubber,
    ScrubOptions,
    ScrubRefused,
    ScrubResult,
    check_pixels,
    count,
    parse_errors_as_malformed,
)
from plugins.scrub.bmff import (
    Box,
    Cursor,
    fourcc_name,
    fourccs,
    pack_box,
    pack_full_box,
    read_boxes,
)
from plugins.scrub.exif import build_exif, exif_residue, kept_values, read_tiff, removed_tags
from plugins.scrub.heif_meta import (
    Association,
    Meta,
    Reference,
    check_extents,
    item_data,
    parse_meta,
)
from plugins.scrub.icc import profile_residue, sanitize_profile

_IMAGES = fourccs("hvc1 av01 grid iden iovl")
_PROPERTIES = fourccs(
    "hvcC av1C ispe colr pixi irot imir clap pasp rloc lsel a1op a1lx clli mdcv cclv amve"
)
_BRANDS = fourccs(
    "mif1 mif2 msf1 miaf heic heix heim heis hevc hevx avif avis MiHB MiHE MiHA MiPr MA1B MA1A"
)
_TOP_LEVEL = fourccs("ftyp meta mdat")
_CANONICAL_HDLR = pack_full_box(b"hdlr", 0, 0, bytes(4) + b"pict" + bytes(12) + b"\x00")
_ALPHA = (b"urn:mpeg:hevc:2015:auxid:1", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha")
_EXIF_PREFIX = struct.pack(">I", 6) + b"Exif\x00\x00"


def _top_level(data: bytes) -> tuple[Box, Box, list[Box]]:
    boxes = read_boxes(data, 0, len(data))
    if not boxes or boxes[0].type != b"ftyp":
        raise MalformedImage("heif: does not start with ftyp")
    metas = [box for box in boxes if box.type == b"meta"]
    if len(metas) != 1:
        raise MalformedImage(f"heif: {len(metas)} meta boxes")
    if any(box.type == b"moov" for box in boxes):
        raise ScrubRefused("heif: image sequences are not supported")
    return boxes[0], metas[0], boxes


def _brands(data: bytes, ftyp: Box) -> list[bytes]:
    cursor = Cursor(data, ftyp.body, ftyp.end)
    brands = [cursor.take(4)]
    cursor.take(4)  # minor version
    while cursor.pos < cursor.end:
        brands.append(cursor.take(4))
    return brands


def _fresh_ftyp(data: bytes, ftyp: Box) -> bytes:
    brands = [brand for brand in _brands(data, ftyp) if brand in _BRANDS]
    if not brands:
        raise ScrubRefused("heif: no known HEIF brand")
    compatible = list(dict.fromkeys([*brands, b"mif1"]))
    return pack_box(b"ftyp", brands[0] + bytes(4) + b"".join(compatible))


def _kept_items(meta: Meta) -> list[int]:
    """The primary item and, transitively, the items it is derived from."""
    kept = [meta.primary]
    for item_id in kept:  # grows while iterating: a breadth-first walk
        for ref in meta.refs:
            if ref.type == b"dimg" and ref.source == item_id:
                kept.extend(t for t in ref.targets if t not in kept)
    for item_id in kept:
        item = meta.items.get(item_id)
        if item is None:
            raise MalformedImage(f"heif: item {item_id} is referenced but not declared")
        if item.type not in _IMAGES:
            raise ScrubRefused(f"heif: kept item {item_id} is not an image")
    return kept


def _removed_item_name(meta: Meta, item_id: int) -> str:
    item = meta.items[item_id]
    roles = {ref.type for ref in meta.refs if ref.source == item_id}
    if b"thmb" in roles:
        return "item:thumbnail"
    if b"auxl" in roles:
        return "item:auxiliary-image"
    if item.type == b"mime":
        return "item:XMP" if b"rdf+xml" in item.content_type else "item:mime"
    known = {b"Exif": "Exif", b"uri ": "uri", b"tmap": "tone-map"}
    return "item:" + known.get(item.type, "image" if item.type in _IMAGES else "other")


def _refuse_alpha(data: bytes, meta: Meta, kept: list[int]) -> None:
    """Dropping an alpha plane would change the image: refuse instead."""
    for ref in meta.refs:
        if ref.type != b"auxl" or not set(ref.targets) & set(kept):
            continue
        for assoc in meta.associations.get(ref.source, []):
            prop = _property(meta, assoc)
            if prop.type != b"auxC":
                continue
            cursor = Cursor(data, prop.body, prop.end)
            cursor.version_flags()
            if cursor.cstring() in _ALPHA:
                raise ScrubRefused("heif: images with an alpha plane are not supported")


def _property(meta: Meta, assoc: Association) -> Box:
    if not 1 <= assoc.index <= len(meta.properties):
        raise MalformedImage(f"heif: property index {assoc.index} out of range")
    return meta.properties[assoc.index - 1]


def _kept_properties(
    data: bytes, meta: Meta, kept: list[int], options: ScrubOptions, removed: dict[str, int]
) -> tuple[list[Box], dict[int, list[Association]]]:
    """Allowed properties of kept items, renumbered; bombs refused via ``ispe``."""
    boxes: list[Box] = []
    numbering: dict[int, int] = {}
    associations: dict[int, list[Association]] = {}
    for item_id in kept:
        mine = associations.setdefault(item_id, [])
        for assoc in meta.associations.get(item_id, []):
            prop = _property(meta, assoc)
            if prop.type not in _PROPERTIES:
                if assoc.essential:
                    raise ScrubRefused(f"heif: unknown essential property on item {item_id}")
                count(removed, "property:" + ("udes" if prop.type == b"udes" else "other"))
                continue
            if prop.type == b"ispe":
                size = Cursor(data, prop.body + 4, prop.end)
                check_pixels(size.uint(4), size.uint(4), options, "heif")
            if assoc.index not in numbering:
                boxes.append(prop)
                numbering[assoc.index] = len(boxes)
            mine.append(Association(assoc.essential, numbering[assoc.index]))
    if not any(p.type == b"ispe" for p in boxes):
        raise MalformedImage("heif: no image size (ispe) property")
    return boxes, associations


@dataclass(frozen=True)
class _OutItem:
    """An item of the rewritten file; ``data`` None: the input's own extents, copied."""

    id: int
    type: bytes
    hidden: bool
    size: int
    data: bytes | None = None


def _primary_exif(meta: Meta) -> int | None:
    """The id of the Exif item describing the primary image, if any."""
    for ref in meta.refs:
        item = meta.items.get(ref.source)
        if ref.type == b"cdsc" and meta.primary in ref.targets and item and item.type == b"Exif":
            return item.id
    return None


def _capture_date(
    data: bytes, meta: Meta, options: ScrubOptions, removed: dict[str, int]
) -> bytes | None:
    """DateTimeOriginal from the primary item's Exif, if the policy keeps it."""
    exif_id = _primary_exif(meta)
    if exif_id is None:
        return None
    layout = read_tiff(_exif_tiff(item_data(data, meta, exif_id)))
    _, date = kept_values(layout, options)
    for name in removed_tags(layout, None, date):
        count(removed, name)
    return date


def _exif_tiff(payload: bytes) -> bytes:
    """The TIFF inside a HEIF Exif item: a 4-byte offset, then (Exif\\0\\0) TIFF."""
    offset = int.from_bytes(payload[:4], "big")
    if len(payload) < 4 + offset or payload[4 : 4 + offset] not in (b"", b"Exif\x00\x00"):
        raise MalformedImage("heif: bad Exif item header")
    return payload[4 + offset :]


def _iinf(items: list[_OutItem]) -> bytes:
    entries = b"".join(
        pack_full_box(b"infe", 2, int(i.hidden), struct.pack(">HH", i.id, 0) + i.type + b"\x00")
        for i in items
    )  # version 2: 16-bit ids, no protection, empty names
    return pack_full_box(b"iinf", 0, 0, struct.pack(">H", len(items)) + entries)


def _iloc(items: list[_OutItem], base: int) -> bytes:
    """Version 0, 4-byte offsets and lengths, one extent per item from ``base`` on."""
    locations, offset = [], base
    for item in items:
        locations.append(struct.pack(">HHHII", item.id, 0, 1, offset, item.size))
        offset += item.size
    head = b"\x44\x00" + struct.pack(">H", len(items))
    return pack_full_box(b"iloc", 0, 0, head + b"".join(locations))


def _iref(refs: list[Reference]) -> bytes:
    return pack_full_box(b"iref", 0, 0, b"".join(
        pack_box(r.type, struct.pack(f">HH{len(r.targets)}H", r.source, len(r.targets), *r.targets))
        for r in refs
    ))  # fmt: skip


def _meta_box(
    data: bytes, meta: Meta, items: list[_OutItem], refs: list[Reference],
    props: list[Box], assoc: dict[int, list[Association]], base: int,
) -> bytes:  # fmt: skip
    """A canonical meta box whose item data starts at file offset ``base``."""
    if max(item.id for item in items) > 0xFFFF or base + sum(i.size for i in items) >> 32:
        raise ScrubRefused("heif: item ids or sizes beyond the canonical layout")
    pitm = pack_full_box(b"pitm", 0, 0, struct.pack(">H", meta.primary))
    ipco = pack_box(b"ipco", b"".join(_clean_property(data, p)[0] for p in props))
    iprp = pack_box(b"iprp", ipco + _ipma(assoc, len(props)))
    body = _CANONICAL_HDLR + pitm + _iloc(items, base) + _iinf(items) + _iref(refs) + iprp
    return pack_full_box(b"meta", 0, 0, body)


def _icc_of(data: bytes, prop: Box) -> bytes | None:
    """The ICC profile a ``colr`` property carries, if any."""
    if prop.type == b"colr" and data[prop.body : prop.body + 4] in (b"prof", b"rICC"):
        return data[prop.body + 4 : prop.end]
    return None


def _clean_property(data: bytes, prop: Box) -> tuple[bytes, dict[str, int]]:
    """A kept property's bytes, an ICC profile reduced to its colour data
    (plugins/scrub/icc.py), and what that removed."""
    profile = _icc_of(data, prop)
    if profile is None:
        return data[prop.start : prop.end], {}
    clean = sanitize_profile(profile)
    return pack_box(b"colr", data[prop.body : prop.body + 4] + clean.data), clean.removed


def _ipma(assoc: dict[int, list[Association]], n_props: int) -> bytes:
    wide = n_props > 127
    shift, fmt = (15, ">H") if wide else (7, ">B")
    entries = [
        struct.pack(">HB", item_id, len(found))
        + b"".join(struct.pack(fmt, (a.essential << shift) | a.index) for a in found)
        for item_id, found in assoc.items()
        if found
    ]
    return pack_full_box(b"ipma", 0, int(wide), struct.pack(">I", len(entries)) + b"".join(entries))


def _kept_names(data: bytes, props: list[Box], date: bytes | None) -> tuple[str, ...]:
    kept = ["image"]
    if any(_icc_of(data, p) is not None for p in props):
        kept.append("icc-profile")
    if any(p.type in (b"irot", b"imir") for p in props):
        kept.append("orientation")
    return (*kept, *["DateTimeOriginal"] * bool(date))


def _count_dropped(meta: Meta, boxes: list[Box], kept: list[int], removed: dict[str, int]) -> None:
    exif_id = _primary_exif(meta)  # its tags are counted one by one instead
    for item_id in meta.items:
        if item_id not in kept and item_id != exif_id:
            count(removed, _removed_item_name(meta, item_id))
    for box in boxes:
        if box.type not in _TOP_LEVEL:
            count(removed, "box:" + ("uuid" if box.type == b"uuid" else "other"))
    for other in meta.others:
        count(removed, "meta:" + ("grpl" if other == b"grpl" else "other"))


def _uncovered(boxes: list[Box], meta: Meta) -> bool:
    """Does any mdat byte lie outside every item extent (method 0)?"""
    spans = sorted((o, o + n) for ext in meta.extents.values() for m, o, n in ext if m == 0)
    for box in (b for b in boxes if b.type == b"mdat"):
        pos = box.body
        for start, end in spans:
            if start > pos and start < box.end:
                return True
            pos = max(pos, end) if start <= pos else pos
        if pos < box.end:
            return True
    return False


def check_structure(data: bytes) -> None:
    """A complete HEIF without decoding it; MalformedImage otherwise.

    The top-level boxes fill the file exactly (none cut short, nothing but
    boxes), there is one ``meta`` of handler ``pict`` whose primary item is
    declared, and every item's data lies inside the file (or its ``idat``).
    """
    _, meta_box, _ = _top_level(data)
    meta = parse_meta(data, meta_box)
    if meta.handler != b"pict":
        raise MalformedImage("heif: meta handler is not 'pict'")
    check_extents(len(data), meta)


@dataclass(frozen=True)
class _Plan:
    """The rewritten file's head (ftyp, meta, mdat header) and its items in order."""

    head: bytes
    items: list[_OutItem]
    kept: tuple[str, ...]


def _plan(data: bytes, ftyp: Box, meta: Meta, boxes: list[Box], options: ScrubOptions,
          removed: dict[str, int]) -> _Plan:  # fmt: skip
    """The rewrite, from the bytes up to the metadata items' end (``data``), of a
    file whose top-level ``boxes`` are known (on a stream: those before its mdat)."""
    if meta.handler != b"pict":
        raise MalformedImage("heif: meta handler is not 'pict'")
    kept = _kept_items(meta)
    _refuse_alpha(data, meta, kept)
    props, assoc = _kept_properties(data, meta, kept, options, removed)
    for prop in props:
        for name, n in _clean_property(data, prop)[1].items():
            count(removed, name, n)
    _count_dropped(meta, boxes, kept, removed)
    items = [
        _OutItem(
            i,
            meta.items[i].type,
            meta.items[i].hidden,
            sum(n for _, _, n in meta.extents.get(i, [])),
        )
        for i in kept
    ]
    refs = [r for r in meta.refs if r.type == b"dimg" and r.source in kept]
    date = _capture_date(data, meta, options, removed)
    if date:
        exif = _EXIF_PREFIX + (build_exif(None, date) or b"")
        items.append(_OutItem(max(kept) + 1, b"Exif", True, len(exif), exif))
        refs.append(Reference(b"cdsc", max(kept) + 1, (meta.primary,)))
    ftyp_out = _fresh_ftyp(data, ftyp)
    base = len(ftyp_out) + len(_meta_box(data, meta, items, refs, props, assoc, 0)) + 8
    head = ftyp_out + _meta_box(data, meta, items, refs, props, assoc, base)
    head += struct.pack(">I4s", 8 + sum(item.size for item in items), b"mdat")
    return _Plan(head, items, _kept_names(data, props, date))


def _residue(data: bytes, ftyp: Box, boxes: list[Box], meta: Meta, options: ScrubOptions,
             exif: Callable[[], bytes]) -> list[str]:  # fmt: skip
    """What a file holds outside the allowlist: ``data`` holds its head (up to its
    mdat), ``boxes`` are all its top-level boxes, ``exif`` the primary's Exif item."""
    found = [f"box:{fourcc_name(b.type)}" for b in boxes if b.type not in _TOP_LEVEL]
    found += ["ftyp:brand" for brand in _brands(data, ftyp) if brand not in _BRANDS]
    found += ["meta:hdlr"] * (meta.hdlr_raw != _CANONICAL_HDLR)
    found += [f"meta:{fourcc_name(other)}" for other in meta.others]
    found += [f"iref:{fourcc_name(r.type)}" for r in meta.refs if r.type not in (b"dimg", b"cdsc")]
    found += [
        f"property:{fourcc_name(p.type)}" for p in meta.properties if p.type not in _PROPERTIES
    ]
    found += ["mdat:unreferenced-bytes"] * _uncovered(boxes, meta)
    for prop in meta.properties:
        profile = _icc_of(data, prop)
        found += profile_residue(profile) if profile is not None else []
    reachable = _kept_items(meta)
    for item in meta.items.values():
        if item.named:
            found.append("item:name")
        if item.id in reachable:
            continue
        if item.id == _primary_exif(meta):
            found += exif_residue(_exif_tiff(exif()), options)
        else:
            found.append(_removed_item_name(meta, item.id))
    return found


# How much of a streamed HEIF may be held before its rewritten head can go out:
# ftyp, meta and the metadata items it keeps a date from (an iPhone's Exif item
# is the first thing in its mdat, within the first 64 KiB).  Far above that, far
# below what a whole-file upload may hold in memory.
HEAD_LIMIT = 4 * 1024 * 1024


class _Head:
    """The front of a streamed HEIF, held until its top-level boxes up to the mdat's
    header are in and its meta parses; then ``meta``, ``mdat`` and ``boxes`` are set."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.boxes: list[Box] = []
        self.meta: Meta | None = None
        self.meta_box: Box | None = None
        self.mdat: Box | None = None
        self.pos = 0  # where the next top-level box header starts

    def add(self, data: bytes) -> bool:
        """Take the next piece; whether the head up to the mdat's header is complete."""
        self.buf += data
        while self.mdat is None and self.pos + 8 <= len(self.buf):
            if not self._next_box():
                break
        if self.mdat is not None and self.meta is None and self.meta_box is not None:
            self.meta = parse_meta(bytes(self.buf[: self.mdat.start]), self.meta_box)
        return self.meta is not None  # no meta before the mdat: held whole

    def _next_box(self) -> bool:
        header = _box_header(self.buf, self.pos)
        if header is None:
            return False
        btype, body, size = header
        end = None if size == 0 else self.pos + size
        if btype == b"mdat":
            self.mdat = Box(btype, self.pos, body, end if end is not None else -1)
            _judge_top_level(self.mdat, self.boxes)
            return True
        if end is None or end > len(self.buf):
            return False
        box = Box(btype, self.pos, body, end)
        _judge_top_level(box, self.boxes)
        self.boxes.append(box)
        if btype == b"meta":
            self.meta_box = box
        self.pos = end
        return True


def _box_header(buf: bytes | bytearray, pos: int) -> tuple[bytes, int, int] | None:
    """(type, body offset, size; 0: to the end) of the box at ``pos``, None if not all in."""
    if pos + 8 > len(buf):
        return None
    size, btype = struct.unpack(">I4s", buf[pos : pos + 8])
    if size == 1:
        if pos + 16 > len(buf):
            return None
        (size,) = struct.unpack(">Q", buf[pos + 8 : pos + 16])
        body = pos + 16
    else:
        body = pos + 8
    if size != 0 and size < body - pos:
        raise MalformedImage(f"bmff: box {btype!r} at {pos} has bad size {size}")
    return btype, body, size


def _judge_top_level(box: Box, before: list[Box]) -> None:
    """The checks of :func:`_top_level`, one box at a time as a stream brings them."""
    if not before and box.type != b"ftyp":
        raise MalformedImage("heif: does not start with ftyp")
    if box.type == b"meta" and any(b.type == b"meta" for b in before):
        raise MalformedImage("heif: 2 meta boxes")
    if box.type == b"moov":
        raise ScrubRefused("heif: image sequences are not supported")


class _Tail:
    """The top-level boxes after a stream's first mdat: headers read, bodies skipped."""

    def __init__(self, at: int, before: list[Box]) -> None:
        self.at = at  # the file offset of the next byte
        self.boxes = before
        self._header = bytearray()
        self._skip = 0
        self._to_end = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._to_end or self._skip:
                n = len(view) if self._to_end else min(self._skip, len(view))
                self._skip -= 0 if self._to_end else n
                self.at, view = self.at + n, view[n:]
                continue
            wide = len(self._header) >= 4 and self._header[:4] == b"\0\0\0\1"
            n = min((16 if wide else 8) - len(self._header), len(view))
            self._header += view[:n]
            view = view[n:]
            if len(self._header) == 8 and self._header[:4] == b"\0\0\0\1":
                continue  # a largesize follows
            header = _box_header(self._header, 0)
            if header is None:
                continue
            self._open(*header)

    def _open(self, btype: bytes, body: int, size: int) -> None:
        start = self.at  # ``at`` moves past a header only once it is read whole
        box = Box(btype, start, start + body, start + size if size else -1)
        _judge_top_level(box, self.boxes)
        self.boxes.append(box)
        self.at += body
        self._skip, self._to_end = max(size - body, 0), size == 0
        self._header = bytearray()

    def finish(self) -> list[Box]:
        if self._header or self._skip:
            raise MalformedImage("heif: a top-level box is cut short")
        return [b if b.end >= 0 else Box(b.type, b.start, b.body, self.at) for b in self.boxes]


Span = tuple[int, int] | bytes  # a range of the file, or bytes already at hand


class _Router:
    """A streamed file from its mdat's body on: the bytes of ``spans`` (in file order)
    handed out as they pass, the boxes after the mdat walked."""

    def __init__(self, spans: list[Span], before: list[Box], mdat: Box) -> None:
        self._spans = spans
        self._mdat = mdat
        self._at = mdat.body
        self._before = len(before)
        self._tail = _Tail(mdat.end, [*before, mdat])  # a second meta after it is refused

    def feed(self, data: bytes) -> list[bytes]:
        start, out = self._at, []
        mdat_end = self._mdat.end
        inside = len(data) if mdat_end < 0 else max(0, min(len(data), mdat_end - start))
        end = start + inside
        while self._spans:
            span = self._spans[0]
            if isinstance(span, tuple):
                if span[0] >= end:
                    break
                out.append(data[max(span[0], start) - start : min(span[1], end) - start])
                if span[1] > end:
                    break
            else:
                out.append(span)
            self._spans.pop(0)
        self._at = end
        if inside < len(data):
            self._tail.feed(data[inside:])
        return out

    def finish(self) -> list[Box]:
        """The top-level boxes from the mdat on; MalformedImage if the file is cut short."""
        if self._mdat.end >= 0 and self._at < self._mdat.end:
            raise MalformedImage("heif: the mdat is cut short")
        if any(isinstance(span, tuple) for span in self._spans):
            raise MalformedImage("heif: item data lies outside the file")
        boxes = self._tail.finish()[self._before :]
        if self._mdat.end < 0:
            boxes[0] = Box(b"mdat", self._mdat.start, self._mdat.body, self._at)
        return boxes


def _exif_end(meta: Meta) -> int:
    """Where the primary's Exif item ends in the file (0: none, or in the meta)."""
    exif = _primary_exif(meta)
    extents = meta.extents.get(exif, []) if exif is not None else []
    return max((offset + length for method, offset, length in extents if method == 0), default=0)


def _stream_order(data: bytes, meta: Meta, kept: list[int], mdat: Box) -> list[Span] | None:
    """The kept items' extents in output order (idat ones as bytes); None if their
    file extents are not in file order inside the mdat."""
    spans: list[Span] = []
    pos = mdat.body
    for item_id in kept:
        if item_id not in meta.extents:
            raise MalformedImage(f"heif: item {item_id} has no location")
        for method, offset, length in meta.extents[item_id]:
            if method == 1:
                spans.append(item_data(data, meta, item_id))
                break  # item_data joined every extent of the item
            if offset < pos or (mdat.end >= 0 and offset + length > mdat.end):
                return None
            spans.append((offset, offset + length))
            pos = offset + length
    return spans


def _held(buf: bytearray) -> None:
    if len(buf) > HEAD_LIMIT:
        raise UploadTooLargeForChecks.by("scrub", "heif: metadata items beyond the streamed head")


class HeifScrubStream:
    """The scrub of one HEIF as it streams (:class:`~plugins.scrub.base.ScrubStream`).

    Held until the head (ftyp, meta) and the Exif item the capture date comes
    from are in (at most :data:`HEAD_LIMIT`); then the rewritten head goes out and
    the kept items' bytes are passed on as they come, everything else dropped.  A
    file whose kept items are not in file order inside its mdat is held whole (up
    to the same limit) and scrubbed as a whole file.
    """

    def __init__(self, options: ScrubOptions) -> None:
        self.removed: dict[str, int] = {}
        self.kept: tuple[str, ...] = ()
        self.changed = True  # a HEIF is always rewritten (a fresh ftyp, meta and mdat)
        self._options = options
        self._head = _Head()
        self._whole = False
        self._router: _Router | None = None

    def feed(self, data: bytes) -> bytes:
        if self._router is not None:
            return b"".join(self._router.feed(data))
        if self._whole or not self._head.add(data):
            _held(self._head.buf)
            return b""
        return self._start()

    def _start(self) -> bytes:
        head, meta, mdat = self._head, self._head.meta, self._head.mdat
        assert meta is not None and mdat is not None
        if _exif_end(meta) > len(head.buf):
            _held(head.buf)
            return b""
        data = bytes(head.buf)
        spans = _stream_order(data, meta, _kept_items(meta), mdat)
        if spans is None:
            self._whole = True
            _held(head.buf)
            return b""
        plan = _plan(data, head.boxes[0], meta, head.boxes, self._options, self.removed)
        self.kept = plan.kept
        fresh = [item.data for item in plan.items if item.data is not None]
        self._router = _Router([*spans, *fresh], head.boxes, mdat)
        head.buf = bytearray()
        return plan.head + b"".join(self._router.feed(data[mdat.body :]))

    def finish(self) -> bytes:
        if self._router is None:
            result = HeifScrubber().scrub(bytes(self._head.buf), self._options)
            self.removed, self.kept = result.removed, result.kept
            return result.data
        for box in self._router.finish()[1:]:
            if box.type not in _TOP_LEVEL:
                count(self.removed, "box:" + ("uuid" if box.type == b"uuid" else "other"))
        return b""


class _PassedOn:
    """A check of a streamed HEIF that passes every byte on unchanged: the head held
    until its meta parses (at most :data:`HEAD_LIMIT`), then what follows routed by
    the :class:`_Router` that :meth:`_routing` makes, each picked piece to :meth:`_take`."""

    def __init__(self) -> None:
        self._head = _Head()
        self._router: _Router | None = None

    def feed(self, data: bytes) -> bytes:
        if self._router is not None:
            self._route(data)
        elif self._head.add(data):
            head, meta, mdat = self._head, self._head.meta, self._head.mdat
            assert meta is not None and mdat is not None
            self._router = self._routing(meta, mdat)
            rest = bytes(head.buf[mdat.body :])
            head.buf = bytearray()
            self._route(rest)
        else:
            _held(self._head.buf)
        return data

    def _route(self, data: bytes) -> None:
        assert self._router is not None
        for piece in self._router.feed(data):
            self._take(piece)

    def _routing(self, meta: Meta, mdat: Box) -> _Router:
        """The router for what follows the mdat's header, once the head is judged."""
        raise NotImplementedError

    def _take(self, piece: bytes) -> None:
        """A piece of a span :meth:`_routing` named (a check that names none takes none)."""


class HeifResidue(_PassedOn):
    """The allowlist checked again on a HEIF as it streams
    (:class:`~plugins.scrub.base.ResidueStream`): the head held, the primary's Exif
    item picked out of the mdat, the rest passed on."""

    def __init__(self, options: ScrubOptions) -> None:
        super().__init__()
        self._options = options
        self._exif = bytearray()
        self._data = b""

    def _routing(self, meta: Meta, mdat: Box) -> _Router:
        exif = _primary_exif(meta)
        extents = meta.extents.get(exif, []) if exif is not None else []
        if sum(n for _, _, n in extents) > HEAD_LIMIT:
            raise ScrubRefused("heif: an Exif item too large to check")
        self._data = bytes(self._head.buf[: mdat.body])
        spans: list[Span] = [(o, o + n) for m, o, n in extents if m == 0]
        if any(m == 1 for m, _, _ in extents):
            spans = [item_data(self._data, meta, exif or 0)]
        if spans != sorted(spans):
            raise ScrubRefused("heif: an Exif item's extents out of file order")
        return _Router(spans, self._head.boxes, mdat)

    def _take(self, piece: bytes) -> None:
        self._exif += piece

    def finish(self) -> list[str]:
        if self._router is None:
            return HeifScrubber().residue(bytes(self._head.buf), self._options)
        after = self._router.finish()
        meta = self._head.meta
        assert meta is not None
        exif = bytes(self._exif)
        return _residue(self._data, self._head.boxes[0], [*self._head.boxes, *after], meta,
                        self._options, lambda: exif)  # fmt: skip


class HeifStructure(_PassedOn):
    """:func:`check_structure` on a stream (every byte passed on unchanged): the head
    held until its meta parses (at most :data:`HEAD_LIMIT`), the primary image's size
    judged from its ``ispe``, then the top-level boxes walked to the end."""

    def __init__(self, on_header: HeaderCheck | None = None, walk: object | None = None) -> None:
        super().__init__()
        self._on_header = on_header
        self._meta: Meta | None = None

    def _routing(self, meta: Meta, mdat: Box) -> _Router:
        if meta.handler != b"pict":
            raise MalformedImage("heif: meta handler is not 'pict'")
        if self._on_header is not None:
            self._on_header(_primary_size(bytes(self._head.buf[: mdat.body]), meta), "RGB")
        self._meta = meta
        return _Router([], self._head.boxes, mdat)  # no item picked: only boxes walked

    def finish(self) -> bytes:
        if self._router is None:
            check_structure(bytes(self._head.buf))
            return b""
        boxes = self._router.finish()
        assert self._meta is not None
        check_extents(boxes[-1].end, self._meta)
        return b""


def _primary_size(data: bytes, meta: Meta) -> tuple[int, int]:
    """The primary image's width and height, from its ``ispe`` property."""
    for assoc in meta.associations.get(meta.primary, []):
        prop = _property(meta, assoc)
        if prop.type == b"ispe":
            size = Cursor(data, prop.body + 4, prop.end)
            return size.uint(4), size.uint(4)
    raise MalformedImage("heif: no image size (ispe) property")


def streams_from(head: bytes) -> bool:
    """Whether a HEIF starting with ``head`` can be checked and scrubbed as a stream:
    its meta is before its mdat, within ``head``, its kept items are in file order and
    its Exif item ends within :data:`HEAD_LIMIT`.  Otherwise it is held whole (below
    ``limits.max_upload_bytes``; above, refused 413)."""
    found = _Head()
    try:
        with parse_errors_as_malformed("heif"):
            if not found.add(head):
                return False
            meta, mdat = found.meta, found.mdat
            assert meta is not None and mdat is not None
            order = _stream_order(head, meta, _kept_items(meta), mdat)
    except UnprocessableContent:
        return False  # judged (and refused) whole
    return order is not None and _exif_end(meta) <= HEAD_LIMIT


class HeifScrubber(Scrubber):
    """HEIF/HEIC/AVIF stills; lossless item rewrite (see module docstring)."""

    format_name: ClassVar[str] = "heif"

    def scrub_stream(
        self,
        options: ScrubOptions,
        trailing: Callable[[bytes], None],
        walk: object | None = None,
    ) -> HeifScrubStream:
        return HeifScrubStream(options)

    def residue_stream(self, options: ScrubOptions) -> HeifResidue:
        return HeifResidue(options)

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        ftyp, meta_box, boxes = _top_level(data)
        meta = parse_meta(data, meta_box)
        removed: dict[str, int] = {}
        plan = _plan(data, ftyp, meta, boxes, options, removed)
        body = b"".join(
            item.data if item.data is not None else item_data(data, meta, item.id)
            for item in plan.items
        )
        return ScrubResult(plan.head + body, removed, plan.kept)

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        ftyp, meta_box, boxes = _top_level(data)
        meta = parse_meta(data, meta_box)
        exif = _primary_exif(meta)
        return _residue(data, ftyp, boxes, meta, options, lambda: item_data(data, meta, exif or 0))
