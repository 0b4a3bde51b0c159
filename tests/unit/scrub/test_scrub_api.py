"""The scrubber registry, the result types and the error contract."""

from __future__ import annotations

import dataclasses
import io

import pytest
from PIL import Image

from gateway.errors import UnprocessableContent, UnsupportedMediaType
from plugins.formats import FORMATS, SCRUBBERS, scrubber_for
from plugins.scrub.base import MalformedImage, Scrubber, ScrubOptions, ScrubRefused, ScrubResult


def test_built_ins_are_listed_explicitly_with_unique_names() -> None:
    names = [scrubber.format_name for scrubber in SCRUBBERS]
    assert names == ["jpeg", "png", "tiff", "webp", "gif", "heif", "isobmff-video"]
    for scrubber in SCRUBBERS:
        assert isinstance(scrubber, Scrubber)
        assert scrubber_for(scrubber.format_name) is scrubber
    # Each cleans one format of the table, which names its content type and extensions.
    scrubbed = [f for f in FORMATS if f.scrubber is not None]
    assert [f.scrubber for f in scrubbed] == list(SCRUBBERS)
    assert all(f.mime_type and f.extensions for f in scrubbed)


def test_unknown_format_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType):
        scrubber_for("bmp")


def test_errors_are_documented_422s() -> None:
    assert issubclass(ScrubRefused, UnprocessableContent) and ScrubRefused.status == 422
    assert issubclass(MalformedImage, UnprocessableContent) and MalformedImage.status == 422
    assert (ScrubRefused.code, MalformedImage.code) == ("scrub-incomplete", "malformed-image")


def test_results_and_options_are_frozen() -> None:
    result = ScrubResult(b"", {}, ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.data = b"x"  # type: ignore[misc]
    assert ScrubOptions() == ScrubOptions(keep_capture_date=True, max_pixels=100_000_000)


def _jpeg(mode: str, **save: object) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((64, 48)).convert(mode).save(out, "JPEG", **save)
    return out.getvalue()


@pytest.mark.parametrize(
    ("mode", "save"),
    [
        ("RGB", {"progressive": True}),
        ("RGB", {"restart_marker_blocks": 1}),
        ("RGB", {"subsampling": 0, "quality": 95}),
        ("L", {}),
        ("CMYK", {}),  # Pillow writes an Adobe APP14 segment
    ],
    ids=["progressive", "restart-markers", "4:4:4", "grey", "cmyk-adobe"],
)
def test_jpeg_variants_decode_identically(mode: str, save: dict) -> None:
    data = _jpeg(mode, **save)
    result = scrubber_for("jpeg").clean(data, ScrubOptions())
    with Image.open(io.BytesIO(data)) as before, Image.open(io.BytesIO(result.data)) as after:
        assert (after.mode, after.size, after.tobytes()) == (
            before.mode,
            before.size,
            before.tobytes(),
        )
    assert ("adobe-transform" in result.kept) == (mode == "CMYK")
