"""Dirty JPEG, PNG, WebP, GIF and TIFF files, and the shared planting helpers.

Part of the corpus generator (:mod:`tests.scrub_corpus`).  Pillow and piexif
write what they can; segments, chunks and blocks they cannot write are built
by hand.  Every planted value holds ``marker(place)``.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import piexif
from PIL import Image, ImageCms, PngImagePlugin

CAPTURE_DATE = "2024:05:06 07:08:09"
ORIENTATION = 6


def marker(place: str) -> str:
    return f"CLINDAV-PLANT-{place}-1"


@functools.cache
def icc_profile() -> bytes:
    """LittleCMS's sRGB profile with a fixed creation date (it stamps the current time)."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile[:24] + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + profile[36:]


def photo(width: int, height: int, seed: int = 1) -> Image.Image:
    """A smooth gradient with noise: compresses like a photo, deterministic."""
    base = Image.linear_gradient("L").resize((width, height))
    noise = Image.frombytes("L", (width, height), random.Random(seed).randbytes(width * height))
    return Image.merge("RGB", (base, noise.point(lambda v: v // 4 + 96), base.rotate(90)))


def _thumbnail_jpeg(place: str) -> bytes:
    out = io.BytesIO()
    photo(32, 24, seed=7).save(out, "JPEG", quality=70, comment=marker(place).encode())
    return out.getvalue()


def exif_tiff(prefix: str, thumbnail: bool = True) -> bytes:
    """A full phone-like EXIF (piexif.dump) with a marker in every text tag."""
    zeroth = {
        piexif.ImageIFD.Make: marker(f"{prefix}MAKE"),
        piexif.ImageIFD.Model: marker(f"{prefix}MODEL"),
        piexif.ImageIFD.Artist: marker(f"{prefix}ARTIST"),
        piexif.ImageIFD.Copyright: marker(f"{prefix}COPYRIGHT"),
        piexif.ImageIFD.ImageDescription: marker(f"{prefix}DESCRIPTION"),
        piexif.ImageIFD.Software: marker(f"{prefix}SOFTWARE"),
        piexif.ImageIFD.HostComputer: marker(f"{prefix}HOST"),
        piexif.ImageIFD.XPAuthor: marker(f"{prefix}XPAUTHOR").encode("utf-16-le"),
        piexif.ImageIFD.Orientation: ORIENTATION,
        piexif.ImageIFD.DateTime: "2024:05:06 10:00:00",
    }
    exif = {
        piexif.ExifIFD.DateTimeOriginal: CAPTURE_DATE,
        piexif.ExifIFD.BodySerialNumber: marker(f"{prefix}SERIAL"),
        piexif.ExifIFD.LensSerialNumber: marker(f"{prefix}LENSSERIAL"),
        piexif.ExifIFD.CameraOwnerName: marker(f"{prefix}OWNER"),
        piexif.ExifIFD.ImageUniqueID: marker(f"{prefix}UNIQUEID"),
        piexif.ExifIFD.MakerNote: b"Apple iOS\x00" + marker(f"{prefix}MAKERNOTE").encode(),
        piexif.ExifIFD.UserComment: b"ASCII\x00\x00\x00" + marker(f"{prefix}USERCOMMENT").encode(),
    }
    gps = {
        piexif.GPSIFD.GPSLatitudeRef: "N",
        piexif.GPSIFD.GPSLatitude: ((51, 1), (30, 1), (2544, 100)),
        piexif.GPSIFD.GPSLongitudeRef: "W",
        piexif.GPSIFD.GPSLongitude: ((0, 1), (7, 1), (3960, 100)),
        piexif.GPSIFD.GPSProcessingMethod: b"ASCII\x00\x00\x00" + marker(f"{prefix}GPS").encode(),
        piexif.GPSIFD.GPSAreaInformation: b"ASCII\x00\x00\x00"
        + marker(f"{prefix}GPSAREA").encode(),
    }
    tables = {"0th": zeroth, "Exif": exif, "GPS": gps, "1st": {}, "thumbnail": None}
    if thumbnail:
        tables["1st"] = {piexif.ImageIFD.Compression: 6, piexif.ImageIFD.XResolution: (72, 1)}
        tables["thumbnail"] = _thumbnail_jpeg(f"{prefix}THUMBNAIL")
    return piexif.dump(tables)[6:]


def exif_markers(prefix: str, thumbnail: bool = True) -> list[str]:
    places = [
        "MAKE",
        "MODEL",
        "ARTIST",
        "COPYRIGHT",
        "DESCRIPTION",
        "SOFTWARE",
        "HOST",
        "XPAUTHOR",
        "SERIAL",
        "LENSSERIAL",
        "OWNER",
        "UNIQUEID",
        "MAKERNOTE",
        "USERCOMMENT",
        "GPS",
        "GPSAREA",
    ] + ["THUMBNAIL"] * thumbnail
    return [marker(prefix + place) for place in places]


def xmp_packet(place: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        f'exif:GPSLatitude="51,30.424N" exif:GPSAreaInformation="{marker(place + "GPS")}">'
        f"<dc:creator><rdf:Seq><rdf:li>{marker(place + 'CREATOR')}</rdf:li></rdf:Seq></dc:creator>"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def xmp_markers(place: str) -> list[str]:
    return [marker(place + "GPS"), marker(place + "CREATOR")]


# --- JPEG -----------------------------------------------------------------


def _segment(code: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, code, len(payload) + 2) + payload


def _iptc() -> bytes:
    records = b"".join(
        b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(text)) + text
        for dataset, text in (
            (80, marker("IPTCBYLINE").encode()),
            (90, marker("IPTCCITY").encode()),
        )
    )
    block = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(records)) + records
    return b"Photoshop 3.0\x00" + block + b"\x00" * (len(records) & 1)


def _mpf(first_size: int, second_size: int, second_offset: int) -> bytes:
    """An MPF APP2 payload (little-endian MP index IFD) naming two images."""
    entries = struct.pack("<IIIHH", 0x20030000, first_size, 0, 0, 0)
    entries += struct.pack("<IIIHH", 0x00020002, second_size, second_offset, 0, 0)
    ifd = struct.pack("<H", 3)
    ifd += struct.pack("<HHI4s", 0xB000, 7, 4, b"0100")
    ifd += struct.pack("<HHII", 0xB001, 4, 1, 2)
    ifd += struct.pack("<HHII", 0xB002, 7, len(entries), 8 + 2 + 36 + 4)
    return b"MPF\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + entries


def phone_jpeg(width: int = 320, height: int = 240, quality: int = 90) -> bytes:
    """A phone-like JPEG: every metadata place filled, an MPF secondary image after EOI."""
    out = io.BytesIO()
    photo(width, height).save(
        out,
        "JPEG",
        quality=quality,
        exif=b"Exif\x00\x00" + exif_tiff(""),
        icc_profile=icc_profile(),
        comment=marker("COM").encode(),
    )
    base = out.getvalue()
    jfif = _segment(
        0xE0,
        b"JFIF\x00\x01\x01\x00\x00\x48\x00\x48\x09\x01"
        + marker("JFIFTHUMB").encode().ljust(27, b"-"),
    )
    extended = b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + struct.pack(">II", 40, 0)
    extras = (
        jfif
        + _segment(0xE0, b"JFXX\x00\x13" + marker("JFXXTHUMB").encode())
        + _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet("XMP"))
        + _segment(0xE1, extended + marker("EXTXMP").encode())
        + _segment(0xED, _iptc())
        + _segment(0xEC, b"Ducky\x00" + marker("APP12").encode())
        + _segment(0xEF, marker("APP15").encode())
    )
    body = base[2:]
    if body[:2] == b"\xff\xe0":  # replace Pillow's own JFIF APP0
        body = body[2 + struct.unpack(">H", body[2:4])[0] :]
    secondary = _thumbnail_jpeg("MPFIMAGE")
    head = b"\xff\xd8" + extras
    mpf_len = len(_segment(0xE2, _mpf(0, 0, 0)))
    first_size = len(head) + mpf_len + len(body)
    mpf_at = len(head) + 4 + 4  # the MP header follows the APP2 marker, length and "MPF\0"
    mpf = _segment(0xE2, _mpf(first_size, len(secondary), first_size - mpf_at))
    return head + mpf + body + secondary + marker("APPENDED").encode()


def jpeg_markers() -> list[str]:
    places = [
        "COM",
        "JFIFTHUMB",
        "JFXXTHUMB",
        "EXTXMP",
        "IPTCBYLINE",
        "IPTCCITY",
        "APP12",
        "APP15",
        "MPFIMAGE",
        "APPENDED",
    ]
    return exif_markers("") + xmp_markers("XMP") + [marker(p) for p in places]


# --- PNG ------------------------------------------------------------------


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I4s", len(data), ctype) + data + struct.pack(">I", zlib.crc32(ctype + data))
    )


