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

A streamed upload (gateway/pipeline.py) of a format whose scrubber streams
(JPEG, PNG, HEIF) gets a :class:`ScrubFilter`: cleaned as it passes into its
sealed file, every output byte checked against the allowlist again, the
bytes after the image's end watched for foreign content
(:class:`TrailingWatch`) and dropped; a refusal comes at the end of the
body.  Any other format this stage scrubs needs the whole file, so a
streamed one is refused 413 ``upload-too-large-for-checks`` (and
:meth:`ScrubStage.streams_body` keeps it in memory when it fits); other
streamed uploads are judged as above (``pass`` stores them, ``refuse``
refuses them).
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext, UploadTooLargeForChecks
from plugins.formats import BY_NAME, SNIFF_BYTES, sniff
from plugins.scrub.base import CleanStream, ScrubOptions

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
        scrub_options = ScrubOptions(
            keep_capture_date=options.keep_capture_date, max_pixels=options.max_pixels
        )
        if ctx.streamed_size is not None:
            watch = TrailingWatch()
            walk = ctx.shared(fmt, known.walk) if known is not None and known.walk else None
            stream = scrubber.clean_stream(scrub_options, watch.feed, walk)
            if stream is None or (known is not None and not known.streams(ctx.body)):
                raise UploadTooLargeForChecks.by(self.name, f"{fmt} must be scrubbed whole")
            ctx.filters.append(ScrubFilter(ctx, fmt, stream, watch))
            return
        result = scrubber.clean(ctx.body, scrub_options)
        foreign = foreign_signature(result.trailing)
        if foreign:
            raise PolyglotRefused(f"{fmt}: {foreign} after the image end")
        _record(ctx, result.removed, result.kept)
        ctx.body = result.data

    def streams_body(self, head: bytes) -> bool:
        known = BY_NAME.get(sniff(head[:SNIFF_BYTES]) or "")
        scrubber = known.scrubber if known is not None else None
        if scrubber is None or known is None:
            return True
        return scrubber.scrub_stream(ScrubOptions(), _ignore) is not None and known.streams(head)


def _ignore(_: bytes) -> None:
    return None


def _record(ctx: PutContext, removed: dict[str, int], kept: tuple[str, ...]) -> None:
    """What was removed and kept goes on the audit event (names and counts only)."""
    ctx.details["removed"] = dict(removed)
    ctx.details["kept"] = list(kept)


class TrailingWatch:
    """:func:`foreign_signature` over the bytes after an image's end as they stream by
    (none kept but the last few, so a signature cut between two pieces is found)."""

    _KEEP = max(len(magic) for magic in _FOREIGN) - 1

    def __init__(self) -> None:
        self._tail = b""
        self.found: str | None = None

    def feed(self, data: bytes) -> None:
        if self.found is None and data:
            window = self._tail + data
            self.found = foreign_signature(window)
            self._tail = window[-self._KEEP :]


class ScrubFilter:
    """The scrub of a streamed upload (:class:`~gateway.pipeline.BodyFilter`): cleaned as it
    passes, checked against the allowlist again, refused at the end if bytes after the
    image carried other content; what was removed is recorded then."""

    def __init__(self, ctx: PutContext, fmt: str, stream: CleanStream, watch: TrailingWatch):
        self._ctx = ctx
        self._fmt = fmt
        self._stream = stream
        self._watch = watch
        self.changed = False

    def feed(self, data: bytes) -> bytes:
        return self._stream.feed(data)

    def finish(self) -> bytes:
        out = self._stream.finish()
        if self._watch.found:
            raise PolyglotRefused(f"{self._fmt}: {self._watch.found} after the image end")
        result = self._stream.result
        _record(self._ctx, result.removed, result.kept)
        self.changed = result.changed
        return out
