"""JPEG: a lossless, segment-level rewrite (no re-encode).

Walks the markers SOI..SOS(+entropy data)..EOI and keeps (allowlist):

- the coding structure byte for byte: SOFn, DHT, DAC, DQT, DRI, DNL, SOS with
  its entropy-coded data (RSTn included), so decoded pixels are identical;
  each header segment must hold exactly its tables (no spare bytes);
- the ICC profile of the APP2 ICC_PROFILE chunks (checked for sequence),
  colour data only (:mod:`plugins.scrub.icc`), re-chunked;
- a JFIF APP0 rebuilt without its thumbnail, and an Adobe APP14 rebuilt with
  only its colour transform (both steer how decoders convert colours);
- a fresh minimal APP1 Exif holding only Orientation and, if the policy keeps
  it, DateTimeOriginal (see :mod:`plugins.scrub.exif`).

Everything else goes: all other EXIF tags and IFDs (GPS, serials, MakerNote,
the IFD1 thumbnail), XMP and extended XMP, IPTC/Photoshop APP13, COM, MPF and
every other APPn, and all bytes after the first EOI (MPF secondary images,
appended data: counted as ``trailing-data``).  An unknown non-APP marker
raises ScrubRefused (its role is unknown, so dropping it is not safe);
broken structure (bad lengths, no EOI, stray bytes) raises MalformedImage.

It works as a stream (:class:`JpegScrubStream`, on the incremental marker
walk :class:`JpegWalker`): metadata sits before the first scan, so the
head is rewritten and everything from the first scan on passes through.
Decision: a JFIF, Exif, ICC or Adobe segment *after* the first scan
(which no camera writes) is dropped like any other metadata, not moved to
the head.  The whole-file ``scrub`` is the stream fed the whole file.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from plugins.scrub.base import (
    CleanStream,
    HeaderCheck,
    MalformedImage,
    PieceWalk,
    Scrubber,
    ScrubOptions,
    ScrubRefused,
    check_pixels,
    count,
    parse_errors_as_malformed,
)
from plugins.scrub.exif import exif_residue, minimal_exif
from plugins.scrub.icc import profile_residue, sanitize_profile

SOI, EOI, SOS, APP0, APP1, APP2, APP14 = 0xD8, 0xD9, 0xDA, 0xE0, 0xE1, 0xE2, 0xEE
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Coding structure copied verbatim: SOFn, DHT, DAC, DQT, DNL, DRI.
_STRUCTURE = _SOF | {0xC4, 0xCC, 0xDB, 0xDC, 0xDD}
# A marker inside entropy-coded data: 0xFF not followed by stuffing 0x00 or RSTn.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_EXIF = b"Exif\x00\x00"
_ICC = b"ICC_PROFILE\x00"
_ICC_PIECE = 65535 - 2 - len(_ICC) - 2  # a segment's length field counts itself


@dataclass(frozen=True)
class Segment:
    """A marker segment; ``body`` starts at the marker byte (an SOS's ends with its header:
    the entropy-coded data after it comes separately)."""

    marker: int
    body: bytes
    payload: bytes


# What a walk yields: ("segment", Segment), ("entropy", coded data passed on as
# it is, RSTn and stuffed bytes included) or ("trailing", bytes after EOI).
Event = tuple[str, Any]
_START, _SEGMENTS, _SCAN, _TRAILING = range(4)


class JpegWalker(PieceWalk):
    """The marker walk SOI .. EOI of a JPEG fed in pieces of any size.

    Memory: at most one marker segment (64 KiB) and the piece being fed; the
    entropy-coded data is handed on as it comes.  Broken structure (bad
    lengths, a marker out of place, stray bytes) raises MalformedImage as
    soon as it is seen; :meth:`finish` raises it when the data ended before
    EOI (a truncated file).
    """

    def __init__(self) -> None:
        super().__init__()
        self._state = _START
        self.filled = False  # fill bytes seen before a marker (a rewrite drops them)

    def feed(self, data: bytes) -> list[Event]:
        if self._state == _TRAILING:
            return [("trailing", data)] if data else []
        return self._walk(data)

    def in_scan(self) -> bool:
        """Whether the walk is inside a scan's coded data with nothing pending."""
        return self._state == _SCAN and not self._buf

    def finish(self) -> None:
        if self._state == _SCAN:
            raise MalformedImage("jpeg: entropy-coded data runs to the end (truncated)")
        if self._state != _TRAILING:
            raise MalformedImage("jpeg: truncated before EOI")

    def _take(self, size: int) -> bytes:
        buf, pos = self._buf, self._pos
        self._pos += size
        if pos == 0 and size == len(buf) and isinstance(buf, bytes):
            return buf  # a piece that is all coded data passes on without a copy
        return bytes(buf[pos : pos + size])

    def _step(self) -> Event | None:
        left = len(self._buf) - self._pos
        if self._state == _START:
            if left < 2:
                return None
            if self._take(2) != b"\xff\xd8":
                raise MalformedImage("jpeg: no SOI marker")
            self._state = _SEGMENTS
        if self._state == _SCAN:
            return self._scan()
        if self._state == _TRAILING:
            return ("trailing", self._take(left)) if left else None
        return self._segment()

    def _scan(self) -> Event | None:
        found = _SCAN_END.search(self._buf, self._pos)
        if found is not None:
            self._state = _SEGMENTS
            size = found.start() - self._pos
            return ("entropy", self._take(size)) if size else self._segment()
        # A 0xFF at the end may begin a marker: keep it for the next piece.
        ready = len(self._buf) - self._pos - (self._buf[-1:] == b"\xff")
        return ("entropy", self._take(ready)) if ready > 0 else None

    def _segment(self) -> Event | None:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            return None
        if buf[pos] != 0xFF:
            raise MalformedImage("jpeg: expected a marker (truncated or corrupt)")
        at = pos
        while at < len(buf) and buf[at] == 0xFF:  # fill bytes before the marker code
            at += 1
        if at == len(buf):
            return None
        self.filled = self.filled or at > pos + 1
        marker = buf[at]
        if marker == EOI:
            self._pos = at + 1
            self._state = _TRAILING
            return ("segment", Segment(EOI, b"\xd9", b""))
        if marker in (0x00, 0x01, SOI) or 0xD0 <= marker <= 0xD7:
            raise MalformedImage(f"jpeg: marker {marker:#04x} out of place")
        if len(buf) < at + 3:
            return None
        (length,) = struct.unpack(">H", buf[at + 1 : at + 3])
        if length < 2:
            raise MalformedImage(f"jpeg: segment {marker:#04x} has bad length {length}")
        if len(buf) < at + 1 + length:
            return None
        self._pos = at
        body = self._take(1 + length)
        if marker == SOS:
            self._state = _SCAN
        return ("segment", Segment(marker, body, body[3:]))


