"""Dirty HEIF and MP4/MOV files for the scrubber tests, built box by box.

pillow_heif writes HEIF with Exif, XMP, thumbnails, grids and extra images,
but not auxiliary images, item names or odd boxes; those are hand-built here
around a real HEVC bitstream that pillow_heif encoded.  The MP4/MOV files are
hand-built containers (the video samples are opaque bytes: exiftool and the
scrubber never decode them).
"""

from __future__ import annotations

import io
import struct

import pillow_heif

from tests.scrub_corpus_images import (
    exif_markers,
    exif_tiff,
    icc_profile,
    marker,
    photo,
    xmp_markers,
    xmp_packet,
)


def box(btype: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), btype) + body


def full_box(btype: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(btype, struct.pack(">I", (version << 24) | flags), *payload)


def top_boxes(data: bytes) -> dict[bytes, bytes]:
    """Payloads of the top-level boxes (last one wins), for picking pieces apart."""
    found, pos = {}, 0
    while pos < len(data):
        size, btype = struct.unpack(">I4s", data[pos : pos + 8])
        found[btype] = data[pos + 8 : pos + size]
        pos += size
    return found


def child_box(payload: bytes, btype: bytes, skip: int = 0) -> bytes:
    """The first child box of type ``btype`` (whole box) inside ``payload``."""
    pos = skip
    while pos < len(payload):
        size, found = struct.unpack(">I4s", payload[pos : pos + 8])
        if found == btype:
            return payload[pos : pos + size]
        pos += size
    raise LookupError(btype)


# --- HEIF -------------------------------------------------------------------


def heif_from_pillow_heif() -> bytes:
    """A pillow_heif HEIC: grid primary, Exif, XMP, a thumbnail, a second image."""
    primary = pillow_heif.from_pillow(photo(256, 192))
    second = pillow_heif.from_pillow(photo(64, 48, seed=3))
    second[0].info["exif"] = b"Exif\x00\x00" + exif_tiff("HEIFSECOND", thumbnail=False)
    out = io.BytesIO()
    primary.save(
        out,
        quality=80,
        exif=b"Exif\x00\x00" + exif_tiff("HEIFPH", thumbnail=False),
        xmp=xmp_packet("HEIFPHXMP"),
        thumbnails=[64],
        tile_size=128,
        append_images=[second[0]],
    )
    return out.getvalue()


def heif_from_pillow_heif_markers() -> list[str]:
    return (
        exif_markers("HEIFPH", False) + xmp_markers("HEIFPHXMP") + exif_markers("HEIFSECOND", False)
    )


def _hevc_item() -> tuple[bytes, bytes]:
    """(hvcC+ispe+clap boxes, coded data) of a small HEIC encoded by pillow_heif."""
    out = io.BytesIO()
    pillow_heif.from_pillow(photo(64, 48)).save(out, quality=70, save_nclx_profile=False)
    boxes = top_boxes(out.getvalue())
    ipco = child_box(child_box(boxes[b"meta"], b"iprp", skip=4)[8:], b"ipco")[8:]
    coding = b"".join(child_box(ipco, btype) for btype in (b"hvcC", b"ispe", b"clap"))
    return coding, boxes[b"mdat"]


def _heif_items(hvcc: bytes, coded: bytes) -> list[tuple[int, bytes, bytes, bytes, int]]:
    """(id, type, name, data, flags) of every item of the hand-built HEIF."""
    exif = struct.pack(">I", 6) + b"Exif\x00\x00"
    return [
        (1, b"hvc1", marker("HEIFITEMNAME").encode(), coded, 0),
        (2, b"Exif", b"", exif + exif_tiff("HEIFEXIF", thumbnail=False), 1),
        (3, b"mime", b"", xmp_packet("HEIFXMP"), 1),
        (4, b"hvc1", marker("HEIFTHUMBNAME").encode(), coded, 1),
        (5, b"hvc1", b"", coded, 1),
        (6, b"Exif", b"", exif + exif_tiff("HEIFDEPTH", thumbnail=False), 1),
        (7, b"hvc1", b"", coded, 1),
        (8, b"mime", b"", xmp_packet("HEIFGAINMAP"), 1),
    ]


def _infe(item_id: int, itype: bytes, name: bytes, flags: int) -> bytes:
    extra = b"application/rdf+xml\x00" if itype == b"mime" else b""
    return full_box(b"infe", 2, flags, struct.pack(">HH", item_id, 0), itype, name + b"\x00", extra)


def _heif_properties(coding: bytes) -> tuple[bytes, bytes]:
    """ipco and ipma: 1-3 hvcC/ispe/clap, 4 irot, 5 colr ICC, 6 udes, 7-8 depth/gain-map auxC."""
    udes = full_box(
        b"udes", 0, 0, b"en\x00", marker("HEIFUDES").encode() + b"\x00", b"\x00", b"\x00"
    )
    props = [
        coding,
        box(b"irot", b"\x01"),
        box(b"colr", b"prof", icc_profile()),
        udes,
        full_box(b"auxC", 0, 0, b"urn:mpeg:hevc:2015:auxid:2\x00"),
        full_box(b"auxC", 0, 0, b"urn:com:apple:photo:2020:aux:hdrgainmap\x00"),
    ]
    image = [0x81, 2, 0x83]
    assoc = {1: [*image, 0x84, 5, 6], 4: image, 5: [*image, 0x87], 7: [*image, 0x88]}
    entries = b"".join(struct.pack(">HB", i, len(a)) + bytes(a) for i, a in assoc.items())
    ipma = full_box(b"ipma", 0, 0, struct.pack(">I", len(assoc)), entries)
    return box(b"ipco", *props), ipma


def _heif_meta(items: list[tuple[int, bytes, bytes, bytes, int]], hvcc: bytes, base: int) -> bytes:
    locations, offset = [], base
    for item_id, _, _, data, _ in items:
        locations.append(struct.pack(">HHHHII", item_id, 0, 0, 1, offset, len(data)))
        offset += len(data)
    iloc = full_box(b"iloc", 1, 0, b"\x44\x00", struct.pack(">H", len(items)), *locations)
    iinf = full_box(
        b"iinf",
        0,
        0,
        struct.pack(">H", len(items)),
        *(_infe(i, t, n, f) for i, t, n, _, f in items),
    )
    refs = [
        (b"cdsc", 2, 1),
        (b"cdsc", 3, 1),
        (b"thmb", 4, 1),
        (b"auxl", 5, 1),
        (b"cdsc", 6, 5),
        (b"auxl", 7, 1),
        (b"cdsc", 8, 7),
    ]
    iref = full_box(b"iref", 0, 0, *(box(t, struct.pack(">HHH", s, 1, d)) for t, s, d in refs))
    ipco, ipma = _heif_properties(hvcc)
    hdlr = full_box(
        b"hdlr", 0, 0, bytes(4), b"pict", bytes(12), marker("HEIFHDLR").encode() + b"\x00"
    )
    grpl = box(
        b"grpl", full_box(b"altr", 0, 0, struct.pack(">III", 100, 2, 1), struct.pack(">I", 4))
    )
    pitm = full_box(b"pitm", 0, 0, struct.pack(">H", 1))
    return full_box(b"meta", 0, 0, hdlr, pitm, iloc, iinf, iref, box(b"iprp", ipco, ipma), grpl)


def heif_hand_built() -> bytes:
    """Primary + Exif + XMP + thumbnail + depth map (own Exif) + gain map (own XMP)."""
    hvcc, coded = _hevc_item()
    items = _heif_items(hvcc, coded)
    ftyp = box(b"ftyp", b"heic", bytes(4), b"mif1", b"heic", b"miaf")
    uuid = box(b"uuid", b"\x12" * 16, marker("HEIFUUID").encode())
    meta_len = len(_heif_meta(items, hvcc, 0))
    base = len(ftyp) + meta_len + len(uuid) + 8
    mdat = box(b"mdat", *(data for _, _, _, data, _ in items), marker("HEIFORPHAN").encode())
    return ftyp + _heif_meta(items, hvcc, base) + uuid + mdat


def heif_exif_first(padding: int) -> bytes:
    """The hand-built HEIF laid out as an iPhone writes it, the Exif item first in the
    mdat, with ``padding`` bytes after the primary's coded data (inside its extent)."""
    hvcc, coded = _hevc_item()
    items = _heif_items(hvcc, coded)
    primary = (*items[0][:3], coded + bytes(padding), items[0][4])
    items = [items[1], primary, *items[2:]]
    ftyp = box(b"ftyp", b"heic", bytes(4), b"mif1", b"heic", b"miaf")
    base = len(ftyp) + len(_heif_meta(items, hvcc, 0)) + 8
    mdat = box(b"mdat", *(data for _, _, _, data, _ in items))
    return ftyp + _heif_meta(items, hvcc, base) + mdat


def heif_hand_built_markers() -> list[str]:
    places = ["HEIFITEMNAME", "HEIFTHUMBNAME", "HEIFUDES", "HEIFHDLR", "HEIFUUID", "HEIFORPHAN"]
    return (
        [marker(p) for p in places]
        + exif_markers("HEIFEXIF", False)
        + xmp_markers("HEIFXMP")
        + exif_markers("HEIFDEPTH", False)
        + xmp_markers("HEIFGAINMAP")
    )


# --- MP4 / MOV ----------------------------------------------------------------

CREATION_TIME = 3_800_000_000  # seconds since 1904: a date in 2024
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _sample_table(entry: bytes, sizes: list[int], offset: int) -> bytes:
    """One chunk holding every sample, at ``offset``."""
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        full_box(b"stts", 0, 0, struct.pack(">III", 1, len(sizes), 600)),
        full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(sizes), 1)),
        full_box(b"stsz", 0, 0, struct.pack(f">II{len(sizes)}I", 0, len(sizes), *sizes)),
        full_box(b"stco", 0, 0, struct.pack(">II", 1, offset)),
    )


