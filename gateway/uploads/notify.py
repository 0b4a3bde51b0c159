"""Sending an upload link by SMS and e-mail through GOV.UK Notify's official client.

One call per channel the request has an address for.  The outcome of each
(sent, with Notify's notification id, or the failure in words a clinician can
act on) is returned, stored on the request and shown by the CLI and the
console; a failure never undoes the request, whose link can still be given by
hand.  ``uploads.notify.base_url`` points the client elsewhere (tests run a
local server that answers as the Notify API does).

Personalisation of both templates: ``practice``, ``link``, ``note`` and
``expires`` (docs/PATIENT-UPLOADS.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from notifications_python_client.errors import APIError
from notifications_python_client.notifications import NotificationsAPIClient

from gateway.db import UploadRequest
from gateway.patients import PatientScheme
from gateway.pipeline import RequestInfo
from gateway.records.upload_requests import NewUploadRequest, UploadRequestService
from gateway.services import Services
from gateway.settings import UploadSettings, unreachable_host
from gateway.uploads.paths import link_url

log = logging.getLogger("clindav.notify")
TIMEOUT = 15


@dataclass(frozen=True)
class Issued:
    """A new request, its link (shown once: only the token's hash is kept) and the deliveries."""

    row: UploadRequest
    link: str
    deliveries: dict[str, dict[str, Any]]
    unreachable: str | None  # why a patient's phone cannot open the link, if it cannot


def create_and_send(
    services: Services,
    new: NewUploadRequest,
    scheme: PatientScheme,
    request: RequestInfo,
    base: str,
) -> Issued:
    """Create the request (CLI and console alike), then send its link to each address given."""
    service = UploadRequestService(services)
    created = service.create(new, scheme, request)
    link = link_url(base, created.token)
    deliveries = send_link(services.settings.uploads, created.row, link)
    if deliveries:
        service.record_deliveries(created.row.id, deliveries)
    return Issued(created.row, link, deliveries, unreachable_reason(link))


def unreachable_reason(link: str) -> str | None:
    """Why no patient's phone can open ``link``: without ``uploads.public_url`` its host is
    the gateway's loopback address (the console opened on the gateway host itself) or, from
    `clindav request create`, a listening address such as 0.0.0.0."""
    why = unreachable_host(link)
    return None if why is None else f"the link's address is {why}: {_SET_PUBLIC_URL}"


_SET_PUBLIC_URL = (
    "a patient's phone cannot open it. Set uploads.public_url to the address patients reach "
    "(docs/DEPLOY.md)."
)


def personalisation(settings: UploadSettings, row: UploadRequest, link: str) -> dict[str, str]:
    return {
        "practice": settings.practice_name,
        "link": link,
        "note": row.note or "-",
        "expires": f"{row.expires_at:%d %B %Y}",
    }


def send_link(settings: UploadSettings, row: UploadRequest, link: str) -> dict[str, dict[str, Any]]:
    """Each channel's outcome: ``{"sms": {"ok": True, "id": ...}, "email": {...}}``."""
    notify = settings.notify
    fields = personalisation(settings, row, link)
    outcomes: dict[str, dict[str, Any]] = {}
    for channel, address, template in (
        ("sms", row.mobile, notify.sms_template),
        ("email", row.email, notify.email_template),
    ):
        if address:
            outcomes[channel] = _send(settings, channel, address, template, fields)
    return outcomes


def _send(
    settings: UploadSettings,
    channel: str,
    address: str,
    template: str | None,
    fields: dict[str, str],
) -> dict[str, Any]:
    notify = settings.notify
    if not notify.api_key or not template:
        missing = "uploads.notify.api_key" if not notify.api_key else f"the {channel} template"
        return {"ok": False, "message": f"not sent: {missing} is not configured"}
    try:
        client = NotificationsAPIClient(notify.api_key, base_url=notify.base_url, timeout=TIMEOUT)
        if channel == "sms":
            answer = client.send_sms_notification(address, template, personalisation=fields)
        else:
            answer = client.send_email_notification(address, template, personalisation=fields)
    except APIError as exc:
        log.warning("notify %s failed: %s", channel, exc)
        return {"ok": False, "message": f"not sent: GOV.UK Notify answered {_reason(exc)}"}
    except (requests.RequestException, AssertionError, ValueError) as exc:
        # AssertionError/ValueError: the client's own checks of a malformed key.
        log.warning("notify %s failed: %s", channel, exc)
        return {"ok": False, "message": f"not sent: {type(exc).__name__} reaching GOV.UK Notify"}
    return {"ok": True, "id": str(answer.get("id", "")), "message": "sent"}


def _reason(exc: APIError) -> str:
    """Notify's own words: ``400 ValidationError: phone_number Not a UK mobile number``."""
    message = exc.message
    if isinstance(message, list):
        text = "; ".join(f"{m.get('error', '')}: {m.get('message', '')}" for m in message)
    else:
        text = str(message)
    return f"{exc.status_code} {text}"[:300]
