"""MP4/MOV (ISO BMFF, QuickTime): an in-place box-level scrub.

Nothing moves: every removed box is overwritten by a ``free`` box of the same
length filled with zeros, so chunk offsets (stco/co64) stay valid and the
media data is copied byte for byte.

Keeps (allowlist), by path: ``ftyp`` (unknown compatible brands overwritten
by the major brand), ``mdat``; in ``moov``: mvhd, iods, and ``trak`` boxes
whose handler is ``vide`` or ``soun``; in such a trak: tkhd, edts, mdia; in
mdia: mdhd, hdlr (its name blanked), minf; in minf: vmhd, smhd, dinf (only
self-contained references), stbl, hdlr (name blanked); in stbl: the sample
tables; in stsd: the sample entries with their codec configuration children
(compressor name blanked).  Bytes past the fields of the fixed-size headers
(mvhd, tkhd, mdhd, vmhd, smhd) are zeroed.  The creation/modification times
in mvhd, tkhd and mdhd are the capture date: zeroed when the policy drops it.
The tkhd matrix (the video's orientation) is kept.

Everything else becomes ``free``: moov/udta (``©xyz`` location, ``©nam``,
``©cmt``... and XMP), moov/meta (``com.apple.quicktime.location.ISO6709``,
make, model...), uuid boxes, tref, every other track (timed metadata and GPS
tracks, ``meta``/``mett``/``gps ``/``camm``/text/timecode), unknown boxes at
any level.  Then every byte of ``mdat`` that no kept sample references (for
example a removed GPS track's samples) is zeroed, and existing free/skip/wide
boxes are zeroed.  Fragmented files (moof/mvex), external data references and
``stz2`` raise ScrubRefused; broken boxes or sample tables raise
MalformedImage.

``residue()`` runs the same allowlist walk over the output in check mode: a
box or byte that a scrub would change is reported instead of changed.
"""

from __future__ import annotations

import itertools
import struct
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
from plugins.scrub.bmff import Box, Cursor, children, fourcc_name, fourccs, read_boxes

_PADDING = fourccs("free skip wide")
_MEDIA_HANDLERS = fourccs("vide soun")
_SAMPLE_TABLES = fourccs(
    "stts ctts cslg stss stps sdtp stsc stsz stco co64 sgpd sbgp subs saiz saio"
)
_ENTRY_CHILDREN = fourccs(
    "avcC hvcC av1C vpcC pasp colr btrt clap fiel gama mdcv clli dvcC dvvC dvwC lhvC "
    "esds dOps dfLa chan wave dac3 dec3 alac SA3D st3d sv3d"
)
_BRANDS = fourccs(
    "isom iso2 iso3 iso4 iso5 iso6 iso7 iso8 iso9 mp41 mp42 avc1 hvc1 hev1 av01 qt M4V M4A "
    "3gp4 3gp5 3gp6 3g2a MSNV dash mp71 dby1 CAEP XAVC"
)
# Payload sizes (version 0, version 1) of fixed-layout header boxes.
_HEADER_SIZES = {b"mvhd": (100, 112), b"tkhd": (84, 96), b"mdhd": (24, 36), b"vmhd": (12, 12),
                 b"smhd": (8, 8)}  # fmt: skip
_TIMED = fourccs("mvhd tkhd mdhd")
# Visual sample entry: 8 bytes SampleEntry + 70 bytes; compressorname at 42..74.
_VISUAL_ENTRY, _COMPRESSOR_NAME = 78, (42, 74)
_AUDIO_ENTRY = {0: 28, 1: 44, 2: 64}  # QuickTime sound description versions


