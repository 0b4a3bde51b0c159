"""The backing share: where a logical path lives on disk, and atomic writes.

Contract:

* :meth:`BackingStore.locate` turns validated path segments into a path under
  the share's folder.  Each segment goes through the share's :class:`NameCodec`
  (plain, or encrypted by the encryption stage) and the result is checked to
  stay inside the folder; no symlink is ever followed.
* :func:`write_atomic` writes a new version to a hidden temp name in the target
  folder (:class:`TempFile`), fsyncs it and only then renames it over the
  target, so a reader or a crash sees the old version or the new one, never a
  mix.
* Names starting with ``.clindav-`` are the gateway's own (temp files, trash)
  and never appear in a listing.
"""

from __future__ import annotations

import contextlib
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

    def decode_many(self, stored: list[str]) -> list[str | None]:
        """:meth:`decode` of each name of a listing, in one call."""
        ...


class PlainNames:
    """Names stored as they are (a share policy's ``names: plain``)."""

    def encode(self, segment: str) -> str:
        return segment

    def decode(self, stored: str) -> str | None:
        """The name, unless it is internal or one clindav would refuse (placed on the
        share by something else): such entries are not listed, as undecodable
        names are not on encrypted shares."""
        if stored.startswith(INTERNAL_PREFIX) or unicodedata.normalize("NFC", stored) != stored:
            return None
        try:
            _check_segment(stored)
        except InvalidPath:
            return None
        return stored

    def decode_many(self, stored: list[str]) -> list[str | None]:
        return [self.decode(s) for s in stored]


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
    message = "The name contains a control, invisible or text-direction character."


class TrailingDotOrSpace(InvalidPath):
    code = "trailing-dot-or-space"
    message = "Names may not end with a dot or a space (Windows cannot store them)."


_FORBIDDEN = set('\\/:*?"<>|')
# Cc: C0 and C1 controls.  Cf: invisible format characters; bidi overrides and
# isolates can make "gpj.exe" read as "exe.jpg", and zero-width ones (U+200B,
# U+FEFF, ...) make two different names look the same.  Zl, Zp: line breaks.
_CONTROL_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}


def _is_control(ch: str) -> bool:
    """Controls, invisible format characters, and noncharacters (U+FFFE, U+FFFF, ...).

    Noncharacters cannot be written in XML: a stored U+FFFE name made every
    PROPFIND of its folder fail.
    """
    code = ord(ch)
    return (
        unicodedata.category(ch) in _CONTROL_CATEGORIES
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
    )


# Windows reads COM¹..COM³ as COM1..COM3, and CONIN$/CONOUT$ are the console.
_WINDOWS_DEVICES = {
    "con",
    "prn",
    "aux",
    "nul",
    "conin$",
    "conout$",
    *(f"{port}{n}" for port in ("com", "lpt") for n in "0123456789\u00b9\u00b2\u00b3"),
}


def _is_device(segment: str) -> bool:
    """A Windows device name, whatever follows its first dot: Windows drops the
    spaces before the dot too (``CON .txt`` is the console)."""
    return segment.split(".")[0].rstrip(" ").lower() in _WINDOWS_DEVICES


def _check_segment(segment: str) -> None:
    """Every name must be one a Windows client and an SMB share can hold."""
    if segment in (".", ".."):
        raise InvalidPath("dot segment")
    if any(ch in _FORBIDDEN for ch in segment):
        raise ForbiddenCharacter("forbidden character in name")
    if any(_is_control(ch) for ch in segment):
        raise ControlCharacter("control or bidi character in name")
    if segment.startswith(INTERNAL_PREFIX) or _is_device(segment):
        raise ReservedName("reserved name")
    # Any Unicode space counts (U+00A0, U+3000...): a name of spaces only is no name.
    if segment[-1] == "." or segment[-1].isspace():
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
        return [name for name, _entry in self.list_entries(folder)]

    def list_entries(self, folder: Path) -> list[tuple[str, os.DirEntry[str]]]:
        """(logical name, entry) of each entry in ``folder``: ours only, no links.

        One ``scandir``; names are decoded in one call (the codec's cache makes
        a folder listed again cheap), and the entries keep what ``scandir``
        learnt, so a listing need not look each member up again.
        """
        with os.scandir(folder) as scan:
            entries = [entry for entry in scan if not entry.is_symlink()]
        names = self.names.decode_many([entry.name for entry in entries])
        return [
            (name, entry) for name, entry in zip(names, entries, strict=True) if name is not None
        ]

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


class TempFile:
    """A new hidden temp file in ``folder`` (0600, never an existing file or a link).

    Written piece by piece, then either :meth:`finish`ed (fsynced; the caller
    owns the file at :attr:`path`) or :meth:`discard`ed (gone).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self._out = os.fdopen(fd, "wb", closefd=True)

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def finish(self) -> Path:
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # e.g. a full disk on the last flush: it goes anyway
            self._out.close()
        self.path.unlink(missing_ok=True)


def write_temp(folder: Path, chunks: Iterable[bytes]) -> Path:
    """Write chunks to a new hidden temp file in ``folder`` and fsync it."""
    temp = TempFile(folder)
    try:
        for chunk in chunks:
            temp.write(chunk)
        return temp.finish()
    except BaseException:
        temp.discard()
        raise


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