def walk(data: bytes) -> list[Event]:
    """The whole walk of a complete JPEG held in memory."""
    walker = JpegWalker()
    events = walker.feed(data)
    walker.finish()
    return events


class JpegWalk:
    """One marker walk of a streamed JPEG, shared by the filters that read the same bytes
    in turn (the ``filetype`` structural check and the ``scrub``): each piece is walked
    once, however many :meth:`reader` s see it.

    Every reader must be fed the same pieces in the same order, one behind another at
    most (:class:`~gateway.dav.provider.StreamedBody` feeds each piece through every
    filter before the next); anything else is a RuntimeError, never a wrong walk.
    """

    def __init__(self) -> None:
        self._walker = JpegWalker()
        self._walked = 0  # pieces walked so far
        self._last: bytes = b""
        self._events: list[Event] = []

    def reader(self) -> WalkReader:
        return WalkReader(self)

    @property
    def filled(self) -> bool:
        return self._walker.filled

    def events(self, seen: int, data: bytes) -> list[Event]:
        """The events of the piece after the ``seen`` first ones, which must be ``data``."""
        if seen == self._walked:
            self._events = self._walker.feed(data)
            self._last = data
            self._walked += 1
        elif seen != self._walked - 1 or not (data is self._last or data == self._last):
            raise RuntimeError("jpeg: the readers of one walk were fed different pieces")
        return self._events

    def finish(self) -> None:
        self._walker.finish()


class WalkReader:
    """One reader of a :class:`JpegWalk`; used as a :class:`JpegWalker` is."""

    def __init__(self, walk: JpegWalk) -> None:
        self._walk = walk
        self._seen = 0

    @property
    def filled(self) -> bool:
        return self._walk.filled

    def feed(self, data: bytes) -> list[Event]:
        events = self._walk.events(self._seen, data)
        self._seen += 1
        return events

    def finish(self) -> None:
        self._walk.finish()