class _Walk:
    """One allowlist walk; ``fix`` rewrites the buffer, else findings are listed."""

    def __init__(self, buf: bytearray, options: ScrubOptions, fix: bool) -> None:
        self.buf, self.options, self.fix = buf, options, fix
        self.removed: dict[str, int] = {}
        self.findings: list[str] = []
        self.spans: list[tuple[int, int]] = []
        self.mdats: list[Box] = []

    def drop(self, box: Box, name: str) -> None:
        """Turn ``box`` into a zero-filled ``free`` box of the same size."""
        if self.fix:
            self.buf[box.start + 4 : box.start + 8] = b"free"
            self.buf[box.body : box.end] = bytes(box.end - box.body)
            count(self.removed, name)
        else:
            self.findings.append(name)

    def blank(self, start: int, end: int, name: str) -> None:
        """Zero ``buf[start:end]`` (fix) or report it if it is not zero (check)."""
        if self.buf.count(0, start, end) == end - start:
            return
        if self.fix:
            self.buf[start:end] = bytes(end - start)
            count(self.removed, name)
        else:
            self.findings.append(name)

    def run(self) -> None:
        boxes = read_boxes(self.buf, 0, len(self.buf))
        if not boxes or boxes[0].type != b"ftyp":
            raise MalformedImage("mp4: does not start with ftyp")
        if [box.type for box in boxes].count(b"moov") != 1:
            raise MalformedImage("mp4: not exactly one moov box")
        for box in boxes:
            if box.type in (b"moof", b"mfra", b"sidx"):
                raise ScrubRefused("mp4: fragmented files are not supported")
            if box.type == b"ftyp":
                self.ftyp(box)
            elif box.type == b"mdat":
                self.mdats.append(box)
            elif box.type == b"moov":
                self.moov(box)
            else:
                self.other(box, "box")
        self.unreferenced_media()

    def other(self, box: Box, parent: str) -> None:
        if box.type in _PADDING:
            self.blank(box.body, box.end, "padding-content")
        else:
            self.drop(box, f"{parent}/{fourcc_name(box.type)}")

    def ftyp(self, box: Box) -> None:
        if box.end - box.body < 8:
            raise MalformedImage("mp4: short ftyp")
        major = bytes(self.buf[box.body : box.body + 4])
        for at in range(box.body + 8, box.end - 3, 4):
            if bytes(self.buf[at : at + 4]) in _BRANDS | {major}:
                continue
            if self.fix:
                self.buf[at : at + 4] = major
                count(self.removed, "ftyp:brand")
            else:
                self.findings.append("ftyp:brand")

    def moov(self, box: Box) -> None:
        for child in children(self.buf, box):
            if child.type == b"mvhd":
                self.header(child)
            elif child.type == b"trak":
                self.trak(child)
            elif child.type == b"mvex":
                raise ScrubRefused("mp4: fragmented files are not supported")
            elif child.type != b"iods":
                self.other(child, "moov")

    def header(self, box: Box) -> None:
        """A fixed-size header box: bytes past its fields are zeroed.

        mvhd, tkhd and mdhd start with the creation and modification times (the
        capture date), blanked when the policy drops it.
        """
        version, _ = Cursor(self.buf, box.body, box.end).version_flags()
        size = _HEADER_SIZES[box.type][version == 1]
        if box.body + size > box.end:
            raise MalformedImage(f"mp4: short {fourcc_name(box.type)} box")
        self.blank(box.body + size, box.end, f"{fourcc_name(box.type)}:extra-bytes")
        if box.type in _TIMED and not self.options.keep_capture_date:
            width = 16 if version == 1 else 8
            self.blank(box.body + 4, box.body + 4 + width, f"{fourcc_name(box.type)}:creation-time")

    def trak(self, box: Box) -> None:
        kids = children(self.buf, box)
        handler = _handler(self.buf, kids)
        if handler not in _MEDIA_HANDLERS:
            self.drop(box, f"trak:{fourcc_name(handler)}")
            return
        for child in kids:
            if child.type == b"tkhd":
                self.header(child)
            elif child.type == b"mdia":
                self.mdia(child, handler)
            elif child.type not in (b"edts", b"tapt"):
                self.other(child, "trak")

    def mdia(self, box: Box, handler: bytes) -> None:
        for child in children(self.buf, box):
            if child.type == b"mdhd":
                self.header(child)
            elif child.type == b"hdlr":
                self.hdlr_name(child)
            elif child.type == b"minf":
                self.minf(child, handler)
            else:
                self.other(child, "mdia")

    def hdlr_name(self, box: Box) -> None:
        if box.body + 24 > box.end:
            raise MalformedImage("mp4: short hdlr box")
        self.blank(box.body + 24, box.end, "hdlr:name")

    def minf(self, box: Box, handler: bytes) -> None:
        for child in children(self.buf, box):
            if child.type == b"hdlr":
                self.hdlr_name(child)
            elif child.type == b"dinf":
                _check_self_contained(self.buf, child)
            elif child.type == b"stbl":
                self.stbl(child, handler)
            elif child.type in (b"vmhd", b"smhd"):
                self.header(child)
            else:
                self.other(child, "minf")

    def stbl(self, box: Box, handler: bytes) -> None:
        kids = children(self.buf, box)
        for child in kids:
            if child.type == b"stsd":
                self.stsd(child, handler)
            elif child.type == b"stz2":
                raise ScrubRefused("mp4: compact sample sizes (stz2) are not supported")
            elif child.type not in _SAMPLE_TABLES:
                self.other(child, "stbl")
        self.spans.extend(_sample_spans(self.buf, kids))

    def stsd(self, box: Box, handler: bytes) -> None:
        for entry in children(self.buf, box, skip=8):
            fixed = _VISUAL_ENTRY if handler == b"vide" else _AUDIO_ENTRY[0]
            if entry.body + fixed > entry.end:
                raise MalformedImage("mp4: short sample entry")
            if handler == b"vide":
                size = Cursor(self.buf, entry.body + 24, entry.end)
                check_pixels(size.uint(2), size.uint(2), self.options, "mp4")
                start, end = _COMPRESSOR_NAME
                self.blank(entry.body + start, entry.body + end, "stsd:compressor-name")
            else:
                version = Cursor(self.buf, entry.body + 8, entry.end).uint(2)
                if version not in _AUDIO_ENTRY:
                    raise MalformedImage(f"mp4: sound description version {version}")
                fixed = _AUDIO_ENTRY[version]
            if entry.body + fixed > entry.end:
                raise MalformedImage("mp4: short sound sample entry")
            for child in read_boxes(self.buf, entry.body + fixed, entry.end):
                if child.type not in _ENTRY_CHILDREN:
                    self.other(child, "stsd")

    def unreferenced_media(self) -> None:
        """Zero every mdat byte that no kept sample references."""
        spans = sorted(self.spans)
        for start, end in spans:
            if not any(m.body <= start and end <= m.end for m in self.mdats):
                raise MalformedImage("mp4: sample data lies outside mdat")
        for mdat in self.mdats:
            pos = mdat.body
            for start, end in spans:
                if start < mdat.body or end > mdat.end:
                    continue
                if start > pos:
                    self.blank(pos, start, "mdat:unreferenced-bytes")
                pos = max(pos, end)
            self.blank(pos, mdat.end, "mdat:unreferenced-bytes")