def _track(track_id: int, handler: bytes, name: bytes, stbl: bytes, *extra: bytes) -> bytes:
    t = CREATION_TIME
    tkhd = full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", t, t, track_id, 0, 1800),
        bytes(8),
        bytes(8),
        _MATRIX,
        struct.pack(">II", 64 << 16, 48 << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", t, t, 600, 1800, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), name + b"\x00")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    headers = {
        b"vide": full_box(b"vmhd", 0, 1, bytes(8)),
        b"soun": full_box(b"smhd", 0, 0, bytes(4)),
    }
    header = headers.get(handler, full_box(b"nmhd", 0, 0))
    minf = box(b"minf", header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf), *extra)


def _avc1_entry() -> bytes:
    name = marker("MP4COMPRESSOR").encode()
    compressor = bytes([len(name)]) + name.ljust(31, b"\x00")
    avcc = box(b"avcC", b"\x01\x42\x00\x1e\xff\xe0\x00")
    return box(
        b"avc1",
        bytes(6),
        struct.pack(">H", 1),
        bytes(16),
        struct.pack(">HHIIIH", 64, 48, 0x480000, 0x480000, 0, 1),
        compressor,
        struct.pack(">hh", 24, -1),
        avcc,
        box(b"clDv", marker("MP4ENTRYEXTRA").encode()),
    )


