"""What the Nextcloud apps need to know of each file and folder they see.

* ``oc:permissions`` from the policy, so the apps grey out what a user may
  not do: ``G`` read, ``W`` write a file, ``CK`` create in a folder, ``D``
  delete, ``NV`` rename and move (write and delete);
* folder ETags that change whenever anything below the folder changes (the
  desktop client descends only into folders whose ETag changed), from the
  backing folder's tree: names, inodes, sizes and times of everything below
  it, clindav's own working files excepted.

What one backing folder holds is read once and kept (:class:`TreeCache`)
while the folder's own time and inode stay the same: adding, removing,
renaming or replacing an entry (clindav writes every file to a temporary
name and renames it into place) changes them.  So a listing costs one
``stat`` per folder below the listed one, not one per file.  A folder
changed less than :data:`SETTLE_NS` before it was read is read again next
time: a second change within the filesystem's time granularity would leave
its time unchanged.  What the cache cannot see is a file rewritten in place
by another program: clindav never does that.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from gateway.auth.base import Principal
from gateway.policy import Action, Check, Policy
from gateway.storage.backing import INTERNAL_PREFIX

# How old a folder's change must be before what was read of it is kept.
SETTLE_NS = 2_000_000_000
# Folders kept per process (about 200 bytes each, plus their subfolders' names).
CACHED_FOLDERS = 100_000


@dataclass(frozen=True)
class Tree:
    etag: str
    size: int  # stored bytes below the folder


@dataclass(frozen=True)
class _Folder:
    """What one backing folder holds directly, as read at its ``ino``/``mtime_ns``."""

    ino: int
    mtime_ns: int
    digest: bytes  # its files' names, inodes, times and sizes, and its subfolders' names
    size: int  # its files' stored bytes
    subfolders: tuple[str, ...]


class TreeCache:
    def __init__(self, limit: int = CACHED_FOLDERS) -> None:
        self._limit = limit
        self._folders: OrderedDict[str, _Folder] = OrderedDict()
        self._lock = threading.Lock()

    def tree(self, folder: Path) -> Tree:
        """The ETag and stored size of everything below ``folder``."""
        digest = hashlib.blake2b(digest_size=12)
        size = 0
        pending = [""]
        while pending:
            relative = pending.pop()
            found = self._folder(os.path.join(folder, relative) if relative else str(folder))
            if found is None:
                continue  # removed while we looked: the next listing sees it
            digest.update(os.fsencode(relative) + b"\0" + found.digest)
            size += found.size
            pending.extend(os.path.join(relative, name) for name in reversed(found.subfolders))
        return Tree(digest.hexdigest(), size)

    def _folder(self, path: str) -> _Folder | None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        with self._lock:
            known = self._folders.get(path)
            if known is not None:
                self._folders.move_to_end(path)
        if known is not None and (known.ino, known.mtime_ns) == (st.st_ino, st.st_mtime_ns):
            return known
        read = _read_folder(path, st)
        if read is not None and st.st_mtime_ns < time.time_ns() - SETTLE_NS:
            with self._lock:
                self._folders[path] = read
                while len(self._folders) > self._limit:
                    self._folders.popitem(last=False)
        return read


def _read_folder(path: str, st: os.stat_result) -> _Folder | None:
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    subfolders = []
    try:
        entries = sorted(os.scandir(path), key=lambda entry: entry.name)
    except FileNotFoundError:
        return None
    for entry in entries:
        if entry.name.startswith(INTERNAL_PREFIX):
            continue
        if entry.is_dir(follow_symlinks=False):
            subfolders.append(entry.name)
            digest.update(os.fsencode(entry.name) + b"/\0")
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we looked: the folder's time has changed
        size += info.st_size
        digest.update(
            os.fsencode(entry.name) + f":{info.st_ino}:{info.st_mtime_ns}:{info.st_size}\0".encode()
        )
    return _Folder(st.st_ino, st.st_mtime_ns, digest.digest(), size, tuple(subfolders))


# One per serving process: every listing's folders share it.
_TREES = TreeCache()


def tree_of(folder: Path) -> Tree:
    return _TREES.tree(folder)


def combined_etag(parts: list[str]) -> str:
    """The ETag of the virtual root: it changes when any share's does."""
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest()


def permissions(
    policy: Policy, principal: Principal, share: str, path: str, *, folder: bool
) -> str:
    """The ``oc:permissions`` letters of ``path`` in ``share`` for ``principal``."""

    def allowed(method: str, action: Action, where: str) -> bool:
        return policy.decide(principal, Check(share, where, method, action)).allowed

    letters = "G"
    at_root = path.strip("/") == ""
    writable = allowed("PUT", "write", path)
    deletable = not at_root and allowed("DELETE", "delete", path)
    if folder:
        if allowed("MKCOL", "write", path.rstrip("/") + "/new"):
            letters += "CK"
    elif writable:
        letters += "W"
    if deletable:
        letters += "D"
        if writable:
            letters += "NV"
    return letters