def _reader(walk: object | None) -> WalkReader:
    """A reader of ``walk`` when it is a shared JPEG walk, else of a walk of its own."""
    return (walk if isinstance(walk, JpegWalk) else JpegWalk()).reader()


def _table_sizes_fill(payload: bytes, marker: int) -> bool:
    """Do the DQT/DHT tables in ``payload`` fill it exactly?"""
    pos = 0
    while pos < len(payload):
        if marker == 0xDB:
            if payload[pos] >> 4 > 1:  # precision: 8 or 16 bits
                return False
            pos += 1 + 64 * (1 + (payload[pos] >> 4))
        else:
            counts = payload[pos + 1 : pos + 17]
            pos += 17 + sum(counts) if len(counts) == 16 else len(payload) + 1
    return pos == len(payload)


def check_tables(seg: Segment) -> None:
    """Coding segments are copied verbatim: each must hold exactly its fields.

    Raises MalformedImage otherwise (nothing can ride along in spare bytes).
    """
    payload, marker = seg.payload, seg.marker
    if marker in (0xDB, 0xC4):
        exact = _table_sizes_fill(payload, marker)
    elif marker in _SOF:
        exact = len(payload) >= 6 and len(payload) == 6 + 3 * payload[5]
    elif marker == SOS:
        exact = len(payload) >= 1 and len(payload) == 4 + 2 * payload[0]
    elif marker in (0xDD, 0xDC):  # DRI, DNL
        exact = len(payload) == 2
    else:  # DAC: two bytes per conditioning entry; EOI: empty
        exact = len(payload) % 2 == 0
    if not exact:
        raise MalformedImage(f"jpeg: segment {marker:#04x} has {len(payload)} bytes")


_LOSSLESS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
# Pillow's mode for a frame of n components (what a decode of it would hold).
_MODES = {1: "L", 3: "RGB", 4: "CMYK"}


class JpegStructure:
    """Whether a JPEG is complete, without decoding it, on a stream (every byte is passed
    on unchanged); MalformedImage otherwise.

    The markers run from SOI to EOI (the entropy-coded data of every scan
    ends in a marker, the last one EOI: a truncated file has none), every
    coding segment holds exactly its tables, there is one frame header, and
    its scans are complete: for every component of the frame, the scans
    that finish coefficients (successive approximation low bit 0) cover all
    64 (a baseline scan does at once; a progressive file needs its every
    pass).  Bytes after EOI are the scrub stage's to judge.  ``on_header``
    gets the frame's size and Pillow mode as soon as the frame header is in;
    ``walk``: the :class:`JpegWalk` shared with the scrub of the same stream.
    """

    def __init__(self, on_header: HeaderCheck | None = None, walk: object | None = None) -> None:
        self._walker = _reader(walk)
        self._on_header = on_header
        self._frame: int | None = None
        self._covered: dict[int, set[int]] = {}

    def feed(self, data: bytes) -> bytes:
        for kind, seg in self._walker.feed(data):
            if kind == "segment" and (seg.marker in _STRUCTURE or seg.marker == SOS):
                self._visit(seg)
        return data

    def finish(self) -> bytes:
        self._walker.finish()
        if self._frame is None:
            raise MalformedImage("jpeg: no frame header")
        if not self._covered or any(len(c) < 64 for c in self._covered.values()):
            raise MalformedImage("jpeg: the scans do not complete every component")
        return b""

    def _visit(self, seg: Segment) -> None:
        check_tables(seg)
        if seg.marker in _SOF:
            if self._frame is not None:
                raise MalformedImage("jpeg: more than one frame header")
            self._frame = seg.marker
            n = seg.payload[5]
            self._covered = {seg.payload[6 + 3 * i]: set() for i in range(n)}
            if self._on_header is not None:
                height, width = struct.unpack(">HH", seg.payload[1:5])
                self._on_header((width, height), _MODES.get(n, "RGB"))
        elif seg.marker == SOS:
            if self._frame is None:
                raise MalformedImage("jpeg: SOS before SOF")
            _cover(seg.payload, self._covered, lossless=self._frame in _LOSSLESS)


def check_structure(data: bytes) -> None:
    """:class:`JpegStructure` over a whole file held in memory."""
    check = JpegStructure()
    check.feed(data)
    check.finish()


