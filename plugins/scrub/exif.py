"""TIFF/EXIF structure: a bounded IFD reader and the minimal-EXIF writer.

EXIF is a TIFF structure, so the TIFF, JPEG, PNG, WebP and HEIF scrubbers all
read it here.  :func:`read_tiff` walks IFD0, the IFD chain and the EXIF, GPS,
Interop and SubIFD pointers, checking every offset, count and size against
the data; an IFD loop, an offset outside the data, an unknown value type or
an absurd entry count raises MalformedImage (BigTIFF raises ScrubRefused).  It never reads MakerNote
contents (an opaque blob to us).

What survives of EXIF anywhere is built fresh by :func:`build_exif`:
Orientation (1..8) in IFD0 and, if the policy keeps the capture date,
DateTimeOriginal in the EXIF IFD, in a canonical little-endian layout.
:func:`exif_residue` accepts exactly that canonical layout and nothing else.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from PIL.ExifTags import GPSTAGS, TAGS

from plugins.scrub.base import MalformedImage, ScrubOptions, ScrubRefused, count

ORIENTATION = 0x0112
EXIF_POINTER = 0x8769
DATE_TIME_ORIGINAL = 0x9003
_POINTERS = {EXIF_POINTER: "exif", 0x8825: "gps", 0xA005: "interop", 0x014A: "subifd"}
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_MAX_ENTRIES = 1024  # real IFDs hold tens of tags; more is a "huge tag count"
_MAX_IFDS = 64
_DATE = re.compile(rb"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d\x00")


@dataclass(frozen=True)
class Entry:
    """One IFD entry with its raw value bytes (in the file's byte order)."""

    tag: int
    type: int
    count: int
    value: bytes


@dataclass(frozen=True)
class Ifd:
    """One IFD: ``name`` is ifd0, ifd1..., exif, gps, interop or subifd."""

    name: str
    entries: dict[int, Entry]


@dataclass(frozen=True)
class TiffLayout:
    """Byte order (``<`` or ``>``) and every IFD reachable from the header."""

    order: str
    ifds: tuple[Ifd, ...]

    def ifd(self, name: str) -> Ifd | None:
        return next((ifd for ifd in self.ifds if ifd.name == name), None)

    def uint(self, entry: Entry) -> int | None:
        """The value of a single SHORT/LONG entry, else None."""
        if entry.count != 1 or entry.type not in (3, 4, 13):
            return None
        return struct.unpack(self.order + ("H" if entry.type == 3 else "I"), entry.value)[0]


def read_tiff(data: bytes) -> TiffLayout:
    """Parse the IFD structure of a TIFF/EXIF blob; MalformedImage if unsound."""
    if data[:4] == b"II*\x00":
        order = "<"
    elif data[:4] == b"MM\x00*":
        order = ">"
    elif data[:4] in (b"II+\x00", b"MM\x00+"):
        raise ScrubRefused("tiff: BigTIFF is not supported")
    else:
        raise MalformedImage("tiff: bad TIFF/EXIF header")
    pending = [("ifd0", struct.unpack(order + "I", data[4:8])[0])]
    seen: set[int] = set()
    ifds: list[Ifd] = []
    chain = 0
    while pending:
        name, offset = pending.pop(0)
        if offset in seen:
            raise MalformedImage(f"tiff: IFD loop at offset {offset}")
        if len(seen) >= _MAX_IFDS:
            raise MalformedImage("tiff: too many IFDs")
        seen.add(offset)
        entries, next_offset = _read_ifd(data, offset, order)
        ifds.append(Ifd(name, entries))
        pending.extend(_sub_ifds(entries, order))
        if name.startswith("ifd") and next_offset:
            chain += 1
            pending.append((f"ifd{chain}", next_offset))
    return TiffLayout(order, tuple(ifds))


def _read_ifd(data: bytes, offset: int, order: str) -> tuple[dict[int, Entry], int]:
    if offset < 8 or offset + 2 > len(data):
        raise MalformedImage(f"tiff: IFD offset {offset} outside the data")
    (n,) = struct.unpack(order + "H", data[offset : offset + 2])
    if n > _MAX_ENTRIES:
        raise MalformedImage(f"tiff: IFD with {n} entries")
    end = offset + 2 + 12 * n
    if end + 4 > len(data):
        raise MalformedImage("tiff: IFD runs past the end of the data")
    entries: dict[int, Entry] = {}
    for pos in range(offset + 2, end, 12):
        tag, typ, count = struct.unpack(order + "HHI", data[pos : pos + 8])
        if typ not in _TYPE_SIZES:
            raise MalformedImage(f"tiff: tag {tag:#x} has unknown type {typ}")
        size = _TYPE_SIZES[typ] * count
        if size > len(data):
            raise MalformedImage(f"tiff: tag {tag:#x} claims {count} values")
        where = pos + 8
        if size > 4:
            (where,) = struct.unpack(order + "I", data[pos + 8 : pos + 12])
            if where + size > len(data):
                raise MalformedImage(f"tiff: tag {tag:#x} value outside the data")
        entries[tag] = Entry(tag, typ, count, data[where : where + size])
    return entries, struct.unpack(order + "I", data[end : end + 4])[0]


def _sub_ifds(entries: dict[int, Entry], order: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for tag, name in _POINTERS.items():
        entry = entries.get(tag)
        if entry is None:
            continue
        if entry.type not in (4, 13):
            raise MalformedImage(f"tiff: pointer tag {tag:#x} has type {entry.type}")
        found.extend((name, off) for off in struct.unpack(f"{order}{entry.count}I", entry.value))
    return found


def tag_name(ifd_name: str, tag: int) -> str:
    """A readable name for counting removals: ``gps:GPSLatitude``, ``ifd0:Make``."""
    table = GPSTAGS if ifd_name == "gps" else TAGS
    return f"{ifd_name}:{table.get(tag, f'{tag:#06x}')}"


def kept_values(layout: TiffLayout, options: ScrubOptions) -> tuple[int | None, bytes | None]:
    """The Orientation (1..8) and DateTimeOriginal worth keeping, if valid."""
    orientation = None
    ifd0 = layout.ifd("ifd0")
    if ifd0 is not None and ORIENTATION in ifd0.entries:
        value = layout.uint(ifd0.entries[ORIENTATION])
        orientation = value if value is not None and 1 <= value <= 8 else None
    date = None
    exif = layout.ifd("exif")
    if options.keep_capture_date and exif is not None and DATE_TIME_ORIGINAL in exif.entries:
        entry = exif.entries[DATE_TIME_ORIGINAL]
        # Only a well-formed date is kept: the field must not carry free text.
        if entry.type == 2 and _DATE.fullmatch(entry.value):
            date = entry.value
    return orientation, date


def removed_tags(layout: TiffLayout, orientation: int | None, date: bytes | None) -> list[str]:
    """Names of every tag that the minimal EXIF does not carry over."""
    kept = {("ifd0", ORIENTATION)} if orientation else set()
    if date:
        kept |= {("ifd0", EXIF_POINTER), ("exif", DATE_TIME_ORIGINAL)}
    return [
        tag_name(ifd.name, tag)
        for ifd in layout.ifds
        for tag in ifd.entries
        if (ifd.name, tag) not in kept
    ]


def build_exif(orientation: int | None, date: bytes | None) -> bytes | None:
    """A fresh little-endian TIFF blob holding only what is given, or None."""
    ifd0: list[bytes] = []
    if orientation:
        ifd0.append(struct.pack("<HHIHH", ORIENTATION, 3, 1, orientation, 0))
    if date:
        exif_at = 8 + 2 + 12 * (len(ifd0) + 1) + 4
        ifd0.append(struct.pack("<HHII", EXIF_POINTER, 4, 1, exif_at))
    if not ifd0:
        return None
    blob = b"II*\x00" + struct.pack("<IH", 8, len(ifd0)) + b"".join(ifd0) + b"\x00" * 4
    if date:
        date_at = len(blob) + 2 + 12 + 4
        blob += struct.pack("<HHHII", 1, DATE_TIME_ORIGINAL, 2, len(date), date_at)
        blob += b"\x00" * 4 + date
    return blob


def minimal_exif(
    tiff: bytes, options: ScrubOptions, removed: dict[str, int]
) -> tuple[bytes | None, list[str]]:
    """The minimal EXIF rebuilt from ``tiff`` (None: nothing worth keeping), every tag
    it drops counted in ``removed``, and the names of what it keeps."""
    layout = read_tiff(tiff)
    orientation, date = kept_values(layout, options)
    for name in removed_tags(layout, orientation, date):
        count(removed, name)
    kept = ["orientation"] * bool(orientation) + ["DateTimeOriginal"] * bool(date)
    return build_exif(orientation, date), kept


def exif_residue(blob: bytes, options: ScrubOptions) -> list[str]:
    """Everything in ``blob`` beyond the canonical minimal EXIF for ``options``."""
    layout = read_tiff(blob)
    orientation, date = kept_values(layout, options)
    found = removed_tags(layout, orientation, date)
    if not found and blob != build_exif(orientation, date):
        found.append("exif:non-canonical-layout")
    return found


def strip_exif_prefix(payload: bytes) -> bytes:
    """PNG eXIf and WebP EXIF should hold bare TIFF; some writers prefix Exif\\0\\0."""
    return payload[6:] if payload.startswith(b"Exif\x00\x00") else payload
