"""Legacy files: what a share holds that clindav did not write.

A *legacy* entry is a name the share's name cipher did not produce (and
everything below such a folder), or, in a ``names: plain`` share, a file
without the CLDV header.  The gateway neither lists nor serves them;
``clindav serve`` and ``check-config`` report how many there are
(:func:`count_legacy`), and ``clindav migrate`` (gateway/admin/migrate.py)
brings them under protection.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.crypto.fileformat import MAGIC
from gateway.storage.backing import INTERNAL_PREFIX, BackingStore, PlainNames

log = logging.getLogger("clindav.migrate")


@dataclass(frozen=True)
class LegacyEntry:
    """A legacy file (``kind`` file or other) or folder on the backing share."""

    kind: str  # "file", "folder" or "other" (link, device, socket)
    source: Path
    logical: str  # "/" + segments, NFC (may hold surrogates for undecodable bytes)
    size: int = 0

    @property
    def name(self) -> str:
        return self.source.name


def walk_legacy(store: BackingStore) -> Iterator[LegacyEntry]:
    """Every legacy entry of a share in a stable order; internal folders are skipped."""
    plain = isinstance(store.names, PlainNames)
    pending: list[tuple[Path, str, bool]] = [(store.root, "", False)]
    while pending:
        folder, logical, legacy = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list a folder of %s: %s", store.root, exc.strerror)
            continue
        children = []
        for entry in entries:
            if entry.name.startswith(INTERNAL_PREFIX):
                continue
            decoded = None if legacy else store.names.decode(entry.name)
            is_legacy = legacy or decoded is None
            child = f"{logical}/{decoded if decoded is not None else nfc(entry.name)}"
            path = Path(entry.path)
            if entry.is_symlink():
                if is_legacy:
                    yield LegacyEntry("other", path, child)
            elif entry.is_dir(follow_symlinks=False):
                if is_legacy:
                    yield LegacyEntry("folder", path, child)
                children.append((path, child, is_legacy))
            elif entry.is_file(follow_symlinks=False):
                if is_legacy or (plain and not _has_header(path)):
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except OSError:  # gone since the listing
                        continue
                    yield LegacyEntry("file", path, child, size)
            elif is_legacy:
                yield LegacyEntry("other", path, child)
        pending.extend(reversed(children))


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _has_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class LegacyCount:
    files: int
    bytes: int


def count_legacy(store: BackingStore) -> LegacyCount:
    files = total = 0
    for entry in walk_legacy(store):
        if entry.kind != "folder":
            files += 1
            total += entry.size
    return LegacyCount(files, total)


def log_unmigrated(stores: Mapping[str, BackingStore]) -> None:
    """Serve's start-up report: a warning per share that still holds legacy files."""
    for name, store in stores.items():
        try:
            count = count_legacy(store)
        except OSError as exc:
            log.warning("share %s: unmigrated files not counted: %s", name, exc)
            continue
        if count.files:
            log.warning(
                "share %s: %d unmigrated legacy files (%.1f MB) in %s are hidden from clients; "
                "protect them with `clindav migrate %s` (docs/MIGRATION.md)",
                name,
                count.files,
                count.bytes / 1e6,
                store.root,
                name,
            )
