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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import AuditEvent, AuditHead, utcnow
from gateway.errors import ServiceUnavailable
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


class AuditUnavailable(ServiceUnavailable):
    code = "audit-unavailable"
    message = "The gateway cannot record this request in its audit trail; nothing was changed."


class AuditLog:
    def __init__(self, sessions: sessionmaker, chain_key: bytes) -> None:
        self._sessions = sessions
        self._key = chain_key

    def mac(self, event: AuditEvent) -> str:
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

    def lock_head(self, session: Session) -> AuditHead:
        """Take the chain's lock for this transaction; call it first."""
        session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq))
        head = session.get(AuditHead, 1, populate_existing=True)
        if head is None:
            head = AuditHead(id=1, seq=0, mac=GENESIS)
            session.add(head)
            session.flush()
        return head

    def append(self, session: Session, event: AuditEvent) -> None:
        """Link ``event`` into the chain inside the caller's transaction."""
        head = self.lock_head(session)
        event.seq = head.seq + 1
        event.prev_mac = head.mac
        event.mac = self.mac(event)
        head.seq, head.mac = event.seq, event.mac
        session.add(event)

    def record(self, request: RequestInfo, **fields: Any) -> None:
        event = self.event(request, **fields)
        try:
            with self._sessions.begin() as session:
                self.append(session, event)
        except SQLAlchemyError as exc:
            log.error("request %s: audit write failed: %s", request.request_id, exc)
            raise AuditUnavailable(f"audit write failed: {exc}") from None
        if event.status >= 400:
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
    sessions: sessionmaker, *, batch: int = 5000, **filters: Any
) -> Iterator[AuditEvent]:
    """Events in chain order, read in keyset-paged batches (constant memory)."""
    after = 0
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
    "refusals": lambda v: AuditEvent.status >= 400 if v else AuditEvent.status > 0,
}
