"""The numbers the Nextcloud apps know files and folders by (``oc:fileid``, ``OC-FileId``).

A number is given the first time the apps see a path, kept in the database
(so it survives restarts and is the same in every gateway process), and is
never given again once its path is deleted: the desktop client takes a known
number at a new path for a rename of its local file.  It follows its file
through every MOVE, whichever door made it (WebDAV, the Nextcloud apps, a
move across shares): :func:`follow_move` runs in the MOVE's own transaction
in the one MOVE path (gateway/dav/provider.py, gateway/dav/crossshare.py);
:func:`retire` in the trash's (gateway/records/trash.py), whoever deleted it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import NextcloudFileId, starts_with

# The instance part of ``oc:id`` (Nextcloud: ``oc`` and 10 characters).
INSTANCE = "occlindav01"


def oc_id(number: int) -> str:
    """``oc:id``: the number, zero-padded to 8 digits, then the instance."""
    return f"{number:08d}{INSTANCE}"


class FileIds:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def numbers(self, share: str, paths: Iterable[str]) -> dict[str, int]:
        """Path -> number for ``paths`` of ``share``, new numbers for new paths."""
        wanted = list(dict.fromkeys(paths))
        found = self._read(share, wanted)
        missing = [p for p in wanted if p not in found]
        if missing:
            try:
                with self._sessions.begin() as session:
                    session.add_all(NextcloudFileId(share=share, path=p) for p in missing)
            except IntegrityError:
                pass  # another request numbered some of them first: theirs stand
            found.update(self._read(share, missing))
        return found

    def _read(self, share: str, paths: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._sessions() as session:
            for start in range(0, len(paths), 500):
                rows = session.execute(
                    select(NextcloudFileId.path, NextcloudFileId.id).where(
                        NextcloudFileId.share == share,
                        NextcloudFileId.path.in_(paths[start : start + 500]),
                    )
                )
                found.update({path: number for path, number in rows})
        return found


def follow_move(session: Session, share: str, source: str, dest_share: str, dest: str) -> None:
    """``source`` (and what is below it) now lives at ``dest``: the numbers follow.

    What ``dest`` was numbered before (a file the MOVE replaced) retires.
    """
    source, dest = source.rstrip("/") or "/", dest.rstrip("/") or "/"
    session.execute(
        delete(NextcloudFileId).where(
            NextcloudFileId.share == dest_share,
            (NextcloudFileId.path == dest) | starts_with(NextcloudFileId.path, dest + "/"),
        )
    )
    rows = session.scalars(
        select(NextcloudFileId).where(
            NextcloudFileId.share == share,
            (NextcloudFileId.path == source) | starts_with(NextcloudFileId.path, source + "/"),
        )
    )
    for row in rows:
        row.share, row.path = dest_share, dest + row.path[len(source) :]


def retire(session: Session, share: str, path: str) -> None:
    """``path`` and everything below it are gone (to the trash): their numbers retire."""
    path = path.rstrip("/") or "/"
    session.execute(
        delete(NextcloudFileId).where(
            NextcloudFileId.share == share,
            (NextcloudFileId.path == path) | starts_with(NextcloudFileId.path, path + "/"),
        )
    )
