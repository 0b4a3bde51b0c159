"""Upload links in the console: ask a patient for photos, see what came back.

* ``/app/requests``: the form of ``clindav request create`` (the same
  service, the same messages) and the user's requests (admins: all), with
  their state and what Notify did; a request still open can be cancelled.
* After creating: the link, once (only its hash is kept), as text and as a
  QR code drawn inline as SVG (nothing loaded from elsewhere), and each
  delivery's outcome, failures in words.
* The inbox's *Patient submissions* (:func:`recent_submissions`): what
  patients sent through this user's links in the last 30 days, the stored
  photos as tiles (only those the policy lets the user read: intimate ones
  only for the intimate group) and the refused ones with the reason.

Who may: the policy's ``consent_recorders`` (the link ends in a consent
record), and only for a folder the user may write: the policy is asked for
``write`` at ``/<patient>/[intimate/]<uploads.folder>/`` of ``uploads.share``
as for a WebDAV PUT there, so an intimate request needs the intimate group.
Every view and action is audited (``VIEW``, ``UPLOAD-REQUEST``,
``UPLOAD-CANCEL``), refusals included.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import BooleanField, IntegerField, StringField, TextAreaField
from wtforms.widgets import DateInput

from gateway.auth.base import Principal
from gateway.console.context import (
    attempt,
    audit,
    audit_refusal,
    is_admin,
    may_record_consent,
    principal,
    request_info,
    services,
)
from gateway.console.forms import ActionForm
from gateway.console.layout import add_to_menu
from gateway.console.library import ImageEntry, patient_images, patient_scheme
from gateway.console.patient import ConsentRecordersOnly, require_consent_recorder
from gateway.console.qr import qr_svg
from gateway.db import UploadRequest
from gateway.errors import ClindavError, PolicyDenied
from gateway.policy import Check
from gateway.records.consent_terms import parse_day
from gateway.records.upload_requests import (
    InvalidUploadRequest,
    NewUploadRequest,
    UploadRequestService,
)
from gateway.uploads.notify import create_and_send

pages = Blueprint("requests", __name__)
Page = tuple[str, int]
RECENT = dt.timedelta(days=30)


class RequestForm(FlaskForm):
    """Every option of ``clindav request create``."""

    patient = StringField("Patient", render_kw={"autocomplete": "off", "spellcheck": "false"})
    dob = StringField("Date of birth", widget=DateInput())
    mobile = StringField("Mobile (the link is sent by SMS)", render_kw={"inputmode": "tel"})
    email = StringField("E-mail (the link is sent by e-mail)", render_kw={"inputmode": "email"})
    note = TextAreaField("Note the patient reads (what to photograph)")
    max_files = IntegerField("Most photos", render_kw={"min": 1})
    expires = IntegerField("Days the link works", render_kw={"min": 1, "max": 90})
    intimate = BooleanField("Intimate images are asked for (intimate folder, intimate group only)")


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "requests.index", "Upload links", may_record_consent)


@pages.route("/requests", methods=["GET", "POST"])
def index() -> Response | Page:
    who = principal()
    form = RequestForm()
    if request.method == "GET":
        attempt("VIEW", page="upload-requests")
        require_consent_recorder(who)
        form.max_files.data = services().settings.uploads.max_files
        form.expires.data = services().settings.uploads.expiry_days
        return _list_page(form, 200)
    attempt("UPLOAD-REQUEST")
    require_consent_recorder(who)
    try:
        new = _new_request(form, who)
        _require_writable(who, new)
        base = services().settings.uploads.public_url or request.host_url
        issued = create_and_send(services(), new, patient_scheme(services()), request_info(), base)
    except ClindavError as refusal:
        if refusal.status >= 500:
            raise
        audit_refusal(refusal)
        return _list_page(form, refusal.status, error=refusal.public_message, audited=True)
    qr = qr_svg(issued.link, "Upload link")
    page = render_template(
        "upload_request_created.html",
        row=issued.row,
        link=issued.link,
        unreachable=issued.unreachable,
        qr=qr,
        deliveries=issued.deliveries,
    )
    return page, 201


def _list_page(form: RequestForm, status: int, error: str = "", audited: bool = False) -> Page:
    who = principal()
    rows = UploadRequestService(services()).all(None if is_admin(who) else who.uid)
    if not audited:
        audit(requests=len(rows))
    page = render_template(
        "upload_requests.html",
        form=form,
        rows=rows,
        error=error,
        cancel_form=ActionForm(),
        now=services().clock.now(),
    )
    return page, status


def _new_request(form: RequestForm, who: Principal) -> NewUploadRequest:
    try:
        dob = parse_day(form.dob.data or "")
    except ValueError as exc:
        raise InvalidUploadRequest(
            f"dob: {exc}", public=f"Invalid upload request: dob: {exc}."
        ) from None
    patient = patient_scheme(services()).normalise(form.patient.data or "")
    attempt("UPLOAD-REQUEST", patient=patient)
    return NewUploadRequest(
        patient_id=patient,
        date_of_birth=dob,
        created_by=who.uid,
        mobile=form.mobile.data,
        email=form.email.data,
        note=form.note.data or "",
        max_files=form.max_files.data,
        expires_days=form.expires.data,
        intimate=bool(form.intimate.data),
    )


def _require_writable(who: Principal, new: NewUploadRequest) -> None:
    """The user may write where the photos will go, as a WebDAV PUT there would be judged."""
    settings = services().settings.uploads
    intimate = "/intimate" if new.intimate else ""
    folder = f"/{new.patient_id}{intimate}/{settings.folder}/"
    decision = services().policy.decide(who, Check(settings.share, folder, "PUT", "write"))
    if not decision.allowed:
        raise PolicyDenied(
            f"rule {decision.rule} denies {settings.share}:{folder}",
            public="You may not store images where these photos would go"
            + (" (intimate images: the intimate group only)." if new.intimate else "."),
        )


@pages.route("/requests/<int:request_id>/cancel", methods=["POST"])
def cancel(request_id: int) -> Response:
    who = principal()
    attempt("UPLOAD-CANCEL", request=request_id)
    require_consent_recorder(who)
    service = UploadRequestService(services())
    row = service.get(request_id)
    if row.created_by != who.uid and not is_admin(who):
        raise ConsentRecordersOnly(f"request {request_id} is {row.created_by}'s")
    service.cancel(request_id, request_info())
    flash(f"Upload link #{request_id} cancelled: it no longer works.")
    return redirect(url_for("requests.index"), 303)


@dataclass(frozen=True)
class Submission:
    """What one link brought in, as the inbox shows it."""

    row: UploadRequest
    images: list[ImageEntry]
    refused: list[dict[str, Any]]


def recent_submissions(who: Principal) -> list[Submission]:
    """Submissions through this user's links in the last 30 days, newest first."""
    since = services().clock.now() - RECENT
    found = []
    for row in UploadRequestService(services()).submitted(who.uid, since):
        stored = {r["path"] for r in row.results if r.get("outcome") == "stored"}
        images = [i for i in patient_images(services(), who, row.patient_id) if i.path in stored]
        refused = [r for r in row.results if r.get("outcome") != "stored"]
        found.append(Submission(row, images, refused))
    return found
