"""The ``filetype`` stage: what a file is, from its content, never its name.

Options: ``allow`` is ``any`` or a list of format names (:data:`SIGNATURES`).
A body whose sniffed format is not allowed is refused with 415
(``file-type-not-allowed``); a name whose extension names a different image
format than the content is refused too (``extension-mismatch``), because a
JPEG named ``.png`` is how polyglots and mistakes slip through.  A 0-byte body
is Explorer's placeholder (it PUTs 0 bytes, LOCKs, then PUTs the content): it
is accepted and flagged, never treated as a finished image.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from gateway.errors import UnsupportedMediaType
from gateway.pipeline import BaseStage, PutContext

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
IMAGE_FORMATS = frozenset({"jpeg", "png", "gif", "webp", "tiff", "heif"})


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


class FileTypeCheck(BaseStage):
    name: ClassVar[str] = "filetype"
    Options: ClassVar[type[BaseModel]] = FileTypeOptions

    def on_put(self, ctx: PutContext) -> None:
        if not ctx.body:
            ctx.placeholder = True
            return
        fmt = sniff(ctx.body[:32])
        claimed = format_of_name(ctx.path.rsplit("/", 1)[-1])
        ctx.file_format = fmt
        ctx.details["format"] = fmt or "unknown"
        allow = self.options.allow  # type: ignore[attr-defined]
        if allow != "any" and fmt not in allow:
            raise FileTypeNotAllowed(f"sniffed {fmt} not in {allow}")
        if claimed is not None and fmt is not None and claimed != fmt:
            raise ExtensionMismatch(f"name says {claimed}, content is {fmt}")
        if claimed is not None and fmt is None:
            raise ExtensionMismatch(f"name says {claimed}, content unrecognised")
        if fmt is not None:
            ctx.content_type = FORMATS[fmt][0]


class FileTypeNotAllowed(UnsupportedMediaType):
    code = "file-type-not-allowed"
    message = "This share does not accept this kind of file."


class ExtensionMismatch(UnsupportedMediaType):
    code = "extension-mismatch"
    message = "The file's name and its content disagree about its type."
