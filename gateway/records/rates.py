"""Requests counted per key in a sliding 10-minute window, in the database.

Counted in the database, so that every serving process (``server.workers``)
and every gateway on the same database count together.  Each key has a count
per 10-minute period; a request is allowed while this period's count plus
the previous period's, weighted by how much of it the sliding window still
covers, is within the limit (a sliding window without a row per request).
Every request counts, refused ones too: a script that keeps trying stays
refused until it pauses.  Keys are SHA-256 hashes of a kind and a value: a
link's token is never stored, nor an address in clear.

Used by the patient upload pages (gateway/uploads/throttle.py) and by the
start of a Nextcloud Login Flow v2 (gateway/nextcloud/loginflow.py): the
doors strangers reach without an account.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.db import UploadRate

WINDOW = 600  # seconds


class RateWindow:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock
        self._purged = -1  # the period whose older counts this process last deleted

    def allows(self, kind: str, value: str, limit: int) -> bool:
        """Count a request for ``value`` of ``kind``; False when it is over ``limit``."""
        key = hashlib.sha256(f"{kind}:{value}".encode("utf-8", "replace")).hexdigest()
        period, into = divmod(self.clock.now().timestamp(), WINDOW)
        current = int(period)
        with self.sessions.begin() as session:
            hits = int(session.scalar(_counted(session, key, current)) or 0)
            previous = session.scalar(
                select(UploadRate.hits).where(
                    UploadRate.key == key, UploadRate.period == current - 1
                )
            )
            if self._purged != current:  # once a period per process: old counts go
                session.execute(delete(UploadRate).where(UploadRate.period < current - 1))
                self._purged = current
        return hits + (previous or 0) * (1 - into / WINDOW) <= limit


def _upsert(dialect: str) -> Any:
    """The INSERT ... ON CONFLICT of the database in use.  Only its dialect is loaded:
    the Login Flow door loads this module in every worker, and importing the PostgreSQL
    dialect as well doubled an idle SQLite worker's private memory (20 to 40 MiB, `bench
    --only idle`)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    from sqlalchemy.dialects import postgresql

    return postgresql.insert


def _counted(session: Session, key: str, period: int) -> Any:
    """One more request for ``key`` in ``period``, atomically across processes; its count."""
    statement = _upsert(session.get_bind().dialect.name)(UploadRate).values(
        key=key, period=period, hits=1
    )
    return statement.on_conflict_do_update(
        index_elements=[UploadRate.key, UploadRate.period],
        set_={"hits": UploadRate.hits + 1},
    ).returning(UploadRate.hits)