def _mp4a_entry() -> bytes:
    """A version-0 sound sample entry: 28 fixed bytes, then esds and a stray box."""
    fields = struct.pack(">HHIHHHHI", 0, 0, 0, 2, 16, 0, 0, 44100 << 16)
    esds = full_box(b"esds", 0, 0, b"\x03\x19\x00\x02\x00\x04\x11\x40\x15" + bytes(13))
    extra = box(b"clDv", marker("MP4AUDIOEXTRA").encode())
    return box(b"mp4a", bytes(6), struct.pack(">H", 1), fields, esds, extra)


def _user_data() -> bytes:
    def text(btype: bytes, place: str) -> bytes:
        value = marker(place).encode()
        return box(btype, struct.pack(">HH", len(value), 0x15C7), value)

    keys = full_box(
        b"keys",
        0,
        0,
        struct.pack(">I", 2),
        box(b"mdta", b"com.apple.quicktime.location.ISO6709"),
        box(b"mdta", b"com.apple.quicktime.make"),
    )
    values = [
        box(struct.pack(">I", i), box(b"data", struct.pack(">II", 1, 0), marker(p).encode()))
        for i, p in ((1, "MP4ISO6709"), (2, "MP4MAKE"))
    ]
    meta = box(
        b"meta",
        full_box(b"hdlr", 0, 0, bytes(4), b"mdta", bytes(12), b"\x00"),
        keys,
        box(b"ilst", *values),
    )
    udta = box(
        b"udta",
        text(b"\xa9xyz", "MP4XYZ"),
        text(b"\xa9nam", "MP4NAM"),
        text(b"\xa9cmt", "MP4CMT"),
        box(b"XMP_", xmp_packet("MP4XMP")),
    )
    return udta + meta


