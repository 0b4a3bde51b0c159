"""Sign-in and sign-out: the same accounts and authenticator as WebDAV.

The authenticator is the gateway's own (local store or LDAP/AD): its cache,
its delay after a failure, its throttle (429 ``login-throttled``) and its
refusal to guess when the store is down (503) apply here as on WebDAV.
Both outcomes are audited as ``LOGIN`` (a failure as WebDAV's, 401
``authentication-required``); sign-out is ``LOGOUT``.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from gateway.console import nextcloud, sessions
from gateway.console.context import attempt, audit, audit_refusal, services
from gateway.console.forms import SignInForm
from gateway.errors import AuthenticationRequired, ClindavError

pages = Blueprint("auth", __name__)


def register(app: Flask) -> None:
    app.register_blueprint(pages)


@pages.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Response | tuple[str, int]:
    return _sign_in(expired=False)


@pages.route("/sign-in/expired", methods=["GET"])
def sign_in_expired() -> Response | tuple[str, int]:
    return _sign_in(expired=True)


def _sign_in(*, expired: bool) -> Response | tuple[str, int]:
    form = SignInForm()
    if g.get("principal") is not None and request.method == "GET":
        return redirect(url_for("inbox.index"), 303)
    if request.method == "GET":
        return _page(form, expired=expired, status=200)
    attempt("LOGIN")
    user = (form.user.data or "").strip()
    try:
        who = services().authenticator.login(
            user, form.password.data or "", client=request.remote_addr or "-", devices=False
        )
        if who is None:
            raise AuthenticationRequired(
                f"login failed for {user!r}",
                public="Sign-in failed: the user name or the password is wrong.",
            )
    except ClindavError as refusal:  # also 429 login-throttled and 503: the store is down
        audit_refusal(refusal)
        return _page(form, error=refusal.public_message, status=refusal.status)
    flow = nextcloud.pending_flow()  # a device's Login Flow that sent this browser here
    store: sessions.SessionStore = current_app.extensions["clindav.sessions"]
    if isinstance(session, sessions.SignedInSession):
        store.end(session.token)  # a new token at every sign-in, never the old one
    token = store.start(who, request.remote_addr or "-")
    g.principal = who
    try:
        audit(code="signed-in")
    except BaseException:
        store.end(token)  # no audit, no session
        g.principal = None
        raise
    sessions.issue(token)
    if flow is not None:
        return redirect(url_for(nextcloud.GRANT, token=flow), 303)
    return redirect(url_for("inbox.index"), 303)


def _page(
    form: SignInForm, *, status: int, error: str | None = None, expired: bool = False
) -> tuple[str, int]:
    form.password.data = ""
    return render_template("sign_in.html", form=form, error=error, expired=expired), status


@pages.route("/sign-out", methods=["POST"])
def sign_out() -> Response:
    attempt("LOGOUT")
    store: sessions.SessionStore = current_app.extensions["clindav.sessions"]
    if isinstance(session, sessions.SignedInSession):
        store.end(session.token)
        session.clear()
        session.ended = True
    audit(code="signed-out")
    return redirect(url_for("auth.sign_in"), 303)
