"""What the Nextcloud apps need to know of each file and folder they see.

* ``oc:permissions`` from the policy, so the apps grey out what a user may
  not do: ``G`` read, ``W`` write a file, ``CK`` create in a folder, ``D``
  delete, ``NV`` rename and move (write and delete);
* folder ETags that change whenever anything below the folder changes (the
  desktop client descends only into folders whose ETag changed), from the
  backing folder's tree: names, inodes, sizes and times of everything below
  it, clindav's own working files excepted.  The walk costs one ``lstat`` per
  entry below the folder, per listing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.auth.base import Principal
from gateway.policy import Action, Check, Policy
from gateway.storage.backing import INTERNAL_PREFIX


@dataclass(frozen=True)
class Tree:
    etag: str
    size: int  # stored bytes below the folder


def tree_of(folder: Path) -> Tree:
    digest = hashlib.blake2b(digest_size=12)
    size = 0
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(INTERNAL_PREFIX))
        digest.update(os.fsencode(os.path.relpath(current, folder)) + b"\0")
        for name in sorted(files):
            if name.startswith(INTERNAL_PREFIX):
                continue
            try:
                st = os.lstat(os.path.join(current, name))
            except FileNotFoundError:
                continue  # removed while we looked: the next listing sees it
            size += st.st_size
            digest.update(f"{name}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}\0".encode())
        digest.update(("/".join(dirs) + "\0").encode(errors="surrogateescape"))
    return Tree(digest.hexdigest(), size)


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
