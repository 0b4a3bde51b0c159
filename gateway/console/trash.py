"""The trash page: what was deleted, restore it, and for admins purge it for good.

Everyone sees the items they deleted; admins see every item.  Both only
where the policy lets them read the item's path (an item in a folder the
policy hides from a user is as invisible here as on WebDAV).  The work is
:class:`~gateway.records.trash.Trash`'s, the same as ``clindav trash``:

* restore (``POST /trash/<id>/restore``): the item's own user or an admin,
  with the policy's ``write`` at every path it puts a file back to; then
  the trash's checks (the consent the share requires today: a copy whose
  teaching consent was withdrawn stays in the trash, with the message the
  command line gives);
* purge (``POST /trash/<id>/purge``, admins): keys first, then files; legal
  holds and retention refuse it.

The trash audits restores and purges itself (``RESTORE``, ``PURGE``); the
list is ``VIEW``.  A refusal is shown in the item's form.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flask import Blueprint, Flask, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from gateway.auth.base import Principal
from gateway.clock import aware
from gateway.console.access import admins, require
from gateway.console.admin_forms import PurgeForm, RestoreForm
from gateway.console.context import (
    attempt,
    audit,
    audit_refusal,
    is_admin,
    principal,
    request_info,
    services,
)
from gateway.console.forms import ActionForm
from gateway.console.layout import add_to_menu, everyone
from gateway.console.library import Readers
from gateway.db import LegalHold, TrashItem
from gateway.errors import ClindavError, PolicyDenied
from gateway.policy import Check
from gateway.records.holds import LegalHolds
from gateway.records.patientpaths import patient_of
from gateway.records.trash import (
    TRASH_PREFIX,
    Actor,
    RestoreRefused,
    TrashNotFound,
    hold_covers,
)
from gateway.storage.backing import split_path

pages = Blueprint("trash", __name__)
Page = str | tuple[str, int]


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "trash.index", "Trash", everyone)


@dataclass(frozen=True)
class TrashEntry:
    """A trashed item as the page shows it."""

    id: str
    share: str
    path: str
    is_folder: bool
    files: int
    trashed_at: dt.datetime
    trashed_by: str
    reason: str
    purge_after: dt.datetime
    retained_until: dt.datetime | None
    held: bool  # a legal hold stops its purge

    @classmethod
    def of(cls, item: TrashItem, holds: list[LegalHold]) -> TrashEntry:
        return cls(
            id=item.id,
            share=item.share,
            path=item.logical_path,
            is_folder=item.is_folder,
            files=item.files,
            trashed_at=aware(item.trashed_at),
            trashed_by=item.trashed_by,
            reason=item.reason,
            purge_after=aware(item.purge_after),
            retained_until=aware(item.retained_until) if item.retained_until else None,
            held=any(
                h.share == item.share and hold_covers(h.logical_path, item.logical_path)
                for h in holds
            ),
        )


def visible_items(who: Principal) -> list[TrashItem]:
    """Trashed items this user may see, newest first."""
    readers = Readers(services(), who)
    admin = is_admin(who)
    return [
        item
        for item in reversed(services().trash.items())
        if (admin or item.trashed_by == who.uid) and readers.may_read(item.share, item.logical_path)
    ]


def _find(item_id: str) -> TrashItem:
    found = next((i for i in visible_items(principal()) if i.id == item_id), None)
    if found is None:
        raise TrashNotFound(f"no trashed item {item_id} visible to {principal().uid}")
    return found


@pages.route("/trash", methods=["GET"])
def index() -> str:
    attempt("VIEW", page="trash")
    items = visible_items(principal())
    holds = LegalHolds(services()).list()
    audit(items=len(items))
    return render_template(
        "trash.html",
        items=[TrashEntry.of(i, holds) for i in items],
        restore=ActionForm(),
        now=services().clock.now(),
    )


@pages.route("/trash/<item_id>", methods=["GET"])
def item(item_id: str) -> str:
    attempt("VIEW", page="trash-item", trash_id=item_id)
    found = _find(item_id)
    _attempt_on(found, "VIEW", page="trash-item")
    audit()
    return _item_page(found, RestoreForm(), PurgeForm())[0]


@pages.route("/trash/<item_id>/restore", methods=["POST"])
def restore(item_id: str) -> Response | Page:
    form = RestoreForm()
    attempt("RESTORE", trash_id=item_id)
    found = _find(item_id)
    _attempt_on(found, "RESTORE")
    to = (form.to.data or "").strip() or None
    try:
        _check_write(found, to)
        path = services().trash.restore(
            found.id,
            Actor(request_info(), is_admin=is_admin(principal())),
            to=to,
            overwrite=bool(form.overwrite.data),
        )
    except ClindavError as refusal:
        if not isinstance(refusal, RestoreRefused):  # that one the trash recorded, naming the file
            audit_refusal(refusal)
        return _item_page(found, form, PurgeForm(), restore_problem=refusal)
    flash(f"Restored {found.share}:{path}.")
    return redirect(url_for("trash.index"), 303)


@pages.route("/trash/<item_id>/purge", methods=["POST"])
def purge(item_id: str) -> Response | Page:
    form = PurgeForm()
    attempt("PURGE", trash_id=item_id)
    require(admins(principal()), "purging from the trash")
    found = _find(item_id)
    _attempt_on(found, "PURGE")
    try:
        services().trash.purge(
            found.id, Actor(request_info(), is_admin=True), reason=(form.reason.data or "").strip()
        )
    except ClindavError as refusal:
        audit_refusal(refusal)
        return _item_page(found, RestoreForm(), form, purge_problem=refusal)
    flash(f"Purged {found.share}:{found.logical_path} for good.")
    return redirect(url_for("trash.index"), 303)


def _attempt_on(found: TrashItem, action: str, **details: object) -> None:
    """The attempt again, now that the item (its path and patient) is known."""
    trashed = TRASH_PREFIX + found.id + found.logical_path
    patient = patient_of(services(), found.share, found.logical_path, rows_at=[trashed])
    attempt(
        action,
        share=found.share,
        path=found.logical_path,
        patient=patient,
        trash_id=found.id,
        **details,
    )


def _check_write(found: TrashItem, to: str | None) -> None:
    """Restoring writes every file of the item back: the policy's ``write`` for each."""
    target = "/" + "/".join(split_path(to or found.logical_path))
    policy, who = services().policy, principal()
    paths = [target] + [path for path, _row in services().trash.restored_files(found, target)]
    for path in paths:
        verdict = policy.decide(who, Check(found.share, path, "PUT", "write"))
        if not verdict.allowed:
            raise PolicyDenied(f"rule {verdict.rule} denies restoring to {found.share}:{path}")


def _item_page(
    found: TrashItem,
    restore_form: RestoreForm,
    purge_form: PurgeForm,
    *,
    restore_problem: ClindavError | None = None,
    purge_problem: ClindavError | None = None,
) -> tuple[str, int]:
    problem = restore_problem or purge_problem
    page = render_template(
        "trash_item.html",
        item=TrashEntry.of(found, LegalHolds(services()).list()),
        restore_form=restore_form,
        purge_form=purge_form,
        restore_problem=restore_problem,
        purge_problem=purge_problem,
        now=services().clock.now(),
    )
    return page, problem.status if problem else 200
