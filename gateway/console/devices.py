"""The Devices page: a user's app passwords (docs/NEXTCLOUD-APPS.md), for every signed-in user.

* ``/app/devices``: the user's devices (name, connected, last used) with a Revoke button
  each, and *Connect a phone*; admins also see every account's devices, local
  and directory (LDAP) accounts alike, which no user list covers.
* *Connect a phone* issues an app password of the signed-in user for the named
  device (the rules and messages of ``clindav user app-password``) and shows
  it once: as the Nextcloud apps' QR login, drawn inline, and as text to type.
  A user name the QR cannot carry is refused before anything is issued
  (gateway/nextcloud/devices.py), and so is every phone while the apps'
  door is off (``nextcloud.enabled: false``): the page says so instead.
* Revoke (``/app/devices/<id>/revoke``): the owner or an admin (the user page
  of an account, gateway/console/users.py, lists its devices with the same
  button); anyone else is refused 403, audited.

Issuing and revoking go through gateway/nextcloud/devices.py as the command
line's do: one ``APP-PASSWORD`` event each, committed with the change, the
signed-in user as actor and the account in ``details.uid``.
"""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import HiddenField, StringField

from gateway.auth.apppasswords import MAX_LABEL
from gateway.console.access import require
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
from gateway.console.qr import qr_svg
from gateway.errors import ClindavError
from gateway.nextcloud import devices
from gateway.settings import unreachable_host

pages = Blueprint("devices", __name__)
Page = tuple[str, int]


class ConnectForm(FlaskForm):
    device = StringField("Device name", render_kw={"autocomplete": "off", "maxlength": MAX_LABEL})


class RevokeForm(ActionForm):
    """Where to return: the Devices page, or (``user``) the account's user page."""

    back = HiddenField()


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "devices.index", "Devices", everyone)


@pages.route("/devices", methods=["GET"])
def index() -> Page:
    attempt("VIEW", page="devices")
    return _page(ConnectForm(formdata=None))


@pages.route("/devices", methods=["POST"])
def connect() -> Page:
    who = principal()
    form = ConnectForm()
    device = form.device.data or ""
    attempt("APP-PASSWORD", change="issued", uid=who.uid, device=device[:MAX_LABEL])
    try:
        devices.require_door_open(services())
        devices.require_qr_safe(who.uid)
        secret = devices.issue(services(), request_info(), who.uid, device, console=True)
    except ClindavError as refusal:
        if refusal.status >= 500:
            raise
        audit_refusal(refusal)
        return _page(form, refusal)
    server = devices.server_address(request.environ)
    page = render_template(
        "device_connected.html",
        unreachable=_unreachable(),
        device=device.strip(),
        server=server,
        password=secret,
        qr=qr_svg(devices.login_link(who.uid, secret, server), "Nextcloud login"),
    )
    return page, 201


@pages.route("/devices/<int:ident>/revoke", methods=["POST"])
def revoke(ident: int) -> Response:
    who = principal()
    form = RevokeForm()
    doing = attempt("APP-PASSWORD", change="revoked", id=ident)
    found = services().app_passwords.get(ident)
    doing.details["uid"] = found.uid
    require(found.uid == who.uid or is_admin(who), "another user's devices")
    devices.revoke(services(), request_info(), found.uid, ident, console=True)
    flash(f"Revoked {found.label} ({found.uid}): it is signed out at its next request.")
    if form.back.data == "user" and is_admin(who):
        return redirect(url_for("users.account", name=found.uid), 303)
    return redirect(url_for("devices.index"), 303)


def _unreachable() -> str | None:
    """Why a phone cannot reach the server address this page gives, if it cannot: the
    console opened on the gateway host itself (the QR carries the address it was opened at)."""
    why = unreachable_host(devices.server_address(request.environ))
    if why is None:
        return None
    return (
        f"The server address is {why}: a phone cannot reach it. Open the console under the "
        "name the phones use (the practice's name for clindav), then connect the phone."
    )


def _page(form: ConnectForm, problem: ClindavError | None = None) -> Page:
    who = principal()
    mine = services().app_passwords.list(who.uid)
    every = services().app_passwords.list_all() if is_admin(who) else None
    if problem is None:
        audit(devices=len(mine))
    page = render_template(
        "devices.html",
        unreachable=_unreachable(),
        mine=mine,
        every=every,
        form=form,
        revoke_form=RevokeForm(formdata=None),
        problem=problem,
        door_open=services().settings.nextcloud.enabled,
        now=services().clock.now(),
    )
    return page, problem.status if problem else 200
