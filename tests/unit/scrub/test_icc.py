"""ICC profiles lose their free text in every format's scrubber; the colour data stay.

A patient's name planted in a profile's text tags, private tags, header and
gaps (tests/icc_planted.py) survived scrubbing in JPEG, PNG, WebP, TIFF and HEIF.
Each scrubber now runs the profile through plugins/scrub/icc.py: the name is
gone from the output, LittleCMS (Pillow's ImageCms) still reads the profile
and converts colours exactly as with the original, exiftool shows no trace.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image, ImageCms

from plugins.formats import scrubber_for
from plugins.scrub.base import MalformedImage, ScrubOptions
from plugins.scrub.icc import profile_residue, sanitize_profile
from plugins.scrub.png import ICC_NAME, SIGNATURE, Chunk, read_chunks
from plugins.scrub.png import _chunk as png_chunk
from tests.icc_planted import name_hits, planted_profile
from tests.unit.scrub.conftest import exiftool_json

FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF", "heif": "HEIF"}
pillow_heif.register_heif_opener()


def image_with(profile: bytes, fmt: str) -> bytes:
    image = Image.radial_gradient("L").resize((48, 32)).convert("RGB")
    out = io.BytesIO()
    extra = {"lossless": True} if fmt == "webp" else {"quality": 90} if fmt == "heif" else {}
    image.save(out, FORMATS[fmt], icc_profile=profile, **extra)
    return out.getvalue()


def embedded_profile(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.info["icc_profile"]


def converted(image: Image.Image, profile: bytes) -> bytes:
    """The image's pixels converted from ``profile`` to sRGB by LittleCMS."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("version", [4, 2])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_scrubbed_profile_keeps_colour_and_loses_the_name(fmt: str, version: int) -> None:
    planted = planted_profile(version)
    dirty = image_with(planted, fmt)
    assert name_hits(embedded_profile(dirty))  # PNG compresses it: look at the profile
    result = scrubber_for(fmt).clean(dirty, ScrubOptions())
    assert name_hits(result.data) == name_hits(embedded_profile(result.data)) == []
    assert "icc-profile" in result.kept
    assert {"icc:dmnd", "icc:dmdd", "icc:zzzz", "icc:header"} <= result.removed.keys()
    with Image.open(io.BytesIO(result.data)) as clean:
        kept = clean.info["icc_profile"]
        assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(kept)))
        pixels = clean.convert("RGB")
        assert converted(pixels, kept) == converted(pixels, planted)


def test_a_sanitised_profile_is_its_own_fixed_point() -> None:
    for version in (4, 2):
        once = sanitize_profile(planted_profile(version)).data
        assert sanitize_profile(once).data == once
        assert profile_residue(once) == []
        assert profile_residue(planted_profile(version)) == [
            "icc:dmdd",
            "icc:dmnd",
            "icc:header",
            "icc:zzzz",
        ]


def test_residue_finds_a_planted_profile() -> None:
    # A PNG that looks scrubbed but carries the planted profile under the
    # fixed name is refused by the residue check each scrubber runs on its output.
    clean = sanitize_profile(planted_profile()).data
    png = scrubber_for("png").clean(image_with(clean, "png"), ScrubOptions()).data
    chunks, _end = read_chunks(png)
    planted = Chunk(b"iCCP", ICC_NAME + b"\x00\x00" + zlib.compress(planted_profile()))
    forged = SIGNATURE + b"".join(png_chunk(planted if c.type == b"iCCP" else c) for c in chunks)
    assert scrubber_for("png").residue(png, ScrubOptions()) == []
    assert "icc:dmnd" in scrubber_for("png").residue(forged, ScrubOptions())


@pytest.mark.parametrize(
    "broken",
    [
        b"\x00" * 200,  # no acsp
        planted_profile()[:-40],  # shorter than its declared size
        planted_profile()[:128] + b"\xff\xff\xff\xff" + planted_profile()[132:],  # tag count
    ],
    ids=["no-acsp", "truncated", "tag-table"],
)
def test_unsound_profiles_are_malformed(broken: bytes) -> None:
    with pytest.raises(MalformedImage):
        sanitize_profile(broken)


def test_exiftool_shows_no_text_but_the_colour_tags(tmp_path: Path) -> None:
    files = {
        f"{fmt}-v{version}.{fmt}": scrubber_for(fmt)
        .clean(image_with(planted_profile(version), fmt), ScrubOptions())
        .data
        for fmt in FORMATS
        for version in (4, 2)
    }
    for name, tags in exiftool_json(files, tmp_path).items():
        text = repr(tags)
        assert name_hits(text.encode()) == [], name
        assert "ICC_Profile:RedMatrixColumn" in tags, name
        assert tags.get("ICC_Profile:ProfileDescription") == "ICC profile", name
        for tag in ("DeviceMfgDesc", "DeviceModelDesc"):
            assert not any(key.startswith(f"ICC_Profile:{tag}") for key in tags), name
