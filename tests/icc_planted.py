"""ICC profiles with a patient's name planted wherever a profile can carry text.

Built from LittleCMS's sRGB profile (its colour tags), as version 4 (``mluc``
texts) or version 2 (``desc``/``text`` types): the name in ``desc``,
``cprt``, ``dmnd``, ``dmdd``, a private tag, the header's reserved bytes,
the bytes after a colour tag's data and a gap no tag names.
"""

from __future__ import annotations

import struct

from PIL import ImageCms

NAME = "Jane Patient-Smith 9434765919"


def name_hits(data: bytes) -> list[str]:
    """Each part of NAME found in ``data``, as ASCII or UTF-16BE (a cut name counts too)."""
    return [
        f"{part} ({encoding})"
        for part in ("Jane", "Patient", "Smith", "9434765919")
        for encoding in ("ascii", "utf-16-be")
        if part.encode(encoding) in data
    ]


def _mluc(text: str) -> bytes:
    utf16 = text.encode("utf-16-be")
    return (
        b"mluc" + bytes(4) + struct.pack(">II2s2sII", 1, 12, b"en", b"GB", len(utf16), 28) + utf16
    )


def _text_description(text: str) -> bytes:
    ascii_ = text.encode() + b"\x00"
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_ + bytes(8 + 3 + 67)


def _colour_tags() -> list[tuple[bytes, bytes]]:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (n,) = struct.unpack(">I", profile[128:132])
    tags = []
    for i in range(n):
        sig, offset, size = struct.unpack(">4sII", profile[132 + 12 * i : 144 + 12 * i])
        if sig not in (b"desc", b"cprt"):
            tags.append((sig, profile[offset : offset + size]))
    return tags


def planted_profile(version: int = 4) -> bytes:
    text = _mluc if version >= 4 else _text_description
    colour = [
        # The name hidden after the white point's data, inside its declared size.
        (sig, data + NAME.encode() if sig == b"wtpt" else data)
        for sig, data in _colour_tags()
    ]
    tags = [
        *colour,
        (b"desc", text(f"Camera profile of {NAME}")),
        (b"cprt", _mluc(NAME) if version >= 4 else b"text" + bytes(4) + NAME.encode() + b"\x00"),
        (b"dmnd", text(NAME)),
        (b"dmdd", text(f"Clinic camera, patient {NAME}")),
        (b"zzzz", b"text" + bytes(4) + NAME.encode() + b"\x00"),
    ]
    gap = NAME.encode() + bytes(-len(NAME) % 4)
    table_end = 132 + 12 * len(tags)
    body, entries = bytearray(gap), []
    for sig, data in tags:
        entries.append(struct.pack(">4sII", sig, table_end + len(body), len(data)))
        body += data + bytes(-len(data) % 4)
    header = bytearray(128)
    header[8:12] = bytes([version, 0x40 if version >= 4 else 0x10, 0, 0])
    header[12:24] = b"mntrRGB XYZ "
    header[24:36] = struct.pack(">6H", 2026, 3, 4, 10, 11, 12)
    header[36:40] = b"acsp"
    header[48:56] = b"JPSMcam1"
    header[68:80] = struct.pack(">3i", 63190, 65536, 54061)  # D50
    header[100:128] = NAME.encode()[:28]
    total = table_end + len(body)
    header[0:4] = struct.pack(">I", total)
    return bytes(header) + struct.pack(">I", len(tags)) + b"".join(entries) + bytes(body)
