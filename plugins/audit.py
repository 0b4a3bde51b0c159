"""The audit observer: one event for every outcome, success or refusal.

Contract: :meth:`AuditLog.event` builds an event for the caller to add to
the same database transaction as the change it describes (no audit, no
write); :meth:`AuditLog.record` writes a stand-alone event (reads,
refusals, admin actions) and raises :class:`ServiceUnavailable` if it cannot,
so a request whose audit cannot be written fails closed (503).  Events never
carry a password, content bytes or a key; ``details`` holds names and counts.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.db import AuditEvent
from gateway.errors import ServiceUnavailable
from gateway.pipeline import RequestInfo

log = logging.getLogger("clindav.audit")


class AuditLog:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

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
    ) -> AuditEvent:
        actor = request.principal.uid if request.principal else "-"
        return AuditEvent(
            request_id=request.request_id,
            actor=actor[:255],
            client=request.client[:64],
            user_agent=request.user_agent[:255],
            action=action[:32],
            share=share,
            logical_path=path,
            status=status,
            code=code,
            reason=reason,
            details=details or {},
        )

    def record(self, request: RequestInfo, **fields: Any) -> None:
        event = self.event(request, **fields)
        try:
            with self._sessions.begin() as session:
                session.add(event)
        except SQLAlchemyError as exc:
            log.error("audit write failed (request %s): %s", request.request_id, exc)
            raise ServiceUnavailable(f"audit write failed: {exc}") from None
        if event.status >= 400:
            # Explorer and Finder show only generic errors: the reason lives here too.
            log.warning(
                "refused %s %s/%s for %s: %s %s",
                event.action,
                share_or_dash(event.share),
                event.logical_path or "",
                event.actor,
                event.code,
                event.reason,
            )


def share_or_dash(share: str | None) -> str:
    return share or "-"