def _moov(video: list[int], audio: list[int], gps: list[int], base: int) -> bytes:
    t = CREATION_TIME
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", t, t, 600, 1800),
        struct.pack(">IH", 0x10000, 0x100),
        bytes(10),
        _MATRIX,
        bytes(24),
        struct.pack(">I", 4),
    )
    mett = box(b"mett", bytes(6), struct.pack(">H", 1), b"\x00", b"text/plain\x00")
    video_trak = _track(
        1,
        b"vide",
        marker("MP4HDLRNAME").encode(),
        _sample_table(_avc1_entry(), video, base),
        box(b"tref", box(b"cdsc", struct.pack(">I", 3))),
        box(b"udta", box(b"\xa9nam", marker("MP4TRACKNAME").encode())),
    )
    audio_table = _sample_table(_mp4a_entry(), audio, base + sum(video))
    audio_trak = _track(2, b"soun", marker("MP4SOUNDNAME").encode(), audio_table)
    gps_table = _sample_table(mett, gps, base + sum(video) + sum(audio))
    gps_trak = _track(3, b"meta", b"", gps_table)
    return box(b"moov", mvhd, video_trak, audio_trak, gps_trak, _user_data())


MEDIA_BYTES = 3 * 200 + 2 * 50  # video then audio samples, at the start of mdat


def dirty_video(quicktime: bool) -> bytes:
    """MP4 (or MOV) with udta, QuickTime keys, XMP, a GPS metadata track and stray bytes."""
    video = [bytes([0, 0, 0, 12]) + bytes(range(i, i + 196)) for i in range(3)]
    audio = [bytes([0x21, i]) * 25 for i in range(2)]
    gps = [marker("MP4GPSTRACK").encode() + b" +51.5074-000.1278/", b"+51.5075-000.1279/"]
    brand = b"qt  " if quicktime else b"isom"
    head = box(b"ftyp", brand, bytes(4), brand, b"mp42", b"CLDV")
    head += box(b"free", marker("MP4FREE").encode())
    head += box(b"uuid", bytes.fromhex("be7acfcb97a942e89c71999491e3afac"), xmp_packet("MP4UUID"))
    wide = box(b"wide") if quicktime else b""
    sizes = ([len(v) for v in video], [len(a) for a in audio], [len(g) for g in gps])
    base = len(head) + len(_moov(*sizes, 0)) + len(wide) + 8
    mdat = box(b"mdat", *video, *audio, *gps, marker("MP4ORPHAN").encode())
    return head + _moov(*sizes, base) + wide + mdat


def video_markers() -> list[str]:
    places = [
        "MP4COMPRESSOR",
        "MP4ENTRYEXTRA",
        "MP4ISO6709",
        "MP4MAKE",
        "MP4XYZ",
        "MP4NAM",
        "MP4CMT",
        "MP4HDLRNAME",
        "MP4TRACKNAME",
        "MP4SOUNDNAME",
        "MP4AUDIOEXTRA",
        "MP4GPSTRACK",
        "MP4FREE",
        "MP4ORPHAN",
    ]
    return [marker(p) for p in places] + xmp_markers("MP4XMP") + xmp_markers("MP4UUID")
