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
"""

from __future__ import annotations

import struct
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
    id: int
    type: bytes
    hidden: bool
    data: bytes


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
        locations.append(struct.pack(">HHHII", item.id, 0, 1, offset, len(item.data)))
        offset += len(item.data)
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
    if max(item.id for item in items) > 0xFFFF or base + sum(len(i.data) for i in items) >> 32:
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


class HeifScrubber(Scrubber):
    """HEIF/HEIC/AVIF stills; lossless item rewrite (see module docstring)."""

    format_name: ClassVar[str] = "heif"

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        ftyp, meta_box, boxes = _top_level(data)
        meta = parse_meta(data, meta_box)
        if meta.handler != b"pict":
            raise MalformedImage("heif: meta handler is not 'pict'")
        removed: dict[str, int] = {}
        kept = _kept_items(meta)
        _refuse_alpha(data, meta, kept)
        props, assoc = _kept_properties(data, meta, kept, options, removed)
        for prop in props:
            for name, n in _clean_property(data, prop)[1].items():
                count(removed, name, n)
        _count_dropped(meta, boxes, kept, removed)
        items = [
            _OutItem(i, meta.items[i].type, meta.items[i].hidden, item_data(data, meta, i))
            for i in kept
        ]
        refs = [r for r in meta.refs if r.type == b"dimg" and r.source in kept]
        date = _capture_date(data, meta, options, removed)
        if date:
            exif_id = max(kept) + 1
            items.append(
                _OutItem(exif_id, b"Exif", True, _EXIF_PREFIX + (build_exif(None, date) or b""))
            )
            refs.append(Reference(b"cdsc", exif_id, (meta.primary,)))
        head = _fresh_ftyp(data, ftyp)
        base = len(head) + len(_meta_box(data, meta, items, refs, props, assoc, 0)) + 8
        out = head + _meta_box(data, meta, items, refs, props, assoc, base)
        out += pack_box(b"mdat", b"".join(item.data for item in items))
        return ScrubResult(out, removed, _kept_names(data, props, date))

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        ftyp, meta_box, boxes = _top_level(data)
        found = [f"box:{fourcc_name(b.type)}" for b in boxes if b.type not in _TOP_LEVEL]
        found += ["ftyp:brand" for brand in _brands(data, ftyp) if brand not in _BRANDS]
        meta = parse_meta(data, meta_box)
        found += ["meta:hdlr"] * (meta.hdlr_raw != _CANONICAL_HDLR)
        found += [f"meta:{fourcc_name(other)}" for other in meta.others]
        found += [
            f"iref:{fourcc_name(r.type)}" for r in meta.refs if r.type not in (b"dimg", b"cdsc")
        ]
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
                found += exif_residue(_exif_tiff(item_data(data, meta, item.id)), options)
            else:
                found.append(_removed_item_name(meta, item.id))
        return found
