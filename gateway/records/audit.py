"""The audit observer: one event for every outcome, success or refusal, in a chain.

Contract: :meth:`AuditLog.append` adds an event to the caller's transaction,
so a change and its event commit together (no audit, no write);
:meth:`AuditLog.record` writes a stand-alone event (reads, refusals, admin
actions) and raises :class:`ServiceUnavailable` if it cannot, so a request
whose audit cannot be written fails closed (503).  Events never carry a
password, content bytes or a key; ``details`` holds names and counts.

Tamper evidence: events are numbered without gaps (``seq``) and each carries
``prev_mac`` (its predecessor's MAC) and ``mac`` = HMAC-SHA256 over its
canonical encoding (sorted-key JSON of every field but ``mac``), keyed by
the ``@audit`` seed from the key table.  Someone who can write the database
but does not hold the master key can neither edit, delete nor insert an event
without :func:`verify_chain` reporting the position.  Appends are serialised
by the database: the first statement of an appending transaction updates the
single ``audit_head`` row, which takes the row lock on PostgreSQL and the
write lock on SQLite, so several gateway processes keep one linear chain.
Before that statement a transaction takes :class:`ChainLock` (a thread lock,
plus an ``flock`` beside a SQLite database), held until the transaction
ends: appenders then queue in order instead of polling SQLite's busy handler,
whose sleeps of up to 100 ms made the slowest reads wait.

Appends are written with SQLAlchemy Core (one INSERT, one UPDATE of the
head): the ORM's unit of work cost more than the rest of a read.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy import event as sa_event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from gateway.db import AuditEvent, AuditHead, utcnow
from gateway.errors import ClindavError, DatabaseUnavailable, ServiceUnavailable

if TYPE_CHECKING:  # an annotation only: reading the trail needs no pipeline
    from gateway.pipeline import RequestInfo

log = logging.getLogger("clindav.audit")
AUDIT_SEED = "@audit"
GENESIS = "0" * 64
# Every field the MAC covers: all but the MAC itself.
CHAINED_FIELDS = (
    "seq",
    "occurred_at",
    "request_id",
    "actor",
    "client",
    "user_agent",
    "action",
    "share",
    "logical_path",
    "patient_id",
    "status",
    "code",
    "reason",
    "details",
    "prev_mac",
)


def canonical(event: AuditEvent) -> bytes:
    """The bytes an event's MAC covers (stable across databases)."""
    values: dict[str, Any] = {name: getattr(event, name) for name in CHAINED_FIELDS}
    when = values["occurred_at"]
    if when.tzinfo is None:  # SQLite returns naive datetimes; all of ours are UTC
        when = when.replace(tzinfo=dt.UTC)
    values["occurred_at"] = when.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _row(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in (*CHAINED_FIELDS, "mac")}


# Outcomes of ordinary client behaviour, not of the gateway refusing anything:
# a probe for a name that does not exist (404, which is also how private
# objects of others look), MKCOL of a folder that exists (405) and client
# junk answered without storing it.  They are recorded like every outcome but
# are "misses", not refusals: no warning in the log, not in
# ``audit tail --refusals`` (docs/AUDIT.md).
MISS_CODES = frozenset({"not-found", "method-not-allowed", "junk-not-stored"})


def outcome_class(status: int, code: str) -> str:
    """``success``, ``miss`` or ``refusal`` (docs/AUDIT.md, "Outcome classes")."""
    if status < 400:
        return "success"
    return "miss" if code in MISS_CODES else "refusal"


OUTCOMES = ("success", "miss", "refusal")


def outcome_is(kind: str) -> Any:
    """The SQL form of ``outcome_class(status, code) == kind``."""
    if kind == "success":
        return AuditEvent.status < 400
    if kind == "miss":
        return (AuditEvent.status >= 400) & AuditEvent.code.in_(MISS_CODES)
    return (AuditEvent.status >= 400) & AuditEvent.code.not_in(MISS_CODES)


class AuditUnavailable(ServiceUnavailable):
    code = "audit-unavailable"
    message = "The gateway cannot record this request in its audit trail; nothing was changed."


_HELD = "clindav.audit_chain"
# Most events one group commit writes (a bounded transaction).
MAX_GROUP = 64
_HEAD = cast(Table, AuditHead.__table__)
_EVENTS = cast(Table, AuditEvent.__table__)
# Built once: statements with bound parameters compile once and are cached.
_TOUCH_HEAD = _HEAD.update().where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq)
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.mac).where(_HEAD.c.id == 1)
_MOVE_HEAD = (
    _HEAD.update().where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), mac=bindparam("new_mac"))
)
_INSERT_EVENT = _EVENTS.insert()


