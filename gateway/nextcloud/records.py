"""The audit events of the Nextcloud door's changes (app passwords issued and revoked).

A change and its event commit in one transaction (the app password store
runs the returned callable first in its own), so neither exists without the
other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from gateway.auth.apppasswords import Audit
from gateway.pipeline import RequestInfo
from gateway.services import Services


def chained_event(services: Services, request: RequestInfo, action: str, **details: Any) -> Audit:
    """Appends ``action``'s successful event to the caller's transaction."""

    def append(session: Session) -> None:
        chain = services.audit
        chain.lock_head(session)
        event = chain.event(
            request, action=action, share=None, path=None, status=200, code="ok", details=details
        )
        chain.append(session, event)

    return append
