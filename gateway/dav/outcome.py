"""What happened to one WebDAV request, gathered for its audit event.

The middleware (gateway/dav/middleware.py) makes one :class:`Outcome` per
request; the policy gate (gateway/dav/gate.py) fills in what the request
touches, the handler that answers (gateway/dav/dispatch.py) or the error
translation its status and code.
"""

from __future__ import annotations

from typing import Any

from gateway.change import RequestChange
from gateway.dav.destination import Destination
from gateway.pipeline import RequestInfo


class Outcome:
    def __init__(self, request: RequestInfo) -> None:
        self.request = request
        self.action = request.method.upper()  # audited even if refused
        self.share: str | None = None
        self.path: str | None = None
        self.status = 200
        self.code = "ok"
        self.reason = ""
        self.challenge = False
        self.started = False
        # COPY/MOVE: the Destination as read once and judged (gateway/dav/destination.py).
        self.destination: Destination | None = None
        self.patient: str | None = None  # whose object it touches (gateway/records/patientpaths.py)
        # The request's change (methods in _CHANGING) until it commits or is abandoned.
        self.change: RequestChange | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def fail(self, status: int, code: str, reason: str) -> None:
        self.status, self.code, self.reason = status, code, reason

    def event_fields(self) -> dict[str, Any]:
        """The request's audit event, whether recorded alone or with its change."""
        return {
            "action": self.action,
            "share": self.share,
            "path": self.path,
            "status": self.status,
            "code": self.code,
            "reason": self.reason,
            "details": self._moves(),
            "patient_id": self.patient,
        }

    def _moves(self) -> dict[str, str] | None:
        """A COPY's or MOVE's source and destination."""
        if self.destination is None:
            return None
        return {"from": f"{self.share}:{self.path}", "to": "{}:{}".format(*self.destination)}
