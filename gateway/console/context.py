"""What a console view needs for the request it answers: services, who asks, audit.

Views never build these themselves:

* :func:`services` - the gateway's :class:`~gateway.services.Services`
  (policy, consent, trash, audit, shares), the ones WebDAV uses;
* :func:`principal` - the signed-in user (views run only signed in, see
  gateway/console/app.py);
* :func:`request_info` - the :class:`~gateway.pipeline.RequestInfo` every
  service takes for its audit events (request id, user, address, agent);
* :func:`attempt` - what the view is about to do, for the audit event of a
  refusal (the error handler records it); :func:`audit` - the event of a
  success.  Every page view and action is one event, as its WebDAV
  equivalent is (docs/CONSOLE.md, "Audit").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, request

from gateway.auth.base import Principal
from gateway.errors import ClindavError
from gateway.pipeline import RequestInfo
from gateway.services import Services

EXTENSION = "clindav"


@dataclass
class Attempt:
    """The audit fields of what a request does (its refusal is recorded with them)."""

    action: str
    share: str | None = None
    path: str | None = None
    patient: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsoleState:
    """What the console app holds for every request (``app.extensions["clindav"]``)."""

    services: Services
    lock_manager: Any  # WsgiDAV's lock manager: the console respects WebDAV locks


def state() -> ConsoleState:
    found: ConsoleState = current_app.extensions[EXTENSION]
    return found


def services() -> Services:
    return state().services


def principal() -> Principal:
    """The signed-in user; only called by views that require sign-in (all but sign-in)."""
    found: Principal | None = g.get("principal")
    if found is None:
        raise RuntimeError("a console view ran without a signed-in user")
    return found


def is_admin(who: Principal) -> bool:
    return services().policy.doc.admin_group in who.groups


def may_record_consent(who: Principal) -> bool:
    """The policy's ``consent_recorders``, as for the EHR manifest."""
    return bool(who.groups & set(services().policy.doc.consent_recorders))


def request_info() -> RequestInfo:
    return RequestInfo(
        request_id=g.request_id,
        principal=g.get("principal"),
        client=request.remote_addr or "-",
        user_agent=request.headers.get("User-Agent", "")[:255],
        method=request.method,
    )


def attempt(
    action: str,
    *,
    share: str | None = None,
    path: str | None = None,
    patient: str | None = None,
    **details: Any,
) -> Attempt:
    """Say what this request does: a refusal is audited with these fields."""
    g.attempt = Attempt(action, share, path, patient, dict(details))
    return g.attempt


def current_attempt() -> Attempt:
    found: Attempt | None = g.get("attempt")
    return found or Attempt(request.method)


def audit(status: int = 200, code: str = "ok", reason: str = "", **details: Any) -> None:
    """The event of the attempt (:func:`attempt`) that just succeeded; raises if unrecorded."""
    _record(status, code, reason, details)


def audit_refusal(refusal: ClindavError) -> None:
    """The event of the attempt refused with ``refusal``; raises if it cannot be recorded."""
    _record(refusal.status, refusal.code, refusal.detail or refusal.public_message, {})


def _record(status: int, code: str, reason: str, details: dict[str, Any]) -> None:
    done = current_attempt()
    services().audit.record(
        request_info(),
        action=done.action,
        share=done.share,
        path=done.path,
        status=status,
        code=code,
        reason=reason,
        details={**done.details, **details, "console": True},
        patient_id=done.patient,
    )