class ChainLock:
    """Orders this process's appending transactions (see the module doc).

    Taken by :meth:`AuditLog.lock_head` and released when the session's outer
    transaction ends (commit or rollback).  For a SQLite file database an
    ``flock`` on ``<database>-chain`` extends the order to every gateway
    process on the machine; PostgreSQL's row lock already wakes waiters at once.
    """

    def __init__(self, sessions: sessionmaker | None) -> None:
        self._thread = threading.RLock()
        bind = sessions.kw.get("bind") if sessions is not None else None
        database = (
            bind.url.database
            if bind is not None and bind.url.drivername.startswith("sqlite")
            else None
        )
        self._path = f"{database}-chain" if database and database != ":memory:" else None
        if sessions is not None:
            sa_event.listen(sessions, "after_transaction_end", self._transaction_ended)

    def hold(self, session: Session) -> None:
        """Take the lock for ``session``'s transaction (once per transaction)."""
        if session.info.get(_HELD) is not None:
            return
        self._thread.acquire()
        fd = None
        try:
            if self._path is not None:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            if fd is not None:
                os.close(fd)
            self._thread.release()
            raise
        session.info[_HELD] = fd if fd is not None else -1

    def _transaction_ended(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None:
            return
        fd = session.info.pop(_HELD, None)
        if fd is None:
            return
        if fd >= 0:
            os.close(fd)  # closing the descriptor drops the flock
        self._thread.release()


@dataclass
class _Pending:
    event: AuditEvent
    done: bool = False
    failure: str | None = None


class GroupCommit:
    """Stand-alone events of concurrent requests, committed together.

    Each caller's event is committed before :meth:`submit` returns (reads
    are audited before their first byte leaves).  Callers that arrive while a
    commit is under way wait for it and go into the next one together: eight
    concurrent reads cost one transaction and one fsync, not eight in a row.
    The first waiter to find no commit under way writes the batch for all.
    """

    def __init__(self, commit: Callable[[list[AuditEvent]], None]) -> None:
        self._commit = commit
        self._cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False

    def submit(self, event: AuditEvent) -> str | None:
        """Commit ``event`` with whatever else is waiting; the failure's text, or None."""
        mine = _Pending(event)
        with self._cv:
            self._queue.append(mine)
            while not mine.done:
                if self._writing:
                    self._cv.wait()
                    continue
                self._writing = True
                batch, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                failure: str | None = "the audit writer stopped"
                try:
                    failure = self._write(batch)
                finally:  # whatever happens, no waiter is left waiting
                    for pending in batch:
                        pending.done, pending.failure = True, failure
                    self._writing = False
                    self._cv.notify_all()
        return mine.failure

    def _write(self, batch: list[_Pending]) -> str | None:
        """Commit ``batch`` with the condition released, so others can queue meanwhile."""
        self._cv.release()
        try:
            self._commit([pending.event for pending in batch])
        except (SQLAlchemyError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._cv.acquire()
        return None


class ChainKeyNotLoaded(ClindavError):
    code = "audit-key-not-loaded"
    message = (
        "This needs the audit chain key: give --audit-key FILE "
        "(written by `clindav keys export-audit-key`)."
    )


def recorded_answer(refusal: ClindavError, record: Callable[[], object]) -> ClindavError:
    """What to answer for ``refusal`` once ``record`` has written its event.

    When the event cannot be written the answer is the audit's own failure
    (503): an unrecorded refusal must not look like a recorded one.  A
    refusal that is already a server error is answered as it is.
    """
    try:
        record()
    except ClindavError as failure:
        return failure if refusal.status < 500 else refusal
    except SQLAlchemyError as exc:
        return DatabaseUnavailable(f"audit: {type(exc).__name__}")
    return refusal


class AuditLog:
    """The chain.  Without ``chain_key`` (an auditor's commands) it reads, and never
    appends or checks a MAC: reading events needs database access alone."""

    def __init__(self, sessions: sessionmaker, chain_key: bytes | None) -> None:
        self._sessions = sessions
        self._key = chain_key
        self._chain = ChainLock(sessions)
        self._group = GroupCommit(self._commit)

    def mac(self, event: AuditEvent) -> str:
        if self._key is None:
            raise ChainKeyNotLoaded("audit log opened without its chain key")
        return hmac.new(self._key, canonical(event), hashlib.sha256).hexdigest()

    def event(
        self,
        request: RequestInfo,
        *,
        action: str,
        share: str | None,
        path: str | None,
        status: int,
        code: str,
        reason: str = "",
        details: dict[str, Any] | None = None,
        patient_id: str | None = None,
    ) -> AuditEvent:
        actor = request.principal.uid if request.principal else "-"
        return AuditEvent(
            occurred_at=utcnow(),
            request_id=request.request_id,
            actor=actor[:255],
            client=request.client[:64],
            user_agent=request.user_agent[:255],
            action=action[:32],
            share=share,
            logical_path=path,
            patient_id=patient_id,
            status=status,
            code=code,
            reason=reason,
            details=details or {},
        )

    def lock_head(self, session: Session) -> None:
        """Take the chain's lock for this transaction; call it first."""
        self._chain.hold(session)
        touched = session.execute(_TOUCH_HEAD)
        if touched.rowcount == 0:  # type: ignore[attr-defined]
            session.execute(_HEAD.insert().values(id=1, seq=0, mac=GENESIS))

    def append(self, session: Session, event: AuditEvent) -> None:
        """Link ``event`` into the chain inside the caller's transaction."""
        self._link(session, [event])

    def _link(self, session: Session, events: list[AuditEvent]) -> None:
        self.lock_head(session)
        seq, mac = session.execute(_READ_HEAD).one()
        for event in events:
            event.seq, event.prev_mac = seq + 1, mac
            event.mac = self.mac(event)
            seq, mac = event.seq, event.mac
        session.execute(_INSERT_EVENT, [_row(event) for event in events])
        session.execute(_MOVE_HEAD, {"new_seq": seq, "new_mac": mac})

    def _commit(self, events: list[AuditEvent]) -> None:
        with self._sessions.begin() as session:
            self._link(session, events)

    def record(self, request: RequestInfo, **fields: Any) -> None:
        """Write a stand-alone event; it is committed (durable) when this returns."""
        event = self.event(request, **fields)
        failure = self._group.submit(event)
        if failure is not None:
            log.error("request %s: audit write failed: %s", request.request_id, failure)
            raise AuditUnavailable(f"audit write failed: {failure}")
        if outcome_class(event.status, event.code) == "refusal":
            # Explorer and Finder show only generic errors: the reason lives here too.
            log.warning(
                "request %s: refused %s %s:%s for %s: %s %s",
                request.request_id,
                event.action,
                event.share or "-",
                event.logical_path or "",
                event.actor,
                event.code,
                event.reason,
            )

    def record_refusal(
        self, request: RequestInfo, refusal: ClindavError, *, action: str, path: str | None
    ) -> ClindavError:
        """Record a refusal made outside any share; what to answer once it is
        recorded (:func:`recorded_answer`)."""
        return recorded_answer(
            refusal,
            lambda: self.record(
                request,
                action=action,
                share=None,
                path=path,
                status=refusal.status,
                code=refusal.code,
                reason=refusal.detail or refusal.public_message,
            ),
        )

    def head(self) -> tuple[int, str]:
        with self._sessions() as session:
            row = session.get(AuditHead, 1)
        return (row.seq, row.mac) if row else (0, GENESIS)


@dataclass(frozen=True)
class ChainProblem:
    position: int
    problem: str


def verify_chain(audit: AuditLog, sessions: sessionmaker, batch: int = 5000) -> list[ChainProblem]:
    """Walk the whole chain; report edited, deleted or inserted events by position."""
    problems: list[ChainProblem] = []
    expected_seq, prev_mac = 1, GENESIS
    for event in iter_events(sessions, batch=batch):
        if event.seq != expected_seq:
            problems.append(
                ChainProblem(expected_seq, f"events {expected_seq}..{event.seq - 1} missing")
            )
        elif event.prev_mac != prev_mac:
            problems.append(ChainProblem(event.seq, "does not follow its predecessor"))
        if not hmac.compare_digest(event.mac, audit.mac(event)):
            problems.append(
                ChainProblem(event.seq, "content does not match its MAC (edited or forged)")
            )
        expected_seq, prev_mac = event.seq + 1, event.mac
    head_seq, head_mac = audit.head()
    if (head_seq, head_mac) != (expected_seq - 1, prev_mac):
        problems.append(
            ChainProblem(head_seq, f"chain head says {head_seq}, last event is {expected_seq - 1}")
        )
    return problems


def iter_events(
    sessions: sessionmaker, *, batch: int = 5000, after: int = 0, **filters: Any
) -> Iterator[AuditEvent]:
    """Events after position ``after`` in chain order, read in keyset-paged batches
    (constant memory)."""
    while True:
        with sessions() as session:
            query = select(AuditEvent).where(AuditEvent.seq > after)
            for column, value in filters.items():
                if value is not None:
                    query = query.where(_FILTERS[column](value))
            rows = session.scalars(query.order_by(AuditEvent.seq).limit(batch)).all()
            session.expunge_all()
        if not rows:
            return
        yield from rows
        after = rows[-1].seq


_FILTERS: dict[str, Any] = {
    "since": lambda v: AuditEvent.occurred_at >= v,
    "until": lambda v: AuditEvent.occurred_at < v,
    "patient": lambda v: AuditEvent.patient_id == v,
    "user": lambda v: AuditEvent.actor == v,
    "refusals": lambda v: outcome_is("refusal") if v else AuditEvent.status > 0,
}
