"""No planted marker survives a scrub: raw bytes, UTF-16 and exiftool's view."""

from __future__ import annotations

import json

import pytest

from plugins.formats import scrubber_for
from plugins.scrub.base import ScrubOptions, ScrubResult
from tests.scrub_corpus import MARKER_PREFIX, NAMES, DirtyFile


def _forms(text: str) -> tuple[bytes, bytes]:
    return text.encode(), text.encode("utf-16-le")


@pytest.mark.parametrize("name", NAMES)
def test_every_marker_was_planted(name: str, corpus: dict[str, DirtyFile], exif_in: dict) -> None:
    """Guards the other tests against vacuity: each marker is findable in the input."""
    dirty = corpus[name]
    seen_by_exiftool = json.dumps(exif_in[name])
    for marker in dirty.markers:
        raw = any(form in dirty.data for form in _forms(marker))
        assert raw or marker in seen_by_exiftool, f"{marker} was not planted in {name}"


@pytest.mark.parametrize("name", NAMES)
def test_no_marker_bytes_remain(name: str, cleaned: dict[str, ScrubResult]) -> None:
    data = cleaned[name].data
    assert MARKER_PREFIX not in data
    assert MARKER_PREFIX.decode().encode("utf-16-le") not in data
    assert MARKER_PREFIX.decode().encode("utf-16-be") not in data


@pytest.mark.parametrize("name", NAMES)
def test_exiftool_sees_no_marker(name: str, exif_out: dict) -> None:
    assert MARKER_PREFIX.decode() not in json.dumps(exif_out[name])


@pytest.mark.parametrize("name", NAMES)
def test_residue_finds_the_dirt_in_the_input(name: str, corpus: dict[str, DirtyFile]) -> None:
    dirty = corpus[name]
    assert scrubber_for(dirty.format).residue(dirty.data, ScrubOptions())


@pytest.mark.parametrize("name", NAMES)
def test_scrub_is_idempotent(name: str, corpus: dict[str, DirtyFile], cleaned: dict) -> None:
    scrubber = scrubber_for(corpus[name].format)
    again = scrubber.clean(cleaned[name].data, ScrubOptions())
    assert again.data == cleaned[name].data
    assert again.removed == {}


@pytest.mark.parametrize("name", NAMES)
def test_removed_names_carry_no_values(name: str, cleaned: dict[str, ScrubResult]) -> None:
    result = cleaned[name]
    assert result.removed and all(n > 0 for n in result.removed.values())
    assert not any("CLINDAV" in key for key in (*result.removed, *result.kept))
