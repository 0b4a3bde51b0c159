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

A streamed upload (gateway/pipeline.py) is sniffed from its head; an image
whose format has a streaming structural check (JPEG, PNG, HEIF) gets it as a
:class:`StructureFilter` that checks the bytes as they pass (the header's
dimensions as soon as they arrive); one that would have to be decoded
(``decode: full``) or has no such check cannot be judged as a stream and is
refused 413 ``upload-too-large-for-checks`` (:meth:`FileTypeCheck.streams_body`
keeps it in memory when it fits).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar, Literal, cast

from PIL import Image
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from gateway import decoding
from gateway.errors import UnprocessableContent, UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext, UploadTooLargeForChecks
from plugins.formats import BY_NAME, SNIFF_BYTES, Format, StructureStream, format_of_name, sniff
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
        row = BY_NAME[fmt]
        ctx.content_type = row.mime_type
        if row.pillow is None or options.decode == "none":
            return
        if ctx.streamed_size is None:
            check_image(ctx.body, row, options.decode, options.max_pixels)
        elif (
            row.structure_stream is None
            or _needs_whole(row, options.decode)
            or not row.streams(ctx.body)
        ):
            raise UploadTooLargeForChecks.by(self.name, f"{fmt} must be checked whole")
        else:
            judge = functools.partial(_judge_header, row, options.max_pixels)
            walk = ctx.shared(row.name, row.walk) if row.walk is not None else None
            ctx.filters.append(StructureFilter(row.name, row.structure_stream(judge, walk)))

    def streams_body(self, head: bytes) -> bool:
        row = BY_NAME.get(sniff(head[:SNIFF_BYTES]) or "")
        options = cast(FileTypeOptions, self.options)
        return row is None or (not _needs_whole(row, options.decode) and row.streams(head))


def _needs_whole(row: Format, decode: Decode) -> bool:
    """Whether checking an image of this format needs the whole body in memory."""
    if row.pillow is None or decode == "none":
        return False
    return decode == "full" or row.structure_stream is None


def check_image(body: bytes, row: Format, decode: Decode, max_pixels: int) -> None:
    """Refuse an image that is not complete (``decode``: see the module docstring)."""
    with _undecodable(row.name), decoding.opened(body, row.pillow or "") as img:
        _judge_header(row, max_pixels, img.size, img.mode)
        if row.pillow == "JPEG":
            # Decoding at 1/8 scale still reads every entropy-coded byte.
            img.draft(img.mode, _decoded_size(row, img.size))
        if decode == "full" or row.structure is None:
            # The size after draft, from the header: nothing is allocated yet.
            with decoding.reserve(img.size, img.mode, what=row.name):
                img.load()
        else:
            row.structure(body)


def _decoded_size(row: Format, size: tuple[int, int]) -> tuple[int, int]:
    """What a decode of this image holds: a JPEG is decoded at 1/8 scale (draft)."""
    if row.pillow != "JPEG":
        return size
    return max(1, size[0] // 8), max(1, size[1] // 8)


def _judge_header(row: Format, max_pixels: int, size: tuple[int, int], mode: str) -> None:
    """From the header, before anything is allocated: the pixel limit, and whether this
    process could ever decode the image (413 image-too-large-to-decode)."""
    width, height = size
    if width * height > max_pixels:
        raise UndecodableImage(f"{width}x{height} over max_pixels={max_pixels}")
    decoding.check_decodable(_decoded_size(row, size), mode, what=row.name)


@contextmanager
def _undecodable(what: str) -> Iterator[None]:
    """Any failure to parse or decode the image is 422 undecodable-image."""
    try:
        yield
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
        raise UndecodableImage(f"{what}: {type(exc).__name__}: {exc}") from None


class StructureFilter:
    """The structural check of a streamed image (:class:`~gateway.pipeline.BodyFilter`):
    every byte passes on unchanged; a failure is 422 undecodable-image."""

    changed = False

    def __init__(self, what: str, check: StructureStream) -> None:
        self._what = what
        self._check = check

    def feed(self, data: bytes) -> bytes:
        with _undecodable(self._what):
            return self._check.feed(data)

    def finish(self) -> bytes:
        with _undecodable(self._what):
            return self._check.finish()


class FileTypeNotAllowed(UnsupportedMediaType):
    code = "file-type-not-allowed"
    message = "This share does not accept this kind of file."


class UndecodableImage(UnprocessableContent):
    code = "undecodable-image"
    message = "The image could not be decoded completely; it was not stored."


class ExtensionMismatch(UnsupportedMediaType):
    code = "extension-mismatch"
    message = "The file's name and its content disagree about its type."
