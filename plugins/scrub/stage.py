"""The ``scrub`` stage: every image and video leaves without its metadata.

Runs the format's scrubber (:func:`plugins.scrub.scrubber_for`) on the body
the ``filetype`` stage identified and replaces the body with the cleaned
copy.  What was removed (names and counts, never values) goes on the
request's audit event.  A file with bytes after the image's end that are not
a known secondary image (a JPEG with an appended ZIP, script or document) is
refused as a polyglot (415, ``polyglot-refused``).

Options: ``keep_capture_date`` (DateTimeOriginal, default true: clinicians
compare lesions over time), ``max_pixels`` (decompression-bomb limit) and
``other_files``: ``refuse`` (image shares) or ``pass`` (a share that also
holds documents: formats without a scrubber are stored as they are).
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext
from plugins.scrub import SCRUBBERS, ScrubOptions

# filetype's names -> scrubber format names
_SCRUBBER_OF = {"mp4": "isobmff-video"}
_BY_NAME = {s.format_name: s for s in SCRUBBERS}


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

    def on_put(self, ctx: PutContext) -> None:
        if ctx.placeholder:
            return
        options = cast(ScrubStageOptions, self.options)
        fmt = ctx.file_format or ""
        scrubber = _BY_NAME.get(_SCRUBBER_OF.get(fmt, fmt))
        if scrubber is None:
            if options.other_files == "pass":
                return
            raise NotScrubbable(f"no scrubber for {fmt or 'unknown content'}")
        result = scrubber.clean(
            ctx.body,
            ScrubOptions(
                keep_capture_date=options.keep_capture_date, max_pixels=options.max_pixels
            ),
        )
        if result.removed.get("trailing-data") and not result.removed.get("APP2:MPF"):
            raise PolyglotRefused(f"{fmt}: data after the image end without a multi-picture index")
        ctx.details["removed"] = dict(result.removed)
        ctx.details["kept"] = list(result.kept)
        ctx.body = result.data
