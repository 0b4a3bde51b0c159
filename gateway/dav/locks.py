"""WebDAV locks kept in clindav's database (``locks.storage: database``, the default).

Implements the storage interface WsgiDAV's lock manager expects (``get``,
``create``, ``refresh``, ``delete``, ``get_lock_list``), so that every gateway
process over one database sees the same locks without Redis, and so that
admins can list and break them with ``clindav locks list|break`` (audited).
Expired locks are never returned and are deleted when met.  Timeouts are
capped at :data:`gateway.dav.limits.MAX_LOCK_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from wsgidav.lock_man.lock_manager import generate_lock_token, normalize_lock_root, validate_lock
from wsgidav.lock_man.lock_storage import LockStorageDict

from gateway.change import ChangeSessions, on_failure
from gateway.dav.limits import MAX_LOCK_SECONDS
from gateway.db import DavLock, starts_with

_READS = threading.local()


def begin_request(read_only: bool) -> None:
    """Called per request: a read-only request may answer lock queries from one snapshot.

    A PROPFIND of a folder asks for every member's locks (lockdiscovery); one
    query per request instead of one per member.  Requests that change
    anything always ask the database, so a lock check never uses stale data.
    """
    _READS.snapshot = [] if read_only else None
    _READS.loaded = False


class DatabaseLockStorage:
    def __init__(self, sessions: ChangeSessions) -> None:
        self._sessions = sessions

    def __repr__(self) -> str:
        return "DatabaseLockStorage()"

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def cleanup(self) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(DavLock).where(DavLock.expire < time.time()))

    def clear(self) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(DavLock))

    def get(self, token: str) -> dict[str, Any] | None:
        with self._sessions.reading() as session:
            row = session.get(DavLock, token)
        if row is None:
            return None
        if row.expire < time.time():
            self.delete(token)
            return None
        return _restore(row.lock)

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        lock["root"] = normalize_lock_root(path)
        timeout = float(lock.get("timeout") or MAX_LOCK_SECONDS)
        lock["timeout"] = MAX_LOCK_SECONDS if timeout < 0 else min(timeout, MAX_LOCK_SECONDS)
        lock["expire"] = time.time() + lock["timeout"]
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        with self._sessions.begin() as session:
            session.add(
                DavLock(
                    token=lock["token"],
                    root=lock["root"],
                    principal=str(lock.get("principal", "")),
                    expire=lock["expire"],
                    lock=_jsonable(lock),
                )
            )
        return lock

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        seconds = MAX_LOCK_SECONDS if timeout < 0 else min(timeout, MAX_LOCK_SECONDS)
        with self._sessions.begin() as session:
            row = session.get(DavLock, token)
            if row is None:
                raise ValueError(f"no lock {token}")
            lock = _restore(row.lock)
            lock["timeout"], lock["expire"] = seconds, time.time() + seconds
            row.lock, row.expire = _jsonable(lock), lock["expire"]
        return lock

    def delete(self, token: str) -> bool:
        with self._sessions.begin() as session:
            result = session.execute(delete(DavLock).where(DavLock.token == token))
            return bool(getattr(result, "rowcount", 0))

    def get_lock_list(
        self, path: str, *, include_root: bool, include_children: bool, token_only: bool
    ) -> list[Any]:
        root = normalize_lock_root(path)
        if getattr(_READS, "snapshot", None) is not None:
            return self._from_snapshot(root, include_root, include_children, token_only)
        query = select(DavLock).where(DavLock.expire >= time.time())
        conditions = []
        if include_root:
            conditions.append(DavLock.root == root)
        if include_children:
            conditions.append(starts_with(DavLock.root, root.rstrip("/") + "/"))
        with self._sessions.reading() as session:
            rows = session.scalars(
                query.where(
                    conditions[0] if len(conditions) == 1 else conditions[0] | conditions[1]
                )
            ).all()
        return [row.token if token_only else _restore(row.lock) for row in rows]

    def _from_snapshot(
        self, root: str, include_root: bool, include_children: bool, token_only: bool
    ) -> list[Any]:
        if not _READS.loaded:
            _READS.snapshot, _READS.loaded = self.all(), True
        below = root.rstrip("/") + "/"
        found = [
            lock
            for lock in _READS.snapshot
            if (include_root and lock["root"] == root)
            or (include_children and lock["root"].startswith(below))
        ]
        return [lock["token"] if token_only else lock for lock in found]

    def all(self) -> list[dict[str, Any]]:
        """Every live lock (for ``clindav locks list``)."""
        with self._sessions.reading() as session:
            rows = session.scalars(
                select(DavLock).where(DavLock.expire >= time.time()).order_by(DavLock.root)
            ).all()
        return [_restore(row.lock) for row in rows]


def _jsonable(lock: dict[str, Any]) -> dict[str, Any]:
    """WsgiDAV keeps the owner as XML bytes; JSON needs text."""
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in lock.items()}


def _restore(stored: dict[str, Any]) -> dict[str, Any]:
    """The lock as WsgiDAV keeps it: the owner back to XML bytes."""
    lock = dict(stored)
    if isinstance(lock.get("owner"), str):
        lock["owner"] = lock["owner"].encode("utf-8")
    return lock


class MemoryLockStorage(LockStorageDict):
    """WsgiDAV's in-memory lock storage (``locks.storage: memory``); a lock taken by a
    request whose change does not commit (gateway/change.py) is deleted again."""

    def __init__(self, sessions: ChangeSessions) -> None:
        super().__init__()
        self._sessions = sessions

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        return kept_if_committed(self._sessions, super().create, self.delete, path, lock)


def kept_if_committed(
    sessions: ChangeSessions,
    create: Callable[[str, dict[str, Any]], dict[str, Any]],
    delete: Callable[[str], Any],
    path: str,
    lock: dict[str, Any],
) -> dict[str, Any]:
    """A lock outside the database, deleted again if the transaction (the request's change,
    with its audit event) does not commit."""
    with sessions.begin() as session:
        created = create(path, lock)
        on_failure(session, lambda: delete(created["token"]))
    return created
