"""What each scrubber keeps survives: pixels (bit-exact), orientation, ICC, date."""

from __future__ import annotations

import io
import struct

import pillow_heif
import pytest
from PIL import Image, ImageSequence

from plugins.formats import scrubber_for
from plugins.scrub.base import ScrubOptions, ScrubResult
from plugins.scrub.icc import sanitize_profile
from tests.scrub_corpus import CAPTURE_DATE, NAMES, ORIENTATION, DirtyFile
from tests.scrub_corpus_bmff import MEDIA_BYTES
from tests.scrub_corpus_images import icc_profile

EXIF_IFD, DATE_TIME_ORIGINAL = 0x8769, 0x9003


def frames(data: bytes) -> list[tuple[str, tuple[int, int], bytes]]:
    with Image.open(io.BytesIO(data)) as image:
        return [(f.mode, f.size, f.tobytes()) for f in ImageSequence.Iterator(image)]


def test_jpeg_pixels_are_identical(corpus: dict[str, DirtyFile], cleaned: dict) -> None:
    with Image.open(io.BytesIO(corpus["phone.jpg"].data)) as dirty:  # MPO: frame 0
        expected = (dirty.mode, dirty.size, dirty.tobytes())
    with Image.open(io.BytesIO(cleaned["phone.jpg"].data)) as clean:
        assert clean.format == "JPEG"
        assert (clean.mode, clean.size, clean.tobytes()) == expected


def test_jpeg_entropy_data_is_copied_not_reencoded(corpus: dict, cleaned: dict) -> None:
    out = cleaned["phone.jpg"].data
    scan = out[out.index(b"\xff\xda") :]
    assert scan in corpus["phone.jpg"].data


def test_jpeg_keeps_orientation_icc_and_date(cleaned: dict[str, ScrubResult]) -> None:
    result = cleaned["phone.jpg"]
    with Image.open(io.BytesIO(result.data)) as clean:
        exif = clean.getexif()
        assert exif[0x0112] == ORIENTATION
        assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == CAPTURE_DATE
        assert clean.info["icc_profile"] == sanitize_profile(icc_profile()).data
    assert {"orientation", "DateTimeOriginal", "icc-profile"} <= set(result.kept)


@pytest.mark.parametrize("name", ["dirty.png", "still.webp", "animated.webp", "animated.gif"])
def test_lossless_formats_keep_every_frame(name: str, corpus: dict, cleaned: dict) -> None:
    assert frames(cleaned[name].data) == frames(corpus[name].data)


@pytest.mark.parametrize("name", ["dirty.png", "still.webp", "animated.webp"])
def test_orientation_date_and_icc_survive(name: str, cleaned: dict[str, ScrubResult]) -> None:
    with Image.open(io.BytesIO(cleaned[name].data)) as clean:
        exif = clean.getexif()
        assert exif[0x0112] == ORIENTATION
        assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == CAPTURE_DATE
        assert clean.info["icc_profile"] == sanitize_profile(icc_profile()).data


def test_gif_keeps_looping_and_timing(cleaned: dict[str, ScrubResult]) -> None:
    with Image.open(io.BytesIO(cleaned["animated.gif"].data)) as clean:
        assert clean.info["loop"] == 0 and clean.info["duration"] == 80
    assert cleaned["animated.gif"].kept == ("netscape-loop",)


def test_tiff_pixels_icc_and_date(corpus: dict, cleaned: dict[str, ScrubResult]) -> None:
    assert frames(cleaned["scan.tif"].data) == frames(corpus["scan.tif"].data)[:1]
    with Image.open(io.BytesIO(cleaned["scan.tif"].data)) as clean:
        assert clean.info["icc_profile"] == sanitize_profile(icc_profile()).data
        assert clean.getexif().get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == CAPTURE_DATE
        assert getattr(clean, "n_frames", 1) == 1


@pytest.mark.parametrize("name", ["pillow-heif.heic", "hand-built.heic"])
def test_heif_keeps_only_the_primary_image(name: str, corpus: dict, cleaned: dict) -> None:
    dirty = pillow_heif.open_heif(io.BytesIO(corpus[name].data))
    clean = pillow_heif.open_heif(io.BytesIO(cleaned[name].data))
    assert clean.to_pillow().tobytes() == dirty.to_pillow().tobytes()
    assert clean.size == dirty.size  # rotation (irot) kept
    assert len(clean) == 1 and clean.info["thumbnails"] == []
    assert clean.info["depth_images"] == [] and clean.info["aux"] == {}
    assert clean.info.get("xmp") is None
    exif = Image.Exif()
    exif.load(clean.info["exif"])
    assert dict(exif) == {EXIF_IFD: exif[EXIF_IFD]}
    assert dict(exif.get_ifd(EXIF_IFD)) == {DATE_TIME_ORIGINAL: CAPTURE_DATE}


def test_heif_keeps_the_icc_profile(cleaned: dict[str, ScrubResult]) -> None:
    clean = pillow_heif.open_heif(io.BytesIO(cleaned["hand-built.heic"].data))
    assert clean.info["icc_profile"] == sanitize_profile(icc_profile()).data


@pytest.mark.parametrize("name", ["phone.mp4", "phone.mov"])
def test_video_keeps_offsets_and_video_samples(name: str, corpus: dict, cleaned: dict) -> None:
    dirty, clean = corpus[name].data, cleaned[name].data
    assert len(clean) == len(dirty)
    media = slice(dirty.rindex(b"mdat") + 4, dirty.rindex(b"mdat") + 4 + MEDIA_BYTES)
    assert clean[media] == dirty[media]  # video and audio samples
    assert clean.index(b"moov") == dirty.index(b"moov")


@pytest.mark.parametrize("name", NAMES)
def test_policy_can_drop_the_capture_date(name: str, corpus: dict[str, DirtyFile]) -> None:
    dirty = corpus[name]
    result = scrubber_for(dirty.format).clean(dirty.data, ScrubOptions(keep_capture_date=False))
    assert CAPTURE_DATE.encode() not in result.data
    assert "DateTimeOriginal" not in result.kept and "creation-time" not in result.kept
    for header in (b"mvhd", b"tkhd", b"mdhd"):  # video: creation/modification times
        at = result.data.find(header)
        if at >= 0:
            assert result.data[at + 8 : at + 16] == bytes(8)
    if dirty.format == "isobmff-video":  # the input did carry a creation time
        at = dirty.data.index(b"mvhd") + 8
        assert struct.unpack(">I", dirty.data[at : at + 4])[0] != 0
