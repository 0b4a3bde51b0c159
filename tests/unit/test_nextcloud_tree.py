"""Folder ETags for the Nextcloud apps (gateway/nextcloud/tree.py) on a real folder tree.

A settled folder is read once: a listing then costs a ``stat`` per folder,
not per file.  What shows it: a file changed in place (which clindav never
does) behind a folder whose own time is put back is not seen, while every
change clindav makes (a new name, a rename, a file replaced by a rename, a
new subfolder) is, also within the same second.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.nextcloud.tree import SETTLE_NS, TreeCache

OLD_NS = 1_600_000_000 * 1_000_000_000  # 2020: long settled


def _settle(*folders: Path) -> None:
    for folder in folders:
        os.utime(folder, ns=(OLD_NS, OLD_NS))


def _tree_with_files(root: Path, count: int) -> Path:
    (root / "big" / "sub").mkdir(parents=True)
    for n in range(count):
        (root / "big" / f"note-{n:04d}.txt").write_bytes(b"x" * n)
    (root / "big" / "sub" / "deep.txt").write_bytes(b"deep")
    _settle(root / "big" / "sub", root / "big", root)
    return root


def test_a_settled_folder_is_read_once(tmp_path: Path) -> None:
    root = _tree_with_files(tmp_path, 200)
    cache = TreeCache()
    first = cache.tree(root)
    assert first.size == sum(range(200)) + 4
    # Rewritten in place, the folder's time put back: only a re-read would see it.
    (root / "big" / "note-0007.txt").write_bytes(b"changed in place, a longer body")
    _settle(root / "big")
    assert cache.tree(root) == first
    assert TreeCache().tree(root) != first  # a fresh read does see it


def test_every_change_clindav_makes_changes_the_etag_at_once(tmp_path: Path) -> None:
    root = _tree_with_files(tmp_path, 20)
    cache = TreeCache()
    seen = {cache.tree(root).etag}

    def changed() -> None:
        etag = cache.tree(root).etag
        assert etag not in seen
        seen.add(etag)

    (root / "big" / "sub" / "new.txt").write_bytes(b"new")  # a new file, two levels down
    changed()
    (root / "big" / "sub" / "newer.txt").write_bytes(b"newer")  # again, the same instant
    changed()
    temp = root / "big" / ".clindav-tmp-1"
    temp.write_bytes(b"replacement")
    os.replace(temp, root / "big" / "note-0003.txt")  # replaced as clindav writes
    changed()
    os.rename(root / "big" / "note-0004.txt", root / "big" / "renamed.txt")
    changed()
    (root / "big" / "sub" / "again").mkdir()
    changed()
    (root / "big" / "renamed.txt").unlink()
    changed()
    assert SETTLE_NS >= 1_000_000_000  # above any filesystem's time granularity


def test_internal_files_do_not_count(tmp_path: Path) -> None:
    root = _tree_with_files(tmp_path, 3)
    before = TreeCache().tree(root)
    (root / "big" / ".clindav-tmp-9").write_bytes(b"half an upload")
    (root / ".clindav-trash").mkdir()
    assert TreeCache().tree(root) == before