def _cover(payload: bytes, covered: dict[int, set[int]], *, lossless: bool) -> None:
    """Mark the coefficients a scan finishes for each of its components."""
    n = payload[0]
    start, end, approx = payload[1 + 2 * n], payload[2 + 2 * n], payload[3 + 2 * n]
    if lossless:  # Ss is a predictor there: one scan carries the component whole
        start, end, approx = 0, 63, 0
    if start > end or end > 63:
        raise MalformedImage(f"jpeg: scan spectral range {start}..{end}")
    for i in range(n):
        component = payload[1 + 2 * i]
        if component not in covered:
            raise MalformedImage(f"jpeg: scan names unknown component {component}")
        if approx & 0x0F == 0:
            covered[component].update(range(start, end + 1))


class _Rewrite:
    """Collects the kept parts of one JPEG while its segments are visited."""

    def __init__(self, options: ScrubOptions) -> None:
        self.options = options
        self.removed: dict[str, int] = {}
        self.jfif: bytes | None = None
        self.exif: bytes | None = None
        self.exif_kept: list[str] = []
        self.icc: list[Segment] = []
        self.adobe: bytes | None = None
        self.structure: list[bytes] = []
        self.frames = 0

    def visit(self, seg: Segment) -> None:
        if seg.marker in _STRUCTURE or seg.marker in (SOS, EOI):
            self._structure(seg)
        elif seg.marker == APP0 and seg.payload.startswith(b"JFIF\x00") and self.jfif is None:
            self.jfif = _fresh_jfif(seg.payload, self.removed)
        elif seg.marker == APP1 and seg.payload.startswith(_EXIF) and self.exif is None:
            tiff = seg.payload[len(_EXIF) :]
            exif, self.exif_kept = minimal_exif(tiff, self.options, self.removed)
            self.exif = exif or b""  # read once: any later Exif segment is dropped
        elif seg.marker == APP2 and seg.payload.startswith(_ICC):
            self.icc.append(seg)
        elif seg.marker == APP14 and seg.payload.startswith(b"Adobe") and self.adobe is None:
            self.adobe = _fresh_adobe(seg.payload)
        elif 0xE0 <= seg.marker <= 0xEF or seg.marker == 0xFE:
            count(self.removed, _label(seg))
        else:
            raise ScrubRefused(f"jpeg: unknown marker {seg.marker:#04x}")

    def _structure(self, seg: Segment) -> None:
        check_tables(seg)
        if seg.marker in _SOF:
            self.frames += 1
            height, width = struct.unpack(">HH", seg.payload[1:5])
            check_pixels(width, height, self.options, "jpeg")
        elif seg.marker == SOS and self.frames == 0:
            raise MalformedImage("jpeg: SOS before SOF")
        self.structure.append(b"\xff" + seg.body)

    def tail(self, seg: Segment) -> bytes:
        """A segment after the head was sent: coding structure passes on, metadata goes."""
        if seg.marker in _SOF:
            raise MalformedImage("jpeg: more than one frame header")
        if seg.marker in _STRUCTURE or seg.marker in (SOS, EOI):
            check_tables(seg)
            return b"\xff" + seg.body
        if 0xE0 <= seg.marker <= 0xEF or seg.marker == 0xFE:
            count(self.removed, _label(seg))
            return b""
        raise ScrubRefused(f"jpeg: unknown marker {seg.marker:#04x}")

    def output(self) -> tuple[bytes, tuple[str, ...]]:
        if self.frames != 1:
            raise MalformedImage(f"jpeg: {self.frames} frame headers (expected one)")
        head, kept = [b"\xff\xd8"], []
        if self.jfif:
            head.append(_segment(APP0, self.jfif))
            kept.append("jfif")
        if self.exif:
            head.append(_segment(APP1, _EXIF + self.exif))
            kept.extend(self.exif_kept)
        if self.icc:
            clean = sanitize_profile(_icc_profile(self.icc))
            for name, n in clean.removed.items():
                count(self.removed, name, n)
            head.extend(_icc_segments(clean.data))
            kept.append("icc-profile")
        if self.adobe:
            head.append(_segment(APP14, self.adobe))
            kept.append("adobe-transform")
        return b"".join(head + self.structure), tuple(kept)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _label(seg: Segment) -> str:
    if seg.marker == 0xFE:
        return "COM"
    ident = seg.payload[:40].split(b"\x00", 1)[0]
    known = {
        b"Exif": "Exif",
        b"http://ns.adobe.com/xap/1.0/": "XMP",
        b"MPF": "MPF",
        b"http://ns.adobe.com/xmp/extension/": "XMP-extended",
        b"JFXX": "JFXX",
        b"Photoshop 3.0": "Photoshop-IPTC",
        b"JFIF": "JFIF",
        b"Adobe": "Adobe",
    }
    return f"APP{seg.marker - 0xE0}:{known.get(ident, 'other')}"


