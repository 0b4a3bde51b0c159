"""The audit pages (auditors and admins): search, the per-patient access report, and
the chain's verification.

Who: the policy's ``auditor_group`` and ``admin_group`` (gateway/console/access.py);
anyone else gets 403 ``page-not-allowed``, by the menu or by typing the address.

Search terms never travel in a URL: a search is a POSTed form whose answer is
the results page, and its pages (older, newer) are buttons of the same form,
so a patient id reaches neither a proxy's access log nor the browser's
history of addresses.  The reading is gateway/records/audit_search.py, the
same as ``clindav audit report``; verification is ``clindav audit verify``'s
(:func:`~gateway.records.audit.verify_chain`, with the gateway's chain key).

Each search is audited as ``AUDIT-SEARCH`` (its terms in ``details``, a
patient id in the event's patient column), each report as ``AUDIT-REPORT``
for its patient, so reading a patient's history is itself in that history;
a verification is ``AUDIT-VERIFY`` (``chain-intact`` or ``chain-broken``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Flask, render_template, request

from gateway.console.access import auditors, require
from gateway.console.admin_forms import AuditSearchForm, ReportForm
from gateway.console.context import attempt, audit, audit_refusal, principal, services
from gateway.console.layout import add_to_menu
from gateway.errors import ClindavError
from gateway.records.audit import outcome_class, verify_chain
from gateway.records.audit_search import (
    AuditQuery,
    InvalidSearch,
    Page,
    activity,
    as_row,
    day_start,
    normalise_patient,
    patient_report,
    search,
    where,
)
from gateway.records.holds import split_share_path

pages = Blueprint("audit", __name__)
# Problems a broken chain lists on the page (the command line lists them all).
SHOWN_PROBLEMS = 20


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "audit.index", "Audit", auditors)


@pages.route("/audit", methods=["GET", "POST"])
def index() -> tuple[str, int]:
    form = AuditSearchForm(formdata=request.form if request.method == "POST" else None)
    attempt("AUDIT-SEARCH")
    require(auditors(principal()), "the audit pages")
    try:
        query = _query(form)
        attempt("AUDIT-SEARCH", patient=_patient(query.patient), **_terms(query))
        page = search(services().sessions, query, before=_seq("before"), after=_seq("after"))
    except ClindavError as refusal:
        audit_refusal(refusal)
        return _search_page(form, None, problem=refusal), refusal.status
    audit(events=len(page.events))
    return _search_page(form, page), 200


@pages.route("/audit/verify", methods=["POST"])
def verify() -> tuple[str, int]:
    attempt("AUDIT-VERIFY")
    require(auditors(principal()), "the audit pages")
    chain = services().audit
    problems = verify_chain(chain, services().sessions)
    seq, mac = chain.head()
    result = {"intact": not problems, "events": seq, "head": mac, "problems": problems}
    audit(code="chain-broken" if problems else "chain-intact", events=seq, problems=len(problems))
    shown = problems[:SHOWN_PROBLEMS]
    page = _search_page(AuditSearchForm(formdata=None), None, verified=result, shown=shown)
    return page, 200


@pages.route("/audit/patient", methods=["GET", "POST"])
def patient() -> tuple[str, int]:
    form = ReportForm(formdata=request.form if request.method == "POST" else None)
    if request.method == "GET":  # the empty form
        attempt("VIEW", page="audit-patient")
        require(auditors(principal()), "the audit pages")
        audit()
        return render_template("audit_patient.html", form=form, report=None), 200
    attempt("AUDIT-REPORT")
    require(auditors(principal()), "the audit pages")
    text = (form.patient.data or "").strip()
    try:
        if not text:
            raise InvalidSearch("no patient id", public="Give the patient id to report on.")
        since = day_start(form.since.data or "")
        until = day_start(form.until.data or "", after=True)
        terms = _terms(AuditQuery(since=since, until=until))  # a search's checks of the range
        attempt("AUDIT-REPORT", patient=normalise_patient(text), **terms)
        report = patient_report(services().sessions, text, since, until)
    except ClindavError as refusal:
        audit_refusal(refusal)
        page = render_template("audit_patient.html", form=form, report=None, problem=refusal)
        return page, refusal.status
    audit(events=len(report.events))
    rows = shown_rows(report.events)
    return render_template("audit_patient.html", form=form, report=report, rows=rows), 200


@pages.app_template_filter("when")
def when(iso: str, since: str | None = None) -> str:
    """``6 Dec 2026 22:40`` from an event's ISO time (UTC); only the time when ``since``
    (the start of a span) is the same day."""
    moment = dt.datetime.fromisoformat(iso)
    if since is not None and dt.datetime.fromisoformat(since).date() == moment.date():
        return moment.strftime("%H:%M")
    return f"{moment.day} {moment.strftime('%b %Y %H:%M')}"


def _query(form: AuditSearchForm) -> AuditQuery:
    """The form's terms; a path is written share first, as on the command line."""
    share, path = "", ""
    typed = (form.path.data or "").strip()
    if typed:
        share, path = split_share_path(services(), typed)
    return AuditQuery(
        user=(form.user.data or "").strip(),
        patient=(form.patient.data or "").strip(),
        share=share,
        path="" if path == "/" else path,
        since=day_start(form.since.data or ""),
        until=day_start(form.until.data or "", after=True),
        outcome=form.outcome.data or "",
        status=(form.status.data or "").strip(),
    )


def _patient(typed: str) -> str | None:
    return normalise_patient(typed) if typed else None


def _terms(query: AuditQuery) -> dict[str, Any]:
    """The search terms for the event's details (the patient has its own column)."""
    terms = {
        "user": query.user,
        "share": query.share,
        "path": query.path,
        "since": query.since.isoformat() if query.since else "",
        "until": query.until.isoformat() if query.until else "",
        "outcome": query.outcome,
        "status": query.status,
    }
    return {"terms": {key: value for key, value in terms.items() if value}}


def _seq(name: str) -> int | None:
    value = request.form.get(name, "")
    if not value:
        return None
    if not value.isdigit():
        raise InvalidSearch(f"{name}={value!r}", public="That page of results does not exist.")
    return int(value)


def shown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of :func:`as_row` with their activity, as the event tables show them."""
    return [
        row | {"where": where(row), "outcome": outcome_class(row["status"], row["code"])}
        for row in rows
    ]


def _search_page(
    form: AuditSearchForm,
    page: Page | None,
    *,
    problem: ClindavError | None = None,
    verified: dict[str, Any] | None = None,
    shown: list[Any] | None = None,
) -> str:
    events = page.events if page else []
    rows = shown_rows([as_row(event) | {"activity": activity(event)} for event in events])
    seq, _mac = services().audit.head()
    return render_template(
        "audit.html",
        form=form,
        page=page,
        rows=rows,
        problem=problem,
        head=seq,
        verified=verified,
        shown=shown or [],
        searched=request.method == "POST",
    )