def dirty_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", marker("PNGTEXT"))
    info.add_text("Comment", marker("PNGZTXT"), zip=True)
    info.add_itxt("XML:com.adobe.xmp", xmp_packet("PNGXMP").decode(), zip=False)
    info.add_itxt("Description", marker("PNGITXTZ"), lang="en", tkey=marker("PNGITXTKEY"), zip=True)
    info.add(b"tIME", struct.pack(">HBBBBB", 2024, 5, 6, 7, 8, 9))
    info.add(b"prVt", marker("PNGPRIVATE").encode())
    out = io.BytesIO()
    exif = b"Exif\x00\x00" + exif_tiff("PNGEXIF", thumbnail=False)
    photo(96, 64).save(out, "PNG", pnginfo=info, exif=exif)
    data = out.getvalue()
    # Pillow names the iCCP profile itself; plant a marker in the name instead.
    iccp = png_chunk(
        b"iCCP", marker("ICCNAME").encode() + b"\x00\x00" + zlib.compress(icc_profile())
    )
    return data[:33] + iccp + data[33:] + marker("PNGAPPENDED").encode()


def png_markers() -> list[str]:
    places = [
        "PNGTEXT",
        "PNGZTXT",
        "PNGITXTZ",
        "PNGITXTKEY",
        "PNGPRIVATE",
        "ICCNAME",
        "PNGAPPENDED",
    ]
    return [marker(p) for p in places] + exif_markers("PNGEXIF", False) + xmp_markers("PNGXMP")


