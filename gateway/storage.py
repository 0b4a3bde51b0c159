"""The backing share: where a logical path lives on disk, and atomic writes.

Contract:

* :meth:`BackingStore.locate` turns validated path segments into a path under
  the share's folder.  Each segment goes through the share's :class:`NameCodec`
  (plain, or encrypted by the encryption stage) and the result is checked to
  stay inside the folder; no symlink is ever followed.
* :func:`write_atomic` writes a new version to a hidden temp name in the target
  folder, fsyncs it and only then renames it over the target, so a reader or a
  crash sees the old version or the new one, never a mix.
* Names starting with ``.clindav-`` are the gateway's own (temp files, trash)
  and never appear in a listing.
"""

from __future__ import annotations

import os
import stat
import time
import unicodedata
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gateway.errors import InvalidPath

INTERNAL_PREFIX = ".clindav-"
TEMP_PREFIX = INTERNAL_PREFIX + "tmp-"


class NameCodec(Protocol):
    """How a logical name is stored on the backing share."""

    def encode(self, segment: str) -> str: ...

    def decode(self, stored: str) -> str | None:
        """The logical name, or None when the entry is not one of ours."""
        ...


class PlainNames:
    """Names stored as they are (a share policy's ``names: plain``)."""

    def encode(self, segment: str) -> str:
        return segment

    def decode(self, stored: str) -> str | None:
        return None if stored.startswith(INTERNAL_PREFIX) else stored


def split_path(path: str) -> list[str]:
    """Validated, NFC-normalised segments of a share-relative path.

    Refuses (400 ``invalid-path``) anything that could step outside the share
    or confuse a filesystem: ``.``/``..``, empty inner segments, NUL and other
    control characters, backslashes, and our own internal prefix.
    """
    segments = []
    for raw in path.strip("/").split("/"):
        if raw == "":
            if path.strip("/"):
                raise InvalidPath(f"empty segment in {path!r}")
            continue
        segment = unicodedata.normalize("NFC", raw)
        _check_segment(segment)
        segments.append(segment)
    return segments


class ReservedName(InvalidPath):
    code = "reserved-name"
    message = "This name is reserved on Windows or by clindav (CON, AUX, NUL, COM1, ...)."


class ForbiddenCharacter(InvalidPath):
    code = "forbidden-character"
    message = (
        'The name contains a character Windows or SMB shares cannot store (\\ / : * ? " < > |).'
    )


class ControlCharacter(InvalidPath):
    code = "control-character"
    message = "The name contains a control or text-direction character."


class TrailingDotOrSpace(InvalidPath):
    code = "trailing-dot-or-space"
    message = "Names may not end with a dot or a space (Windows cannot store them)."


_FORBIDDEN = set('\\/:*?"<>|')
# Bidi overrides and isolates can make "gpj.exe" read as "exe.jpg".
_BIDI = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_WINDOWS_DEVICES = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}


def _check_segment(segment: str) -> None:
    """Every name must be one a Windows client and an SMB share can hold."""
    if segment in (".", ".."):
        raise InvalidPath("dot segment")
    if any(ch in _FORBIDDEN for ch in segment):
        raise ForbiddenCharacter("forbidden character in name")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ord(ch) in _BIDI for ch in segment):
        raise ControlCharacter("control or bidi character in name")
    if segment.startswith(INTERNAL_PREFIX) or segment.split(".")[0].lower() in _WINDOWS_DEVICES:
        raise ReservedName("reserved name")
    if segment[-1] in ". ":
        raise TrailingDotOrSpace("trailing dot or space")
    try:
        segment.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath("name is not valid UTF-8") from None


class BackingStore:
    """One share's backing folder."""

    def __init__(self, root: Path, names: NameCodec) -> None:
        self.root = root.resolve()
        self.names = names

    def locate(self, segments: list[str]) -> Path:
        target = self.root.joinpath(*(self.names.encode(s) for s in segments))
        if os.path.commonpath([self.root, target]) != str(self.root):
            raise InvalidPath(f"{target} escapes {self.root}")
        return target

    def lstat(self, target: Path) -> os.stat_result | None:
        """Stat without following links; a path through or at a link counts as absent.

        ``os.lstat`` checks only the last component, and a link in the middle
        would lead reads, writes and deletes outside the share, so every
        folder between the share's root and the target is checked too.
        """
        folder = self.root
        for part in target.relative_to(self.root).parts[:-1]:
            folder = folder / part
            try:
                if not stat.S_ISDIR(os.lstat(folder).st_mode):
                    return None
            except (FileNotFoundError, NotADirectoryError):
                return None
        try:
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
        return st

    def descendants(self, segments: list[str]) -> list[str]:
        """Logical paths of everything below a folder (empty for a file or nothing)."""
        found: list[str] = []
        pending = [("/" + "/".join(segments), self.locate(segments))]
        while pending:
            logical, folder = pending.pop()
            st = self.lstat(folder)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            for name in self.list_names(folder):
                child = f"{logical.rstrip('/')}/{name}"
                found.append(child)
                pending.append((child, folder / self.names.encode(name)))
        return found

    def list_names(self, folder: Path) -> list[str]:
        """Logical names of the entries in ``folder`` (ours only, no links)."""
        names = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink():
                    continue
                name = self.names.decode(entry.name)
                if name is not None:
                    names.append(name)
        return names

    def sweep_temp_files(self, older_than: float = 3600.0) -> int:
        """Remove temp files left by a crash; returns how many."""
        cutoff = time.time() - older_than
        removed = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(folder) / name
                if name.startswith(TEMP_PREFIX) and path.lstat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


def write_temp(folder: Path, chunks: Iterable[bytes]) -> Path:
    """Write chunks to a new hidden temp file in ``folder`` and fsync it."""
    temp = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=True) as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def replace_into(temp: Path, target: Path) -> None:
    """Atomically put ``temp`` at ``target`` and make the rename durable."""
    os.replace(temp, target)
    fsync_dir(target.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, chunks: Iterable[bytes]) -> None:
    temp = write_temp(target.parent, chunks)
    try:
        replace_into(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
