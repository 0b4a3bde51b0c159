"""The users page (admins): the local user store, as ``clindav user`` manages it.

Add an account, set its groups, reset its password, disable and enable it,
with :class:`~gateway.auth.users.UserStore`'s rules and messages (user and
group names, at least one group, passwords of 12 characters or more, typed
twice).  Password hashes are never shown; a password is typed by the admin
and never echoed back.  A change reaches running gateways at the next
request (WebDAV logins and console sessions of the account are checked
against the store every time).

Each change commits with its audit event (``USER-ADD``, ``USER-GROUPS``,
``USER-PASSWORD``, ``USER-DISABLE``, ``USER-ENABLE``; the account in
``details.user``).  With ``auth.backend: ldap`` the accounts live in the
directory: the page says so and changes nothing (409 ``accounts-in-directory``).

An account's page also lists its devices (app passwords) with a Revoke button
each (gateway/console/devices.py, the admin as actor).  Directory accounts
have no page here: their devices are on the Devices page's "every account"
list, which admins see whatever the backend.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from gateway.auth.users import Audit, UserStore, check_same, policy_groups, unused_groups
from gateway.console.access import admins, require
from gateway.console.admin_forms import GroupsForm, PasswordForm, UserAddForm
from gateway.console.context import (
    attempt,
    audit,
    audit_refusal,
    current_attempt,
    principal,
    request_info,
    services,
)
from gateway.console.devices import RevokeForm
from gateway.console.forms import ActionForm, options
from gateway.console.layout import add_to_menu
from gateway.errors import ClindavError, Conflict, NotFound

pages = Blueprint("users", __name__)
Answer = Response | tuple[str, int]


class AccountsInDirectory(Conflict):
    code = "accounts-in-directory"
    message = "Accounts are managed in the directory (LDAP or Active Directory), not here."


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "users.index", "Users", admins)


def _store() -> UserStore:
    return UserStore(services().sessions)


def _local() -> bool:
    return services().settings.auth.backend == "local"


def _begin(action: str, name: str = "") -> None:
    attempt(action, **({"user": name} if name else {}))
    require(admins(principal()), "the users page")
    if not _local():
        raise AccountsInDirectory(f"auth.backend is {services().settings.auth.backend}")


@pages.route("/users", methods=["GET"])
def index() -> Answer:
    attempt("VIEW", page="users")
    require(admins(principal()), "the users page")
    audit()
    return _list_page(UserAddForm(formdata=None))


@pages.route("/users", methods=["POST"])
def add() -> Answer:
    form = UserAddForm()
    name = (form.name.data or "").strip()
    _begin("USER-ADD", name)
    groups = chosen_groups(form)
    try:
        check_same(form.password.data or "", form.again.data or "")
        _store().add(name, form.password.data or "", groups, audit_within(groups=groups))
    except ClindavError as refusal:
        audit_refusal(refusal)
        return _list_page(form, problem=refusal)
    flash(f"Added {name} ({', '.join(groups)}).")
    return redirect(url_for("users.account", name=name), 303)


@pages.route("/users/<name>", methods=["GET"])
def account(name: str) -> Answer:
    attempt("VIEW", page="user", user=name)
    require(admins(principal()), "the users page")
    if not _local():
        return _list_page(UserAddForm(formdata=None))
    found = _account(name)
    audit()
    return _account_page(found)


@pages.route("/users/<name>/groups", methods=["POST"])
def set_groups(name: str) -> Answer:
    form = GroupsForm()
    _begin("USER-GROUPS", name)
    groups = chosen_groups(form)
    try:
        _store().set_groups(name, groups, audit_within(groups=groups))
    except ClindavError as refusal:
        audit_refusal(refusal)
        return _account_page(_account(name), groups_form=form, problem=("groups", refusal))
    flash(f"Groups of {name}: {', '.join(groups)}.")
    return redirect(url_for("users.account", name=name), 303)


@pages.route("/users/<name>/password", methods=["POST"])
def set_password(name: str) -> Answer:
    form = PasswordForm()
    _begin("USER-PASSWORD", name)
    try:
        check_same(form.password.data or "", form.again.data or "")
        _store().set_password(name, form.password.data or "", audit_within())
    except ClindavError as refusal:
        audit_refusal(refusal)
        return _account_page(_account(name), problem=("password", refusal))
    flash(f"Password of {name} changed.")
    return redirect(url_for("users.account", name=name), 303)


@pages.route("/users/<name>/disable", methods=["POST"])
def disable(name: str) -> Answer:
    return _toggle(name, disabled=True)


@pages.route("/users/<name>/enable", methods=["POST"])
def enable(name: str) -> Answer:
    return _toggle(name, disabled=False)


def _toggle(name: str, *, disabled: bool) -> Answer:
    _begin("USER-DISABLE" if disabled else "USER-ENABLE", name)
    _store().set_disabled(name, disabled, audit_within())  # a refusal: the error page
    flash(f"{'Disabled' if disabled else 'Enabled'} {name}.")
    return redirect(url_for("users.account", name=name), 303)


def audit_within(**details: Any) -> Audit:
    """The event of this request's attempt, appended in the user store's own transaction
    (the change and its event commit together, or neither)."""
    done = current_attempt()

    def append(session: Session) -> None:
        chain = services().audit
        chain.lock_head(session)
        event = chain.event(
            request_info(),
            action=done.action,
            share=None,
            path=None,
            status=200,
            code="ok",
            details={**done.details, **details, "console": True},
        )
        chain.append(session, event)

    return append


def chosen_groups(form: GroupsForm) -> list[str]:
    """The ticked groups and the typed ones, in order, each once."""
    typed = re.split(r"[\s,]+", form.other_groups.data or "")
    return list(dict.fromkeys([*(form.groups.data or []), *(g for g in typed if g)]))


def _account(name: str) -> tuple[str, list[str], bool]:
    found = next((user for user in _store().list() if user[0] == name), None)
    if found is None:
        raise NotFound(f"no user {name}", public=f"No user {name!r}.")
    return found


def _choices(also: list[str] | None = None) -> list[SelectChoice]:
    """The policy's groups, then those of ``also`` it does not name (an account's own)."""
    return options(dict.fromkeys([*sorted(policy_groups(services().policy)), *(also or [])]))


def _list_page(form: UserAddForm, problem: ClindavError | None = None) -> tuple[str, int]:
    form.groups.choices = _choices()
    users = _store().list() if _local() else []
    page = render_template(
        "users.html", users=users, form=form, problem=problem, local=_local(), me=principal().uid
    )
    return page, problem.status if problem else 200


def _account_page(
    found: tuple[str, list[str], bool],
    *,
    groups_form: GroupsForm | None = None,
    problem: tuple[str, ClindavError] | None = None,
) -> tuple[str, int]:
    name, groups, disabled = found
    groups_form = groups_form or GroupsForm(formdata=None)
    groups_form.groups.choices = _choices(groups)
    if groups_form.groups.data is None:
        groups_form.groups.data = groups
    page = render_template(
        "user.html",
        name=name,
        groups=groups,
        disabled=disabled,
        groups_form=groups_form,
        password_form=PasswordForm(formdata=None),
        unused=unused_groups(services().policy, groups),
        toggle_form=ActionForm(),
        devices=services().app_passwords.list(name),
        now=services().clock.now(),
        revoke_form=RevokeForm(formdata=None, back="user"),
        problem=problem,
        me=principal().uid,
    )
    return page, problem[1].status if problem else 200
