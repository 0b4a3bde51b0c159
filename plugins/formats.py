"""The formats clindav knows: one row per format, the one place to add one.

Every part that needs format knowledge reads this table:

* the ``filetype`` stage sniffs a body's format from its first bytes
  (``magic``; rows are tried in order, the first that matches wins: HEIF
  before the other ISO BMFF files), checks the name's extension against it
  (``extensions``), sets the upload's content type (``mime_type``),
  opens an image with the one Pillow decoder ``pillow`` names, never
  another, and checks that it is complete with the format's ``structure``
  check (no decode; None: the image is decoded instead);
* the ``scrub`` stage cleans a format with its ``scrubber`` (None: it has
  none, and the share's ``other_files`` option refuses or passes it);
* the DAV provider lets a browser show only ``inline`` content types
  inline; everything else is sent as an attachment (a browser must never
  render what a user uploaded: HTML, SVG, a PDF with script).

A format's ``name`` is what policies write (``filetype: {allow: [...]}``)
and what the audit trail records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import UnsupportedMediaType
from plugins.scrub import gif, heif, jpeg, png, webp
from plugins.scrub.base import HeaderCheck, Scrubber
from plugins.scrub.gif import GifScrubber
from plugins.scrub.heif import HeifScrubber
from plugins.scrub.isobmff_video import IsoBmffVideoScrubber
from plugins.scrub.jpeg import JpegScrubber
from plugins.scrub.png import PngScrubber
from plugins.scrub.tiff import TiffScrubber
from plugins.scrub.webp import WebpScrubber


class StructureStream(Protocol):
    """A format's structural check on a stream: ``feed`` returns its piece unchanged,
    ``finish`` raises MalformedImage if the file was not complete."""

    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class StructureStreamMaker(Protocol):
    """Makes a format's :class:`StructureStream`: with what judges the header's size and
    mode, and the parse of the stream it shares with the scrub (``Format.walk``), if any."""

    def __call__(self, on_header: HeaderCheck, walk: object | None = None) -> StructureStream: ...


# (offset, the bytes that may stand there): every one must match.
Magic = tuple[tuple[int, tuple[bytes, ...]], ...]

_FTYP: Magic = ((4, (b"ftyp",)),)
_HEIF_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"avif")
# The bytes sniffing looks at: enough for every magic above.
SNIFF_BYTES = 32


@dataclass(frozen=True)
class Format:
    name: str
    mime_type: str
    extensions: tuple[str, ...]
    magic: Magic
    pillow: str | None = None
    # Whether a whole body is a complete file of the format, without decoding
    # it (raises MalformedImage); see plugins/filetype.py.  ``structure_stream``
    # is the same check on a streamed body (None: whole bodies only), made
    # with what judges the header's size and mode.
    structure: Callable[[bytes], None] | None = None
    structure_stream: StructureStreamMaker | None = None
    scrubber: Scrubber | None = None
    # One parse of a streamed upload that the structural check and the scrub,
    # reading the same bytes in turn, share (made per upload; PutContext.shared).
    walk: Callable[[], object] | None = None
    inline: bool = False
    # Whether a body of the format that starts with this head can be checked and
    # scrubbed as a stream (None: any); one that cannot is held whole.
    streams_from: Callable[[bytes], bool] | None = None

    def matches(self, head: bytes) -> bool:
        return all(head.startswith(options, offset) for offset, options in self.magic)

    def streams(self, head: bytes) -> bool:
        """Whether a body starting with ``head`` can be taken as a stream."""
        return self.streams_from is None or self.streams_from(head)


FORMATS: tuple[Format, ...] = (
    Format(
        "jpeg",
        "image/jpeg",
        (".jpg", ".jpeg", ".jpe"),
        ((0, (b"\xff\xd8\xff",)),),
        pillow="JPEG",
        structure=jpeg.check_structure,
        structure_stream=jpeg.JpegStructure,
        scrubber=JpegScrubber(),
        walk=jpeg.JpegWalk,
        inline=True,
    ),
    Format(
        "png",
        "image/png",
        (".png",),
        ((0, (b"\x89PNG\r\n\x1a\n",)),),
        pillow="PNG",
        structure=png.check_structure,
        structure_stream=png.PngStructure,
        scrubber=PngScrubber(),
        inline=True,
    ),
    Format(
        "tiff",
        "image/tiff",
        (".tif", ".tiff"),
        ((0, (b"II*\x00", b"MM\x00*")),),
        pillow="TIFF",
        scrubber=TiffScrubber(),
    ),
    Format(
        "webp",
        "image/webp",
        (".webp",),
        ((0, (b"RIFF",)), (8, (b"WEBP",))),
        pillow="WEBP",
        structure=webp.check_structure,
        scrubber=WebpScrubber(),
        inline=True,
    ),
    Format(
        "gif",
        "image/gif",
        (".gif",),
        ((0, (b"GIF87a", b"GIF89a")),),
        pillow="GIF",
        structure=gif.check_structure,
        scrubber=GifScrubber(),
        inline=True,
    ),
    Format(
        "heif",
        "image/heic",
        (".heic", ".heif"),
        (*_FTYP, (8, _HEIF_BRANDS)),
        pillow="HEIF",
        structure=heif.check_structure,
        structure_stream=heif.HeifStructure,
        scrubber=HeifScrubber(),
        inline=True,
        streams_from=heif.streams_from,
    ),
    Format(
        "mp4",
        "video/mp4",
        (".mp4", ".m4v", ".mov"),
        _FTYP,
        scrubber=IsoBmffVideoScrubber(),
        inline=True,
    ),
    Format("pdf", "application/pdf", (".pdf",), ((0, (b"%PDF-",)),)),
)
BY_NAME = {f.name: f for f in FORMATS}
SCRUBBERS: tuple[Scrubber, ...] = tuple(f.scrubber for f in FORMATS if f.scrubber is not None)
INLINE_TYPES: tuple[str, ...] = tuple(f.mime_type for f in FORMATS if f.inline)


def sniff(head: bytes) -> str | None:
    """The name of the format a body's first bytes show, or None when unknown."""
    return next((f.name for f in FORMATS if f.matches(head)), None)


def format_of_name(name: str) -> str | None:
    """The format a file name's extension claims, or None."""
    lower = name.lower()
    return next((f.name for f in FORMATS if lower.endswith(f.extensions)), None)


def scrubber_for(format_name: str) -> Scrubber:
    """The built-in scrubber called ``format_name``; UnsupportedMediaType if none."""
    for scrubber in SCRUBBERS:
        if scrubber.format_name == format_name:
            return scrubber
    raise UnsupportedMediaType(f"no scrubber for format {format_name!r}")
