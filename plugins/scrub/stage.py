"""The ``scrub`` stage: every image and video leaves without its metadata.

Runs the format's scrubber (the format table, plugins/formats.py) on the body
the ``filetype`` stage identified and replaces the body with the cleaned
copy.  What was removed (names and counts, never values) goes on the
request's audit event.  Bytes after the image's end are dropped; when they
carry another kind of content (an archive, a document, HTML, a script, an
executable: a polyglot) the file is refused (415, ``polyglot-refused``).

Options: ``keep_capture_date`` (DateTimeOriginal, default true: clinicians
compare lesions over time), ``max_pixels`` (decompression-bomb limit) and
``other_files``: ``refuse`` (image shares) or ``pass`` (a share that also
holds documents: formats without a scrubber are stored as they are).

A streamed upload (larger than ``limits.max_upload_bytes``) of a format this
stage scrubs cannot be rewritten, so it is refused 413
``upload-too-large-for-checks``; other streamed uploads are judged as above
(``pass`` stores them, ``refuse`` refuses them).
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext, UploadTooLargeForChecks
from plugins.formats import BY_NAME
from plugins.scrub.base import ScrubOptions

# Beginnings of other kinds of content; phones' own trailers (secondary JPEGs,
# vendor blocks) carry none of these, polyglots do.
_FOREIGN = {
    b"PK\x03\x04": "a ZIP archive",
    b"PK\x05\x06": "a ZIP archive",
    b"%PDF-": "a PDF document",
    b"<html": "HTML",
    b"<!doctype": "HTML",
    b"<script": "a script",
    b"<svg": "SVG",
    b"<?xml": "XML",
    b"MZ\x90\x00": "a Windows executable",
    b"\x7fELF": "an executable",
    b"#!/": "a script",
    b"Rar!\x1a\x07": "a RAR archive",
    b"7z\xbc\xaf\x27\x1c": "a 7z archive",
}


def foreign_signature(trailing: bytes) -> str | None:
    """What other content the bytes after an image carry, if any."""
    lowered = trailing.lower()
    for magic, what in _FOREIGN.items():
        if magic.lower() in lowered:
            return what
    return None


class ScrubStageOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    keep_capture_date: bool = True
    max_pixels: int = Field(100_000_000, ge=1)
    other_files: Literal["refuse", "pass"] = "refuse"


class PolyglotRefused(UnsupportedMediaType):
    code = "polyglot-refused"
    message = "The file carries other data after the image; it was not stored."


class NotScrubbable(UnsupportedMediaType):
    code = "no-scrubber"
    message = "clindav cannot remove metadata from this kind of file, so it was not stored."


class ScrubStage(BaseStage):
    name: ClassVar[str] = "scrub"
    Options: ClassVar[type[BaseModel]] = ScrubStageOptions
    streams: ClassVar[bool] = True

    def on_put(self, ctx: PutContext) -> None:
        if ctx.placeholder:
            return
        options = cast(ScrubStageOptions, self.options)
        fmt = ctx.file_format or ""
        known = BY_NAME.get(fmt)
        scrubber = known.scrubber if known is not None else None
        if scrubber is None:
            if options.other_files == "pass":
                return
            raise NotScrubbable(f"no scrubber for {fmt or 'unknown content'}")
        if ctx.streamed_size is not None:
            raise UploadTooLargeForChecks.by(self.name, f"{fmt} must be scrubbed whole")
        result = scrubber.clean(
            ctx.body,
            ScrubOptions(
                keep_capture_date=options.keep_capture_date, max_pixels=options.max_pixels
            ),
        )
        foreign = foreign_signature(result.trailing)
        if foreign:
            raise PolyglotRefused(f"{fmt}: {foreign} after the image end")
        ctx.details["removed"] = dict(result.removed)
        ctx.details["kept"] = list(result.kept)
        ctx.body = result.data
