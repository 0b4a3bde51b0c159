"""The ``filetype`` stage: what a file is, from its content, never its name.

Options: ``allow`` is ``any`` or a list of format names (the format table,
plugins/formats.py, which also says how each is recognised and decoded).
A body whose sniffed format is not allowed is refused with 415
(``file-type-not-allowed``); a name whose extension names a different image
format than the content is refused too (``extension-mismatch``), because a
JPEG named ``.png`` is how polyglots and mistakes slip through.  A 0-byte body
is Explorer's placeholder (it PUTs 0 bytes, LOCKs, then PUTs the content): it
is accepted and flagged, never treated as a finished image.

With ``decode: true`` (the default) an image is decoded completely before it
is accepted (``verify()`` alone passes truncated JPEGs), by Pillow restricted
to the one format the content claims, so none of Pillow's other
auto-detected decoders ever runs on uploaded bytes.  Too many pixels
(``max_pixels``) is refused before decoding.  Failures answer 422
``undecodable-image``.  The decode reserves its pixels in the process's
memory budget first (gateway/decoding.py: 413 ``image-too-large-to-decode``,
503 ``decode-busy``).

A streamed upload (larger than ``limits.max_upload_bytes``, see
gateway/pipeline.py) is sniffed from its head; one that would have to be
decoded (an image, with ``decode: true``) cannot be checked, and is refused
413 ``upload-too-large-for-checks``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, cast

from PIL import Image
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from gateway import decoding
from gateway.errors import UnprocessableContent, UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext, UploadTooLargeForChecks
from plugins.formats import BY_NAME, SNIFF_BYTES, format_of_name, sniff


def _known_format(name: str) -> str:
    """A policy's ``allow`` entry must name a row of the format table."""
    if name not in BY_NAME:
        names = [repr(known) for known in BY_NAME]
        expected = ", ".join(names[:-1]) + " or " + names[-1]
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )
    return name


class FileTypeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    allow: Literal["any"] | list[Annotated[str, AfterValidator(_known_format)]]
    decode: bool = True
    max_pixels: int = Field(100_000_000, ge=1)


class FileTypeCheck(BaseStage):
    name: ClassVar[str] = "filetype"
    Options: ClassVar[type[BaseModel]] = FileTypeOptions
    streams: ClassVar[bool] = True

    def on_put(self, ctx: PutContext) -> None:
        if not ctx.body:
            ctx.placeholder = True
            return
        fmt = sniff(ctx.body[:SNIFF_BYTES])
        claimed = format_of_name(ctx.path.rsplit("/", 1)[-1])
        ctx.file_format = fmt
        ctx.details["format"] = fmt or "unknown"
        options = cast(FileTypeOptions, self.options)
        allow = options.allow
        if allow != "any" and fmt not in allow:
            raise FileTypeNotAllowed(f"sniffed {fmt} not in {allow}")
        if claimed is not None and fmt is not None and claimed != fmt:
            raise ExtensionMismatch(f"name says {claimed}, content is {fmt}")
        if claimed is not None and fmt is None:
            raise ExtensionMismatch(f"name says {claimed}, content unrecognised")
        if fmt is None:
            return
        ctx.content_type = BY_NAME[fmt].mime_type
        decoder = BY_NAME[fmt].pillow
        if decoder is not None and options.decode:
            if ctx.streamed_size is not None:
                raise UploadTooLargeForChecks.by(self.name, f"{fmt} must be decoded whole")
            decode_fully(ctx.body, fmt, decoder, options.max_pixels)


def decode_fully(body: bytes, fmt: str, decoder: str, max_pixels: int) -> None:
    """Decode every pixel with only the claimed format's decoder; refuse on any failure."""
    try:
        with decoding.opened(body, decoder) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise UndecodableImage(f"{width}x{height} over max_pixels={max_pixels}")
            if decoder == "JPEG":
                # Decoding at 1/8 scale still reads every entropy-coded byte.
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            # The size after draft, from the header: nothing is allocated yet.
            with decoding.reserve(img.size, img.mode, what=fmt):
                img.load()
    except UndecodableImage:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        MemoryError,
        Warning,
        Image.DecompressionBombError,
    ) as exc:
        raise UndecodableImage(f"{fmt}: {type(exc).__name__}: {exc}") from None


class FileTypeNotAllowed(UnsupportedMediaType):
    code = "file-type-not-allowed"
    message = "This share does not accept this kind of file."


class UndecodableImage(UnprocessableContent):
    code = "undecodable-image"
    message = "The image could not be decoded completely; it was not stored."


class ExtensionMismatch(UnsupportedMediaType):
    code = "extension-mismatch"
    message = "The file's name and its content disagree about its type."
