"""ICC profiles: keep the colour data, drop every free text.

One sanitiser for every format that embeds a profile (JPEG APP2, PNG iCCP,
WebP ICCP, the TIFF ICC tag, HEIF's ``colr`` property).  A profile is a 128-byte header, a tag table
and tag data; text can hide in text tags (``desc``, ``cprt``, ``dmnd``,
``dmdd``, ``vued``, ``scrd``...), in tags of types that carry names or
bytes (``data``, ``dtim``, ``ncl2``, ``clrt``, ``pseq``, ``dict``...), in
private tags, in header fields (creation date, manufacturer, model, creator,
profile id, reserved bytes) and in the gaps between tag data.

Decision: :func:`sanitize_profile` builds a new profile rather than editing
the old one.  It keeps only the colour tags (:data:`_COLOUR_TAGS`) whose
type is a numeric colour type (:data:`_COLOUR_TAGS = frozenset(
    {
        *(b"wtpt", b"bkpt", b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC", b"kTRC"),
        *(b"chad", b"chrm", b"lumi", b"meas", b"view", b"gamt", b"cicp", b"clro"),
        *(b"A2B0", b"A2B1", b"A2B2", b"B2A0", b"B2A1", b"B2A2", b"pre0", b"pre1", b"pre2"),
        *(b"D2B0", b"D2B1", b"D2B2", b"D2B3", b"B2D0", b"B2D1", b"B2D2", b"B2D3"),
    }
)
_COLOUR_TYPES`), each cut to its
type's exact length where that is fixed by its counts, with its reserved
bytes zeroed and shared data kept shared; it writes the two tags the ICC
specification requires (``desc``, ``cprt``) with a fixed neutral text in the
type of the profile's version; and it copies from the header only the fields
colour management reads, zeroing the rest.  Nothing from the gaps is copied.
:func:`profile_residue` re-parses a profile and names whatever the sanitiser
would change: a sanitised profile is its own fixed point.

Errors: a profile that does not parse (no ``acsp``, a size or tag table that
does not fit, more than :data:`MAX_TAGS` tags) is MalformedImage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from plugins.scrub.base import MalformedImage, count

MAX_TAGS = 200
HEADER = 128
NEUTRAL_TEXT = "ICC profile"
_COLOUR_TAGS = frozenset(
    {
        *(b"wtpt", b"bkpt", b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC", b"kTRC"),
        *(b"chad", b"chrm", b"lumi", b"meas", b"view", b"gamt", b"cicp", b"clro"),
        *(b"A2B0", b"A2B1", b"A2B2", b"B2A0", b"B2A1", b"B2A2", b"pre0", b"pre1", b"pre2"),
        *(b"D2B0", b"D2B1", b"D2B2", b"D2B3", b"B2D0", b"B2D1", b"B2D2", b"B2D3"),
    }
)
_COLOUR_TYPES = frozenset(
    t.encode().ljust(4) for t in ("XYZ", "curv", "para", "mft1", "mft2", "mAB", "mBA", "sf32")
) | frozenset({b"chrm", b"meas", b"view", b"mpet", b"cicp", b"clro"})
# Parameters of each parametricCurveType function type.
_PARA_PARAMS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
_TEXT_TAGS = (b"desc", b"cprt")


@dataclass
class Sanitized:
    """A rebuilt profile and the names of what was removed (never the values)."""

    data: bytes
    removed: dict[str, int] = field(default_factory=dict)


def sanitize_profile(profile: bytes) -> Sanitized:
    """The profile with its colour data only (module docstring); MalformedImage if unsound."""
    tags = _read_tags(profile)
    removed: dict[str, int] = {}
    kept: list[tuple[bytes, bytes]] = []
    for sig, data in tags:
        if sig in _COLOUR_TAGS and data[:4] in _COLOUR_TYPES:
            kept.append((sig, _exact(data)))
        elif sig not in _TEXT_TAGS:
            count(removed, "icc:" + sig.decode("latin-1").strip())
    if _header(profile)[4:] != profile[4:HEADER]:
        count(removed, "icc:header")
    version = profile[8]
    for sig in _TEXT_TAGS:
        kept.append((sig, _neutral_text(sig, version)))
    data = _assemble(_header(profile), kept)
    if data != profile and not removed:
        count(removed, "icc:text")  # desc/cprt replaced, or gaps and padding dropped
    return Sanitized(data, removed)


def profile_residue(profile: bytes) -> list[str]:
    """Names of what :func:`sanitize_profile` would still remove (empty: clean)."""
    result = sanitize_profile(profile)
    return [] if result.data == profile else sorted(result.removed) or ["icc:text"]


def _read_tags(profile: bytes) -> list[tuple[bytes, bytes]]:
    if len(profile) < HEADER + 4 or profile[36:40] != b"acsp":
        raise MalformedImage("icc: no acsp header")
    declared = struct.unpack(">I", profile[:4])[0]
    if declared > len(profile):
        raise MalformedImage("icc: profile is truncated")
    profile = profile[:declared]  # bytes past the declared size are never copied
    (n,) = struct.unpack(">I", profile[HEADER : HEADER + 4])
    table_end = HEADER + 4 + 12 * n
    if n > MAX_TAGS or table_end > len(profile):
        raise MalformedImage(f"icc: {n} tags do not fit")
    tags = []
    for i in range(n):
        sig, offset, size = struct.unpack(
            ">4sII", profile[HEADER + 4 + 12 * i : 16 + 12 * i + HEADER]
        )
        if size < 8 or offset < table_end or offset + size > len(profile):
            raise MalformedImage(f"icc: tag {sig!r} outside the profile")
        tags.append((sig, profile[offset : offset + size]))
    return tags


def _header(profile: bytes) -> bytes:
    """The header fields colour management reads; everything else zero (size set later)."""
    out = bytearray(HEADER)
    out[8:24] = profile[8:24]  # version, device class, colour space, PCS
    out[36:40] = b"acsp"
    out[47] = profile[47] & 0x03  # embedded / used-independently flags
    out[63] = profile[63] & 0x0F  # reflective, matte, negative, black and white
    out[64:68] = bytes(3) + bytes([profile[67] & 0x03])  # rendering intent
    out[68:80] = profile[68:80]  # PCS illuminant
    return bytes(out)


def _exact(data: bytes) -> bytes:
    """A colour tag's data with its reserved bytes zeroed, cut to its type's length."""
    kind, body = data[:4], data[8:]
    length = len(data)
    if kind == b"XYZ ":
        length = 8 + 12  # every colour tag of this type holds one XYZ number
    elif kind == b"sf32":
        length = 8 + 4 * 9  # chad: a 3x3 matrix
    elif kind == b"curv" and len(body) >= 4:
        length = 12 + 2 * struct.unpack(">I", body[:4])[0]
    elif kind == b"para" and len(body) >= 4:
        length = 12 + 4 * _PARA_PARAMS.get(struct.unpack(">H", body[:2])[0], 0)
    elif kind == b"chrm" and len(body) >= 4:
        length = 12 + 8 * struct.unpack(">H", body[:2])[0]
    elif kind in (b"meas", b"view"):
        length = 36
    if length > len(data):
        raise MalformedImage(f"icc: {kind!r} tag is truncated")
    return kind + bytes(4) + data[8:length]


def _neutral_text(sig: bytes, version: int) -> bytes:
    """``desc`` or ``cprt`` with a fixed text, in the type the profile's version uses."""
    text = NEUTRAL_TEXT if sig == b"desc" else ""
    if version >= 4:
        utf16 = text.encode("utf-16-be")
        return (
            b"mluc"
            + bytes(4)
            + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(utf16), 28)
            + utf16
        )
    ascii_ = text.encode("ascii") + b"\x00"
    if sig == b"cprt":
        return b"text" + bytes(4) + ascii_
    # textDescriptionType: ASCII, then empty Unicode and ScriptCode parts.
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_ + bytes(8 + 3 + 67)


def _assemble(header: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """Header, tag table and 4-byte aligned tag data; equal data is stored once."""
    table_end = HEADER + 4 + 12 * len(tags)
    offsets: dict[bytes, int] = {}
    body = bytearray()
    entries = []
    for sig, data in tags:
        if data not in offsets:
            offsets[data] = table_end + len(body)
            body += data + bytes(-len(data) % 4)
        entries.append(struct.pack(">4sII", sig, offsets[data], len(data)))
    total = table_end + len(body)
    head = struct.pack(">I", total) + header[4:]
    return head + struct.pack(">I", len(tags)) + b"".join(entries) + bytes(body)