def _handler(buf: bytearray, trak_children: list[Box]) -> bytes:
    for mdia in (box for box in trak_children if box.type == b"mdia"):
        for hdlr in (box for box in children(buf, mdia) if box.type == b"hdlr"):
            cursor = Cursor(buf, hdlr.body + 8, hdlr.end)
            return cursor.take(4)
    raise MalformedImage("mp4: track without a media handler")


def _check_self_contained(buf: bytearray, dinf: Box) -> None:
    for dref in (box for box in children(buf, dinf) if box.type == b"dref"):
        for entry in children(buf, dref, skip=8):
            flags = Cursor(buf, entry.body, entry.end).version_flags()[1]
            if not flags & 1:
                raise ScrubRefused("mp4: media data in another file")


def _table(buf: bytearray, kids: list[Box], btype: bytes) -> Box | None:
    return next((box for box in kids if box.type == btype), None)


def _sample_spans(buf: bytearray, kids: list[Box]) -> list[tuple[int, int]]:
    """Byte ranges of a track's chunks, from stsz, stsc and stco/co64."""
    stsz, stsc = _table(buf, kids, b"stsz"), _table(buf, kids, b"stsc")
    offsets_box = _table(buf, kids, b"stco") or _table(buf, kids, b"co64")
    if stsz is None or stsc is None or offsets_box is None:
        raise MalformedImage("mp4: sample table without stsz, stsc or chunk offsets")
    cursor = Cursor(buf, stsz.body + 4, stsz.end)
    fixed, samples = cursor.uint(4), cursor.uint(4)
    sizes = struct.unpack(f">{samples}I", cursor.take(4 * samples)) if not fixed else ()
    ends = [0, *itertools.accumulate(sizes)] if not fixed else []
    cursor = Cursor(buf, offsets_box.body + 4, offsets_box.end)
    width = 8 if offsets_box.type == b"co64" else 4
    offsets = [cursor.uint(width) for _ in range(cursor.uint(4))]
    cursor = Cursor(buf, stsc.body + 4, stsc.end)
    runs = []
    for _ in range(cursor.uint(4)):
        first, per_chunk, _description = cursor.uint(4), cursor.uint(4), cursor.uint(4)
        runs.append((first, per_chunk))
    spans, sample = [], 0
    for index, (first, per_chunk) in enumerate(runs):
        last = runs[index + 1][0] - 1 if index + 1 < len(runs) else len(offsets)
        if first < 1 or last > len(offsets) or last < first - 1:
            raise MalformedImage("mp4: sample-to-chunk table out of range")
        for chunk in range(first, last + 1):
            if sample + per_chunk > samples:
                raise MalformedImage("mp4: chunks hold more samples than stsz lists")
            length = fixed * per_chunk if fixed else ends[sample + per_chunk] - ends[sample]
            spans.append((offsets[chunk - 1], offsets[chunk - 1] + length))
            sample += per_chunk
    return spans


class IsoBmffVideoScrubber(Scrubber):
    """MP4/MOV/M4V/3GP video; in-place box scrub (see module docstring)."""

    format_name: ClassVar[str] = "isobmff-video"

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        walk = _Walk(bytearray(data), options, fix=True)
        walk.run()
        kept = ("media-tracks", "orientation") + ("creation-time",) * options.keep_capture_date
        return ScrubResult(bytes(walk.buf), walk.removed, kept)

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        walk = _Walk(bytearray(data), options, fix=False)
        walk.run()
        return walk.findings