def _fresh_jfif(payload: bytes, removed: dict[str, int]) -> bytes:
    if len(payload) < 14:
        raise MalformedImage("jpeg: short JFIF segment")
    if payload[12] or payload[13]:
        count(removed, "APP0:JFIF-thumbnail")
    return payload[:12] + b"\x00\x00"


def _fresh_adobe(payload: bytes) -> bytes:
    if len(payload) < 12 or payload[11] > 2:
        raise MalformedImage("jpeg: bad Adobe APP14 segment")
    return b"Adobe\x00\x64" + b"\x00" * 4 + payload[11:12]


def _icc_profile(chunks: list[Segment]) -> bytes:
    """The ICC profile of the APP2 chunks; MalformedImage unless numbered 1..N once each."""
    total = len(chunks)
    order = sorted(chunks, key=lambda seg: seg.payload[12:13])
    numbers = [(seg.payload[12:13], seg.payload[13:14]) for seg in order]
    if numbers != [(bytes([i]), bytes([total])) for i in range(1, total + 1)]:
        raise MalformedImage("jpeg: ICC profile chunks are not numbered 1..N")
    profile = b"".join(seg.payload[14:] for seg in order)
    if len(profile) < 128 or profile[36:40] != b"acsp":
        raise MalformedImage("jpeg: ICC profile without an acsp header")
    if struct.unpack(">I", profile[:4])[0] != len(profile):
        raise MalformedImage("jpeg: ICC profile size does not match its chunks")
    return profile


def _icc_segments(profile: bytes) -> list[bytes]:
    """APP2 segments carrying ``profile``, numbered 1..N."""
    pieces = [profile[i : i + _ICC_PIECE] for i in range(0, len(profile), _ICC_PIECE)]
    if len(pieces) > 255:
        raise ScrubRefused("jpeg: ICC profile too large for 255 APP2 segments")
    return [
        _segment(APP2, _ICC + bytes([n, len(pieces)]) + piece)
        for n, piece in enumerate(pieces, start=1)
    ]


class JpegScrubStream:
    """The scrub of one JPEG as it streams (:class:`~plugins.scrub.base.ScrubStream`).

    The segments up to the first scan are rewritten (the allowlist above)
    and sent on as one head once its SOS arrives; from there the coding
    structure and the entropy-coded data pass on as they are, metadata
    segments between scans are dropped (counted), and the bytes after EOI
    go to ``trailing``, never on.  Memory: the head's segments and one
    piece.  ``walk``: the :class:`JpegWalk` shared with the structural check.
    """

    def __init__(
        self,
        options: ScrubOptions,
        trailing: Callable[[bytes], None],
        walk: object | None = None,
    ) -> None:
        self._walker = _reader(walk)
        self._rewrite = _Rewrite(options)
        self._trailing = trailing
        self._head_in = [b"\xff\xd8"]
        self._head_sent = False
        self.kept: tuple[str, ...] = ()
        self.changed = False
        self.removed = self._rewrite.removed

    def feed(self, data: bytes) -> bytes:
        return _joined(self.parts(data))

    def parts(self, data: bytes) -> list[Part]:
        """The cleaned bytes of ``data`` in parts, each with whether it is coded data
        this stream's walk has searched for markers (passed on as it came)."""
        out: list[Part] = []
        for kind, value in self._walker.feed(data):
            if kind == "entropy":
                out.append((value, True))
            elif kind == "trailing":
                if "trailing-data" not in self.removed:
                    count(self.removed, "trailing-data")
                self._trailing(value)
            elif part := self._rewrite.tail(value) if self._head_sent else self._head(value):
                out.append((part, False))
        self.changed = self.changed or bool(self.removed) or self._walker.filled
        return out

    def _head(self, seg: Segment) -> bytes:
        self._head_in.append(b"\xff" + seg.body)
        self._rewrite.visit(seg)
        if seg.marker == EOI:
            raise MalformedImage("jpeg: no scan before EOI")
        if seg.marker != SOS:
            return b""
        head, self.kept = self._rewrite.output()
        self._head_sent = True
        self.changed = head != b"".join(self._head_in)
        self._head_in = []
        return head

    def finish(self) -> bytes:
        self._walker.finish()
        return b""


