"""The legal holds page (admins): list, place and release holds.

The holds are :class:`~gateway.records.holds.LegalHolds`, the same as
``clindav hold add|remove|list``: a hold needs a path that exists (in the
share or its trash) and a reason, and what it stops (deletion, purge, moves
out of it) is the trash's to enforce.  Placing and releasing are audited by
the service (``HOLD``, ``RELEASE``, with the patient of a patient folder);
a refusal is shown in its form and audited here.
"""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from gateway.console.access import admins, require
from gateway.console.admin_forms import HoldForm, ReleaseForm
from gateway.console.context import attempt, audit, audit_refusal, principal, request_info, services
from gateway.console.layout import add_to_menu
from gateway.errors import ClindavError
from gateway.records.holds import LegalHolds, split_share_path
from gateway.records.patientpaths import folder_patient

pages = Blueprint("holds", __name__)


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "holds.index", "Holds", admins)


def url_path(share: str, path: str) -> str:
    """``/clinical/9434765919`` for the share's URL and a path in it (as the CLI writes it)."""
    root = services().shares[share].url if share in services().shares else "/" + share
    return root + ("" if path == "/" else path)


@pages.route("/holds", methods=["GET"])
def index() -> tuple[str, int]:
    attempt("VIEW", page="holds")
    require(admins(principal()), "the legal holds page")
    page = _page(HoldForm())
    audit(holds=page[2])
    return page[0], page[1]


@pages.route("/holds", methods=["POST"])
def add() -> Response | tuple[str, int]:
    form = HoldForm()
    target = (form.path.data or "").strip()
    _attempt_on("HOLD", target)
    require(admins(principal()), "the legal holds page")
    try:
        LegalHolds(services()).add(request_info(), target, form.reason.data or "")
    except ClindavError as refusal:
        audit_refusal(refusal)
        return _page(form, add_problem=refusal)[:2]
    flash(f"{target} is under a legal hold.")
    return redirect(url_for("holds.index"), 303)


@pages.route("/holds/release", methods=["POST"])
def release() -> Response | tuple[str, int]:
    form = ReleaseForm()
    target = (form.path.data or "").strip()
    _attempt_on("RELEASE", target)
    require(admins(principal()), "the legal holds page")
    try:
        LegalHolds(services()).remove(request_info(), target, form.reason.data or "")
    except ClindavError as refusal:
        audit_refusal(refusal)
        return _page(HoldForm(formdata=None), release_problem=(target, refusal))[:2]
    flash(f"Released the hold on {target}.")
    return redirect(url_for("holds.index"), 303)


def _attempt_on(action: str, target: str) -> None:
    """What the request does; once the path names a share, with its patient too."""
    attempt(action, target=target)
    try:
        share, path = split_share_path(services(), target)
    except ClindavError:
        return  # the service refuses it with the reason
    patient = folder_patient(services().policy, share, path)
    attempt(action, share=share, path=path, patient=patient)


def _page(
    form: HoldForm,
    *,
    add_problem: ClindavError | None = None,
    release_problem: tuple[str, ClindavError] | None = None,
) -> tuple[str, int, int]:
    """The page, its status and the number of holds it lists."""
    holds = [
        (url_path(hold.share, hold.logical_path), hold) for hold in LegalHolds(services()).list()
    ]
    problem = add_problem or (release_problem[1] if release_problem else None)
    page = render_template(
        "holds.html",
        holds=holds,
        form=form,
        release_form=ReleaseForm(formdata=None),
        add_problem=add_problem,
        release_problem=release_problem,
    )
    return page, problem.status if problem else 200, len(holds)
