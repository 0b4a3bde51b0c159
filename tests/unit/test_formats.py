"""The format table: what sniffing, extensions, decoding, scrubbing and inline display read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.stages import shown_inline
from plugins.filetype import FileTypeOptions
from plugins.formats import BY_NAME, FORMATS, format_of_name, sniff

HEADS = {
    b"\xff\xd8\xff\xe0\x00\x10JFIF": "jpeg",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR": "png",
    b"GIF87a\x01\x00": "gif",
    b"GIF89a\x01\x00": "gif",
    b"RIFF\x10\x00\x00\x00WEBPVP8 ": "webp",
    b"II*\x00\x08\x00\x00\x00": "tiff",
    b"MM\x00*\x00\x00\x00\x08": "tiff",
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00": "heif",
    b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00": "heif",
    b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00": "mp4",
    b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00": "mp4",
    b"%PDF-1.7\n": "pdf",
    b"RIFF\x10\x00\x00\x00WAVEfmt ": None,
    b"<html><body>": None,
    b"\xff\xd8": None,
    b"": None,
}


@pytest.mark.parametrize(("head", "name"), HEADS.items())
def test_sniffing_reads_the_table_in_order(head: bytes, name: str | None) -> None:
    assert sniff(head) == name


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("IMG_0001.JPG", "jpeg"),
        ("a.jpe", "jpeg"),
        ("scan.tif", "tiff"),
        ("photo.HEIC", "heif"),
        ("clip.mov", "mp4"),
        ("letter.pdf", "pdf"),
        ("notes.txt", None),
        ("jpg", None),
    ],
)
def test_a_name_claims_the_format_of_its_extension(file: str, name: str | None) -> None:
    assert format_of_name(file) == name


def test_rows_are_unique_and_complete() -> None:
    assert len(BY_NAME) == len(FORMATS)
    extensions = [ext for f in FORMATS for ext in f.extensions]
    assert len(extensions) == len(set(extensions))
    for f in FORMATS:
        assert f.mime_type.count("/") == 1 and f.magic
        assert all(ext.startswith(".") and ext == ext.lower() for ext in f.extensions)
        assert not (f.inline and f.scrubber is None), f"{f.name}: shown inline but never scrubbed"


def test_the_filetype_allowlist_takes_exactly_the_table_names() -> None:
    assert FileTypeOptions(allow=list(BY_NAME)).allow == list(BY_NAME)
    with pytest.raises(ValidationError) as caught:
        FileTypeOptions.model_validate({"allow": ["jpeg", "bmp"]})
    (error,) = [e for e in caught.value.errors() if e["loc"][-1] == 1]
    assert error["msg"] == (
        "Input should be 'jpeg', 'png', 'tiff', 'webp', 'gif', 'heif', 'mp4' or 'pdf'"
    )


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        ("image/jpeg", True),
        ("image/heic", True),
        ("video/mp4", True),
        ("image/tiff", False),
        ("application/pdf", False),
        ("image/svg+xml", False),
        ("text/html", False),
        ("application/octet-stream", False),
    ],
)
def test_only_the_tables_inline_types_are_shown_inline(content_type: str, inline: bool) -> None:
    assert shown_inline(content_type) is inline
