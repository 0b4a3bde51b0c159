"""The ``filetype`` stage: what a file is, from its content, never its name.

Options: ``allow`` is ``any`` or a list of format names (:data:`SIGNATURES`).
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

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Literal, cast

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from gateway import decoding
from gateway.errors import UnprocessableContent, UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext, UploadTooLargeForChecks

# Format name -> (content type, file extensions). Image formats first.
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "jpeg": ("image/jpeg", (".jpg", ".jpeg", ".jpe")),
    "png": ("image/png", (".png",)),
    "gif": ("image/gif", (".gif",)),
    "webp": ("image/webp", (".webp",)),
    "tiff": ("image/tiff", (".tif", ".tiff")),
    "heif": ("image/heic", (".heic", ".heif")),
    "mp4": ("video/mp4", (".mp4", ".m4v", ".mov")),
    "pdf": ("application/pdf", (".pdf",)),
}
# filetype's names -> the one Pillow plugin allowed to decode them
PILLOW_FORMATS = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "tiff": "TIFF",
    "heif": "HEIF",
}


def sniff(head: bytes) -> str | None:
    """The format named by a body's first bytes, or None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"avif"):
            return "heif"
        return "mp4"
    if head.startswith(b"%PDF-"):
        return "pdf"
    return None


def format_of_name(name: str) -> str | None:
    lower = name.lower()
    for fmt, (_ctype, extensions) in FORMATS.items():
        if lower.endswith(extensions):
            return fmt
    return None


class FileTypeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    allow: (
        Literal["any"] | list[Literal["jpeg", "png", "gif", "webp", "tiff", "heif", "mp4", "pdf"]]
    )
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
        fmt = sniff(ctx.body[:32])
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
        if fmt is not None:
            ctx.content_type = FORMATS[fmt][0]
        if fmt in PILLOW_FORMATS and options.decode:
            if ctx.streamed_size is not None:
                raise UploadTooLargeForChecks.by(self.name, f"{fmt} must be decoded whole")
            decode_fully(ctx.body, fmt, options.max_pixels)


@contextmanager
def opened(body: bytes, fmt: str) -> Iterator[Image.Image]:
    """``body`` opened by the one Pillow decoder of ``fmt`` (nothing decoded yet).

    Pillow's decompression-bomb warning is an error here.  Every reader of
    uploaded pixels opens them this way (this stage, the console's pictures).
    """
    if fmt == "heif":
        import pillow_heif

        pillow_heif.register_heif_opener()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(body), formats=[PILLOW_FORMATS[fmt]]) as img:
            yield img


def decode_fully(body: bytes, fmt: str, max_pixels: int) -> None:
    """Decode every pixel with only the claimed format's decoder; refuse on any failure."""
    try:
        with opened(body, fmt) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise UndecodableImage(f"{width}x{height} over max_pixels={max_pixels}")
            if fmt == "jpeg":
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
