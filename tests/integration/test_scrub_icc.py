"""Through the real gateway: a name planted in an image's ICC profile is not stored.

JPEG, PNG, WebP, TIFF and HEIF uploads (and a teaching copy) carry a profile whose
text tags, header and gaps hold a patient's name (tests/icc_planted.py).
What the gateway stores, read back with GET, holds no part of the name; its
profile still converts colours as the original did (LittleCMS via ImageCms)
and exiftool finds the colour tags but no text.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from tests.conftest import Gateway
from tests.icc_planted import name_hits, planted_profile
from tests.integration.test_consent import written_consent
from tests.unit.scrub.conftest import exiftool_json
from tests.unit.scrub.test_icc import FORMATS, converted, embedded_profile, image_with

PATIENT = "9434765919"


def assert_clean(stored: bytes) -> None:
    kept = embedded_profile(stored)
    assert name_hits(stored) == name_hits(kept) == []
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(kept)))
    with Image.open(io.BytesIO(stored)) as image:
        pixels = image.convert("RGB")
    assert converted(pixels, kept) == converted(pixels, planted_profile())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_stored_images_keep_no_text_from_their_profile(
    gateway: Gateway, fmt: str, tmp_path: Path
) -> None:
    s = gateway.session()
    url = f"{gateway.url}/documents/photo.{fmt}"
    assert s.put(url, data=image_with(planted_profile(), fmt)).status_code == 201
    stored = s.get(url).content
    assert_clean(stored)
    [tags] = exiftool_json({f"stored.{fmt}": stored}, tmp_path).values()
    assert name_hits(repr(tags).encode()) == []
    assert "ICC_Profile:RedMatrixColumn" in tags


def test_clinical_image_and_its_teaching_copy(gateway: Gateway) -> None:
    written_consent(gateway.instance, "record", "teaching", form="forms/2026/12.pdf")
    s = gateway.session()
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    url = f"{folder}/wound.jpg"
    assert s.put(url, data=image_with(planted_profile(), "jpeg")).status_code == 201
    teaching = f"{gateway.url}/teaching/case-2026-001.jpg"
    assert s.request("COPY", url, headers={"Destination": teaching}).status_code == 201
    for stored in (s.get(url).content, s.get(teaching).content):
        assert_clean(stored)
