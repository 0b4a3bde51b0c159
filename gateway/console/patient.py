"""A patient's page: their images, their consent, and the forms that change it.

The patient is named in the page's address (``/app/patients/<id>``, never in
a query string) or POSTed from the look-up form.  The id is read as
``clindav consent add`` reads it (the share's scheme: spaces and hyphens
removed, an NHS number's check digit checked), and a bad one answers with
the same message.

* Images: every stored file of the patient the user may read, in every
  share (copies in referrals and teaching too), as WebDAV lists them
  (gateway/console/library.py).
* Consent (for the policy's ``consent_recorders``): every record with its
  active scopes and its withdrawals; the consent form (every field of
  ``consent add``, validated by ``ConsentService``, which also releases the
  patient's held images); withdrawal of scopes (``ConsentService.withdraw``,
  which sends copies the withdrawn scope no longer covers to the trash).

A refused form is shown again with the service's message and changes
nothing; the refusal is audited (``CONSENT-ADD`` or ``CONSENT-WITHDRAW``),
as the service audits a success.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gateway.auth.base import Principal
from gateway.console.context import (
    attempt,
    audit,
    audit_refusal,
    may_record_consent,
    principal,
    request_info,
    services,
)
from gateway.console.forms import ConsentForm, PatientForm, WithdrawForm
from gateway.console.layout import add_to_menu, everyone
from gateway.console.library import held_count, patient_images, patient_scheme
from gateway.errors import ClindavError, Forbidden
from gateway.records.consent import (
    ConsentNotFound,
    ConsentService,
    ConsentView,
    InvalidConsent,
    NewConsent,
    end_of_validity,
)
from gateway.records.consent_terms import parse_day

pages = Blueprint("patient", __name__)
Page = tuple[str, int]


class ConsentRecordersOnly(Forbidden):
    code = "consent-recorders-only"
    message = "Only the groups the policy names as consent recorders may see or change consent."


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "patient.lookup", "Patients", everyone)


@pages.route("/patients", methods=["GET", "POST"])
def lookup() -> Response | Page:
    form = PatientForm()
    attempt("VIEW", page="patient-lookup")
    if request.method == "GET":
        audit()
        return render_template("lookup.html", form=form), 200
    try:
        patient = patient_scheme(services()).normalise(form.patient.data or "")
    except ClindavError as refusal:
        audit_refusal(refusal)
        return render_template("lookup.html", form=form, error=refusal.public_message), 422
    return redirect(url_for("patient.show", patient=patient), 303)


@pages.route("/patients/<patient>", methods=["GET"])
def show(patient: str) -> Page:
    attempt("VIEW", page="patient")
    patient = patient_scheme(services()).check(patient)
    attempt("VIEW", patient=patient, page="patient")
    return _patient_page(patient, status=200)


def _patient_page(patient: str, *, status: int, errors: dict[int, str] | None = None) -> Page:
    """The page; its view is audited (``VIEW``) with what it showed."""
    who = principal()
    images = patient_images(services(), who, patient)
    records: list[ConsentView] = []
    if may_record_consent(who):
        records = list(reversed(ConsentService(services()).all(patient)))
    if status < 400:
        audit(images=len(images), consent_records=len(records))
    page = render_template(
        "patient.html",
        patient=patient,
        images=images,
        records=records,
        may_record=may_record_consent(who),
        withdraw_forms={r.record.id: WithdrawForm(prefix=f"w{r.record.id}") for r in records},
        errors=errors or {},
        now=services().clock.now(),
    )
    return page, status


@pages.route("/patients/<patient>/consent", methods=["GET", "POST"])
def consent(patient: str) -> Response | Page:
    patient = patient_scheme(services()).check(patient)
    who = principal()
    form = ConsentForm()
    if request.method == "GET":
        attempt("VIEW", patient=patient, page="consent-form")
        require_consent_recorder(who)
        form.patient.data, form.recorded_by.data = patient, who.uid
        form.back.data = "inbox" if request.args.get("back") == "inbox" else ""
        audit()
        return render_template("consent_form.html", form=form, patient=patient), 200
    attempt("CONSENT-ADD", patient=patient)
    require_consent_recorder(who)
    try:
        recorded, released = _record(form)
    except ClindavError as refusal:
        if refusal.status >= 500:
            raise
        audit_refusal(refusal)
        page = render_template(
            "consent_form.html", form=form, patient=patient, error=refusal.public_message
        )
        return page, refusal.status
    flash(
        f"Consent #{recorded.record.id} recorded; "
        f"{released} held image{'' if released == 1 else 's'} released."
    )
    if form.back.data == "inbox":
        return redirect(url_for("inbox.index"), 303)
    return redirect(url_for("patient.show", patient=recorded.record.patient_id), 303)


def require_consent_recorder(who: Principal) -> None:
    """The consent pages' and the upload links' rule: the policy's consent recorders only."""
    if not may_record_consent(who):
        raise ConsentRecordersOnly(f"{who.uid} is not in the policy's consent_recorders")


def _record(form: ConsentForm) -> tuple[ConsentView, int]:
    """``ConsentService.add`` with the form's fields; the record and how many images it released."""
    scheme = patient_scheme(services())
    patient = scheme.normalise(form.patient.data or "")  # the CLI's message for a bad id
    consent = NewConsent(
        patient_id=patient,
        scopes=tuple(dict.fromkeys(form.scope.data or [])),
        given_by=form.given_by.data or "",
        method=form.method.data or "",
        recorded_by=form.recorded_by.data or "",
        given_by_name=(form.given_by_name.data or "").strip() or None,
        form_reference=(form.form.data or "").strip() or None,
        intimate=bool(form.intimate.data),
        date_of_birth=_day(form.dob.data, "date of birth"),
        valid_until=end_of_validity(_day(form.valid_until.data, "valid until")),
        source="console",
        note=form.note.data or "",
    )
    before = held_count(services(), patient)
    recorded = ConsentService(services()).add(consent, scheme, request_info())
    return recorded, before - held_count(services(), patient)


def _day(text: str | None, field: str) -> dt.date | None:
    if not text:
        return None
    try:
        return parse_day(text)
    except ValueError as exc:
        raise InvalidConsent(
            f"{field}: {exc}", public=f"Invalid consent: {field}: {exc}."
        ) from None


@pages.route("/patients/<patient>/consent/<int:consent_id>/withdraw", methods=["POST"])
def withdraw(patient: str, consent_id: int) -> Response | Page:
    patient = patient_scheme(services()).check(patient)
    attempt("CONSENT-WITHDRAW", patient=patient, consent_id=consent_id)
    require_consent_recorder(principal())
    service = ConsentService(services())
    if service.get(consent_id).record.patient_id != patient:
        raise ConsentNotFound(f"consent {consent_id} is not patient {patient}'s")
    form = WithdrawForm(prefix=f"w{consent_id}")
    scopes = form.scope.data or []
    try:
        retracted = service.withdraw(
            consent_id, scopes, principal().uid, request_info(), note=form.note.data or ""
        )
    except ClindavError as refusal:
        if refusal.status >= 500:
            raise
        audit_refusal(refusal)
        return _patient_page(
            patient, status=refusal.status, errors={consent_id: refusal.public_message}
        )
    flash(
        f"Withdrew {', '.join(scopes)} from consent #{consent_id}; "
        f"{len(retracted)} cop{'y' if len(retracted) == 1 else 'ies'} sent to the trash."
    )
    return redirect(url_for("patient.show", patient=patient), 303)
