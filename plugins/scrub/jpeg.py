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
"""

from __future__ import annotations

import re
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
from plugins.scrub.exif import build_exif, exif_residue, kept_values, read_tiff, removed_tags
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
    """A marker segment; ``body`` starts at the marker byte, ends after entropy data."""

    marker: int
    body: bytes
    payload: bytes


def read_segments(data: bytes) -> tuple[list[Segment], int]:
    """Segments from after SOI to EOI inclusive, and the offset just past EOI."""
    if data[:2] != b"\xff\xd8":
        raise MalformedImage("jpeg: no SOI marker")
    segments: list[Segment] = []
    pos = 2
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise MalformedImage(f"jpeg: expected a marker at offset {pos} (truncated or corrupt)")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            raise MalformedImage("jpeg: truncated before EOI")
        marker = data[pos]
        if marker == EOI:
            segments.append(Segment(EOI, b"\xd9", b""))
            return segments, pos + 1
        if marker in (0x00, 0x01, SOI) or 0xD0 <= marker <= 0xD7:
            raise MalformedImage(f"jpeg: marker {marker:#04x} out of place")
        payload_end, end = _segment_end(data, pos, marker)
        segments.append(Segment(marker, data[pos:end], data[pos + 3 : payload_end]))
        pos = end


def _segment_end(data: bytes, pos: int, marker: int) -> tuple[int, int]:
    """Where the segment's payload ends, and where the next marker may start."""
    if pos + 3 > len(data):
        raise MalformedImage("jpeg: truncated segment header")
    (length,) = struct.unpack(">H", data[pos + 1 : pos + 3])
    end = pos + 1 + length
    if length < 2 or end > len(data):
        raise MalformedImage(f"jpeg: segment {marker:#04x} has bad length {length}")
    if marker != SOS:
        return end, end
    found = _SCAN_END.search(data, end)
    if found is None:
        raise MalformedImage("jpeg: entropy-coded data runs to the end (truncated)")
    return end, found.start()


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


def check_structure(data: bytes) -> None:
    """A complete JPEG without decoding it; MalformedImage otherwise.

    The markers run from SOI to EOI (the entropy-coded data of every scan
    ends in a marker, the last one EOI: a truncated file has none), every
    coding segment holds exactly its tables, there is one frame header, and
    its scans are complete: for every component of the frame, the scans
    that finish coefficients (successive approximation low bit 0) cover all
    64 (a baseline scan does at once; a progressive file needs its every
    pass).  Bytes after EOI are the scrub stage's to judge.
    """
    segments, _ = read_segments(data)
    frame: Segment | None = None
    covered: dict[int, set[int]] = {}
    for seg in segments:
        if seg.marker not in _STRUCTURE and seg.marker != SOS:
            continue
        check_tables(seg)
        if seg.marker in _SOF:
            if frame is not None:
                raise MalformedImage("jpeg: more than one frame header")
            frame = seg
            n = seg.payload[5]
            covered = {seg.payload[6 + 3 * i]: set() for i in range(n)}
        elif seg.marker == SOS:
            if frame is None:
                raise MalformedImage("jpeg: SOS before SOF")
            _cover(seg.payload, covered, lossless=frame.marker in _LOSSLESS)
    if frame is None:
        raise MalformedImage("jpeg: no frame header")
    if not covered or any(len(coefficients) < 64 for coefficients in covered.values()):
        raise MalformedImage("jpeg: the scans do not complete every component")


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
            self.exif = self._minimal_exif(seg.payload[len(_EXIF) :])
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

    def _minimal_exif(self, tiff: bytes) -> bytes:
        layout = read_tiff(tiff)
        orientation, date = kept_values(layout, self.options)
        for name in removed_tags(layout, orientation, date):
            count(self.removed, name)
        self.exif_kept = ["orientation"] * bool(orientation) + ["DateTimeOriginal"] * bool(date)
        return build_exif(orientation, date) or b""

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


class JpegScrubber(Scrubber):
    """JPEG/JFIF/EXIF; lossless segment rewrite (see module docstring)."""

    format_name: ClassVar[str] = "jpeg"

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        segments, end = read_segments(data)
        rewrite = _Rewrite(options)
        for seg in segments:
            rewrite.visit(seg)
        if end < len(data):
            count(rewrite.removed, "trailing-data")
        out, kept = rewrite.output()
        return ScrubResult(out, rewrite.removed, kept, trailing=data[end:])

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        segments, end = read_segments(data)
        found = ["trailing-data"] if end < len(data) else []
        for seg in segments:
            found.extend(_segment_residue(seg, options))
        icc = [seg for seg in segments if seg.marker == APP2 and seg.payload.startswith(_ICC)]
        if icc:
            found.extend(profile_residue(_icc_profile(icc)))
        return found


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