# --- WebP -----------------------------------------------------------------


def riff_chunk(fourcc: bytes, data: bytes) -> bytes:
    return struct.pack("<4sI", fourcc, len(data)) + data + b"\x00" * (len(data) & 1)


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos < len(data):
        fourcc, size = struct.unpack("<4sI", data[pos : pos + 8])
        chunks.append((fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP" + b"".join(riff_chunk(f, d) for f, d in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def dirty_webp(animated: bool) -> bytes:
    """Extended WebP with EXIF, XMP and ICC; unknown chunks planted by hand."""
    out = io.BytesIO()
    frames = [photo(64, 48, seed=s) for s in (1, 2)]
    options = {
        "exif": b"Exif\x00\x00" + exif_tiff("WEBPEXIF", False),
        "xmp": xmp_packet("WEBPXMP"),
        "icc_profile": icc_profile(),
        "lossless": True,
    }
    if animated:
        options.update(save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(out, "WEBP", **options)
    chunks = riff_chunks(out.getvalue())
    chunks.insert(-1, (b"CLDV", marker("WEBPUNKNOWN").encode()))
    if animated:
        at = next(i for i, (f, _) in enumerate(chunks) if f == b"ANMF")
        chunks[at] = (b"ANMF", chunks[at][1] + riff_chunk(b"CLDV", marker("ANMFUNKNOWN").encode()))
    return riff(chunks) + marker("WEBPAPPENDED").encode()


def webp_markers(animated: bool) -> list[str]:
    places = ["WEBPUNKNOWN", "WEBPAPPENDED"] + ["ANMFUNKNOWN"] * animated
    return [marker(p) for p in places] + exif_markers("WEBPEXIF", False) + xmp_markers("WEBPXMP")


# --- GIF ------------------------------------------------------------------


def _gif_ext(label: int, blocks: list[bytes]) -> bytes:
    return bytes([0x21, label]) + b"".join(bytes([len(b)]) + b for b in blocks) + b"\x00"


def dirty_gif() -> bytes:
    out = io.BytesIO()
    frames = [photo(48, 32, seed=s).convert("P") for s in (1, 2)]
    frames[0].save(
        out,
        "GIF",
        save_all=True,
        append_images=frames[1:],
        loop=0,
        duration=80,
        comment=marker("GIFCOMMENT").encode(),
    )
    data = out.getvalue()
    trailer = data.rindex(b"\x3b")
    # XMP in GIF: raw packet, then a "magic trailer" that ends any sub-block walk.
    magic = b"\x01" + bytes(range(255, -1, -1)) + b"\x00"
    xmp = b"\x21\xff\x0bXMP DataXMP" + xmp_packet("GIFXMP") + magic
    text = _gif_ext(0x01, [bytes(12), marker("GIFPLAINTEXT").encode()])
    vendor = _gif_ext(0xFF, [b"CLINDAVX1.0", marker("GIFAPPEXT").encode()])
    netscape_extra = _gif_ext(
        0xFF, [b"NETSCAPE2.0", b"\x01\x00\x00", b"\x02" + marker("NSBUF").encode()]
    )
    extras = xmp + text + vendor + netscape_extra
    return data[:trailer] + extras + data[trailer:] + marker("GIFAPPENDED").encode()


def gif_markers() -> list[str]:
    places = ["GIFCOMMENT", "GIFPLAINTEXT", "GIFAPPEXT", "NSBUF", "GIFAPPENDED"]
    return [marker(p) for p in places] + xmp_markers("GIFXMP")


# --- TIFF -----------------------------------------------------------------


def _append_thumbnail_page(data: bytes) -> bytes:
    """Chain a reduced-resolution page (NewSubfileType=1) with its own description."""
    (ifd0,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd0 : ifd0 + 2])
    next_at = ifd0 + 2 + 12 * n
    text = marker("TIFFTHUMBPAGE").encode() + b"\x00"
    pixels_at = len(data) + (len(data) & 1)
    text_at = pixels_at + 4 * 3
    ifd_at = text_at + len(text) + (len(text) & 1)
    tags = [
        (254, 4, 1, 1),
        (256, 3, 1, 2),
        (257, 3, 1, 2),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (270, 2, len(text), text_at),
        (273, 4, 1, pixels_at),
        (277, 3, 1, 1),
        (278, 3, 1, 2),
        (279, 4, 1, 4),
    ]
    ifd = struct.pack("<H", len(tags))
    ifd += b"".join(struct.pack("<HHII", tag, typ, n_, value) for tag, typ, n_, value in tags)
    tail = (
        b"\x00" * (pixels_at - len(data))
        + bytes(12)
        + text
        + b"\x00" * (ifd_at - text_at - len(text))
    )
    head = data[:next_at] + struct.pack("<I", ifd_at) + data[next_at + 4 :]
    return head + tail + ifd + bytes(4)


def dirty_tiff() -> bytes:
    from PIL.TiffImagePlugin import IFDRational

    def rationals(*values: int) -> tuple[IFDRational, ...]:
        return tuple(IFDRational(v, 1) for v in values)

    text = {
        270: "DESCRIPTION",
        271: "MAKE",
        272: "MODEL",
        305: "SOFTWARE",
        315: "ARTIST",
        316: "HOST",
        33432: "COPYRIGHT",
        269: "DOCNAME",
        285: "PAGENAME",
    }
    tiffinfo: dict[int, object] = {tag: marker("TIFF" + place) for tag, place in text.items()}
    tiffinfo.update(
        {
            274: ORIENTATION,
            306: "2024:05:06 10:00:00",
            700: xmp_packet("TIFFXMP"),
            33723: marker("TIFFIPTC").encode(),
            34377: b"8BIM\x04\x04\x00\x00\x00\x00\x00\x20"
            + marker("TIFFPHOTOSHOP").encode().ljust(32),
            0x8769: {
                0x9003: CAPTURE_DATE,
                0xA431: marker("TIFFSERIAL"),
                0xA430: marker("TIFFOWNER"),
                0x927C: marker("TIFFMAKERNOTE").encode(),
            },
            0x8825: {1: "N", 2: rationals(51, 30, 25), 27: marker("TIFFGPS").encode()},
        }
    )
    out = io.BytesIO()
    photo(80, 60).save(
        out, "TIFF", compression="raw", tiffinfo=tiffinfo, icc_profile=icc_profile(), dpi=(300, 300)
    )
    return _append_thumbnail_page(out.getvalue())


def tiff_markers() -> list[str]:
    places = [
        "DESCRIPTION",
        "MAKE",
        "MODEL",
        "SOFTWARE",
        "ARTIST",
        "HOST",
        "COPYRIGHT",
        "DOCNAME",
        "PAGENAME",
        "IPTC",
        "PHOTOSHOP",
        "SERIAL",
        "OWNER",
        "MAKERNOTE",
        "GPS",
        "THUMBPAGE",
    ]
    return [marker("TIFF" + p) for p in places] + xmp_markers("TIFFXMP")