# A piece of a scrub's output, and whether it is coded data the scrub's walk searched.
Part = tuple[bytes, bool]


def _joined(parts: list[Part]) -> bytes:
    return parts[0][0] if len(parts) == 1 else b"".join(part for part, _ in parts)


class JpegResidue:
    """The allowlist checked again on a JPEG as it streams
    (:class:`~plugins.scrub.base.ResidueStream`)."""

    def __init__(self, options: ScrubOptions) -> None:
        self._walker = JpegWalker()
        self._options = options
        self._icc: list[Segment] = []
        self.found: list[str] = []

    def feed(self, data: bytes) -> bytes:
        for kind, value in self._walker.feed(data):
            if kind == "trailing" and value and "trailing-data" not in self.found:
                self.found.append("trailing-data")
            elif kind == "segment":
                self.found.extend(_segment_residue(value, self._options))
                if value.marker == APP2 and value.payload.startswith(_ICC):
                    self._icc.append(value)
        return data

    def feed_scanned(self, data: bytes) -> None:
        """Coded data of a scan that the scrub's walk has just searched (no marker in it,
        nor a 0xFF at its end): taken without searching it again when this walk is inside
        a scan with nothing pending, as it then must be; otherwise fed as any piece."""
        if not self._walker.in_scan():
            self.feed(data)

    def finish(self) -> list[str]:
        self._walker.finish()
        if self._icc:
            self.found.extend(profile_residue(_icc_profile(self._icc)))
        return self.found


class JpegScrubber(Scrubber):
    """JPEG/JFIF/EXIF; lossless segment rewrite (see module docstring)."""

    format_name: ClassVar[str] = "jpeg"

    def scrub_stream(
        self,
        options: ScrubOptions,
        trailing: Callable[[bytes], None],
        walk: object | None = None,
    ) -> JpegScrubStream:
        return JpegScrubStream(options, trailing, walk)

    def residue_stream(self, options: ScrubOptions) -> JpegResidue:
        return JpegResidue(options)

    def clean_stream(
        self,
        options: ScrubOptions,
        trailing: Callable[[bytes], None],
        walk: object | None = None,
    ) -> JpegCleanStream:
        return JpegCleanStream(JpegScrubStream(options, trailing, walk), JpegResidue(options))


class JpegCleanStream(CleanStream):
    """:class:`~plugins.scrub.base.CleanStream` of a JPEG: the re-check walks every output
    byte, but takes the coded data that the scrub's walk has just searched for markers
    (the same bytes, passed on as they came) as searched: a scan's data is searched once
    per walk of the input, not again on the way out.  The rewritten head and every
    segment passed on are parsed again as before."""

    def __init__(self, scrub: JpegScrubStream, check: JpegResidue) -> None:
        super().__init__(JpegScrubber.format_name, scrub, check)
        self._parts = scrub.parts
        self._recheck = check

    def feed(self, data: bytes) -> bytes:
        with parse_errors_as_malformed(JpegScrubber.format_name):
            parts = self._parts(data)
            for part, scanned in parts:
                if scanned:
                    self._recheck.feed_scanned(part)
                else:
                    self._recheck.feed(part)
        return _joined(parts)


def _segment_residue(seg: Segment, options: ScrubOptions) -> list[str]:
    """What the allowlist does not admit in one output segment."""
    if seg.marker in _STRUCTURE or seg.marker in (SOS, EOI):
        check_tables(seg)
        return []
    if seg.marker == APP0 and seg.payload.startswith(b"JFIF\x00") and len(seg.payload) == 14:
        return [] if seg.payload[12:] == b"\x00\x00" else ["APP0:JFIF-thumbnail"]
    if seg.marker == APP1 and seg.payload.startswith(_EXIF):
        return exif_residue(seg.payload[len(_EXIF) :], options)
    if seg.marker == APP2 and seg.payload.startswith(_ICC):
        return []
    if seg.marker == APP14 and seg.payload[:11] == b"Adobe\x00\x64" + b"\x00" * 4:
        return [] if len(seg.payload) == 12 else ["APP14:Adobe-extra"]
    if 0xE0 <= seg.marker <= 0xEF or seg.marker == 0xFE:
        return [_label(seg)]
    return [f"marker-{seg.marker:#04x}"]
