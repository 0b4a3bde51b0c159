"""The ``filetype`` stage: what a file is, from its content, never its name.

Options: ``allow`` is ``any`` or a list of format names (the format table,
plugins/formats.py, which also says how each is recognised and decoded).
A body whose sniffed format is not allowed is refused with 415
(``file-type-not-allowed``); a name whose extension names a different image
format than the content is refused too (``extension-mismatch``), because a
JPEG named ``.png`` is how polyglots and mistakes slip through.  A 0-byte body
is Explorer's placeholder (it PUTs 0 bytes, LOCKs, then PUTs the content): it
is accepted and flagged, never treated as a finished image.

Images are checked before they are accepted (``decode``), always opened by
Pillow restricted to the one format the content claims, so none of
Pillow's other auto-detected decoders ever runs on uploaded bytes:

* ``structure`` (the default): the format's structural check (the format
  table's ``structure``) proves the file complete without decoding a
  pixel: JPEG markers through EOI with every scan complete, PNG chunks and
  CRCs through IEND with image data, HEIF boxes filling the file with every
  item's data inside it, GIF blocks to the trailer, WebP's RIFF chunks.
  A format without one (TIFF) is decoded as with ``full``.
* ``full``: every pixel is decoded (``verify()`` alone passes truncated
  JPEGs), within the process's decode budget (gateway/decoding.py: 503
  ``decode-busy`` while others decode).
* ``none``: sniffing and the name only.

Either way the dimensions in the header are checked before anything is
allocated: too many pixels (``max_pixels``) is 422, and an image this
process could never decode within ``limits.decode_memory`` is 413
``image-too-large-to-decode``.  Failures answer 422 ``undecodable-image``.

A streamed upload (larger than ``limits.max_upload_bytes``, see
gateway/pipeline.py) is sniffed from its head; one that would have to be
decoded (an image, with ``decode: true``) cannot be checked, and is refused
413 ``upload-too-large-for-checks``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, cast

from PIL import Image
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from gateway import decoding
from gateway.errors import UnprocessableContent, UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext, UploadTooLargeForChecks
from plugins.formats import BY_NAME, SNIFF_BYTES, Format, format_of_name, sniff
from plugins.scrub.base import MalformedImage


def _known_format(name: str) -> str:
    """A policy's ``allow`` entry must name a row of the format table."""
    if name not in BY_NAME:
        names = [repr(known) for known in BY_NAME]
        expected = ", ".join(names[:-1]) + " or " + names[-1]
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )
    return name


def _decode_mode(value: Any) -> Any:
    """Policies written before ``structure`` existed said ``decode: true`` or ``false``."""
    return {True: "full", False: "none"}.get(value, value) if isinstance(value, bool) else value


Decode = Literal["structure", "full", "none"]


class FileTypeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    allow: Literal["any"] | list[Annotated[str, AfterValidator(_known_format)]]
    decode: Annotated[Decode, BeforeValidator(_decode_mode)] = "structure"
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
        if BY_NAME[fmt].pillow is not None and options.decode != "none":
            if ctx.streamed_size is not None:
                raise UploadTooLargeForChecks.by(self.name, f"{fmt} must be checked whole")
            check_image(ctx.body, BY_NAME[fmt], options.decode, options.max_pixels)


def check_image(body: bytes, row: Format, decode: Decode, max_pixels: int) -> None:
    """Refuse an image that is not complete (``decode``: see the module docstring)."""
    decoder = row.pillow or ""
    try:
        with decoding.opened(body, decoder) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise UndecodableImage(f"{width}x{height} over max_pixels={max_pixels}")
            if decoder == "JPEG":
                # Decoding at 1/8 scale still reads every entropy-coded byte.
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            # The size after draft, from the header: nothing is allocated yet.
            if decode == "full" or row.structure is None:
                with decoding.reserve(img.size, img.mode, what=row.name):
                    img.load()
            else:
                decoding.check_decodable(img.size, img.mode, what=row.name)
                row.structure(body)
    except UndecodableImage:
        raise
    except (
        MalformedImage,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        MemoryError,
        Warning,
        Image.DecompressionBombError,
    ) as exc:
        raise UndecodableImage(f"{row.name}: {type(exc).__name__}: {exc}") from None


class FileTypeNotAllowed(UnsupportedMediaType):
    code = "file-type-not-allowed"
    message = "This share does not accept this kind of file."


class UndecodableImage(UnprocessableContent):
    code = "undecodable-image"
    message = "The image could not be decoded completely; it was not stored."


class ExtensionMismatch(UnsupportedMediaType):
    code = "extension-mismatch"
    message = "The file's name and its content disagree about its type."
