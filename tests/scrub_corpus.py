"""Generates the dirty test corpus for the scrubbers (no binary fixtures).

Every hiding place a format offers gets a planted value holding a unique
marker, ``CLINDAV-PLANT-<PLACE>-1``, so a raw byte search (or exiftool's
output) finds any residue and names the place it came from:

- JPEG: EXIF IFD0 text tags, serials, owner, MakerNote, UserComment, GPS IFD,
  IFD1 thumbnail, JFIF and JFXX thumbnails, XMP with GPS, extended XMP,
  IPTC (APP13), COM, APP12/APP15, an MPF secondary image, appended bytes;
- PNG: tEXt, zTXt, iTXt (plain and compressed), tIME, eXIf, a private
  chunk, the iCCP profile name, bytes after IEND;
- WebP (still and animated): EXIF, XMP, unknown chunks (also inside ANMF),
  bytes after the RIFF payload;
- GIF: comment, plain text, XMP and vendor application extensions, extra
  NETSCAPE sub-blocks, bytes after the trailer;
- TIFF: IFD0 text tags, XMP, IPTC, Photoshop, EXIF and GPS IFDs, a
  reduced-resolution thumbnail page;
- HEIF: Exif, XMP, thumbnail, second image (pillow_heif); item names, hdlr
  name, ``udes``, depth map with its own Exif, gain map with its own XMP,
  entity groups, a uuid box, stray mdat bytes (hand-built);
- MP4/MOV: ``©xyz``, ``©nam``, ``©cmt``, XMP in udta and in a uuid box,
  QuickTime keys (ISO6709, make), a GPS metadata track, track udta and tref,
  handler and compressor names, unknown sample-entry boxes, free-box text,
  stray mdat bytes.

Run ``python -m tests.scrub_corpus DIR`` to write the files for inspection.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

from tests import scrub_corpus_bmff as bmff
from tests import scrub_corpus_images as images

CAPTURE_DATE = images.CAPTURE_DATE
ORIENTATION = images.ORIENTATION
MARKER_PREFIX = b"CLINDAV-PLANT"


@dataclass(frozen=True)
class DirtyFile:
    """A generated file, the scrubber that takes it and what was planted."""

    name: str
    format: str
    data: bytes
    markers: tuple[str, ...]


# name -> (format, generator, markers); names are stable test ids.
_RECIPES = {
    "phone.jpg": ("jpeg", images.phone_jpeg, images.jpeg_markers),
    "dirty.png": ("png", images.dirty_png, images.png_markers),
    "still.webp": ("webp", lambda: images.dirty_webp(False), lambda: images.webp_markers(False)),
    "animated.webp": ("webp", lambda: images.dirty_webp(True), lambda: images.webp_markers(True)),
    "animated.gif": ("gif", images.dirty_gif, images.gif_markers),
    "scan.tif": ("tiff", images.dirty_tiff, images.tiff_markers),
    "pillow-heif.heic": ("heif", bmff.heif_from_pillow_heif, bmff.heif_from_pillow_heif_markers),
    "hand-built.heic": ("heif", bmff.heif_hand_built, bmff.heif_hand_built_markers),
    "phone.mp4": ("isobmff-video", lambda: bmff.dirty_video(False), bmff.video_markers),
    "phone.mov": ("isobmff-video", lambda: bmff.dirty_video(True), bmff.video_markers),
}
NAMES = tuple(_RECIPES)


@functools.cache
def dirty_file(name: str) -> DirtyFile:
    fmt, generate, markers = _RECIPES[name]
    return DirtyFile(name, fmt, generate(), tuple(markers()))


def dirty_corpus() -> list[DirtyFile]:
    return [dirty_file(name) for name in NAMES]


def write_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for dirty in dirty_corpus():
        (directory / dirty.name).write_bytes(dirty.data)


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1]))
