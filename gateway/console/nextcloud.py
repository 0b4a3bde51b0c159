"""The browser part of Login Flow v2: a signed-in user lets a Nextcloud app in.

A device that starts Login Flow v2 (gateway/nextcloud/loginflow.py) opens
``/app/nextcloud/login/<token>`` in a browser.  A user who is not signed in
signs in first (the console's own sign-in, same authenticator) and comes
back here.  The page names the device; granting makes an app password of the
signed-in user for it (gateway/nextcloud/devices.py, as every door makes
one), committed with its ``APP-PASSWORD`` event, which the
device then collects by polling.  A refused grant (unknown or expired flow)
is the error page, audited.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, render_template, session
from werkzeug.wrappers import Response

from gateway.console.context import attempt, audit, principal, request_info, services
from gateway.console.forms import ActionForm
from gateway.console.sessions import SignedInSession
from gateway.nextcloud import devices
from gateway.nextcloud.loginflow import LoginFlows

pages = Blueprint("nextcloud", __name__)
GRANT = "nextcloud.grant"
# The flow a browser came for before it signed in (kept in the pre-sign-in cookie).
_PENDING = "nextcloud_login"


def register(app: Flask) -> None:
    app.register_blueprint(pages)


def remember_flow(endpoint: str | None, view_args: dict[str, Any] | None) -> None:
    """Before sending a browser to sign in: the flow it came for, to return to."""
    if endpoint == GRANT and view_args and not isinstance(session, SignedInSession):
        session[_PENDING] = str(view_args.get("token", ""))[:128]


def pending_flow() -> str | None:
    """The flow to return to after sign-in, once."""
    token = session.pop(_PENDING, None)
    return token if isinstance(token, str) and token else None


@pages.route("/nextcloud/login/<token>", methods=["GET"])
def grant(token: str) -> tuple[str, int]:
    attempt("VIEW", page="nextcloud-login")
    device = LoginFlows(services()).pending_client(token)
    audit(device=device)
    return render_template("nextcloud_grant.html", device=device, form=ActionForm()), 200


@pages.route("/nextcloud/login/<token>", methods=["POST"])
def granted(token: str) -> Response | tuple[str, int]:
    attempt("APP-PASSWORD", change="issued")
    who = principal()
    flows = LoginFlows(services())
    device = flows.pending_client(token)
    secret = devices.issue(services(), request_info(), who.uid, device, console=True)
    flows.grant(token, who.uid, secret)
    return render_template("nextcloud_granted.html", device=device), 200
