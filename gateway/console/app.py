"""The console's Flask app: configuration, the sign-in gate, errors, the layout.

Every request, in order: a request id (sent back as ``X-Request-Id``, as
WebDAV does); the session (gateway/console/sessions.py); the sign-in gate
(every page but sign-in needs a signed-in user); Flask-WTF's CSRF check of
every POST; the view.  Every answer gets ``Cache-Control: no-store`` (pages
and images name patients; only the stylesheet may be kept) and, from the path
guard, the security headers (gateway/console/headers.py).

Errors: a clindav error answers its status with the error page (its public
message, code and request id); a database failure is 503
``database-unavailable``; anything else 500 with no detail.  Each is audited
with what the request attempted (gateway/console/context.py); a refusal that
cannot be recorded answers 503 instead, as on WebDAV.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, InternalServerError

from gateway.console import (
    audit_trail,
    auth,
    devices,
    holds,
    images,
    inbox,
    nextcloud,
    patient,
    sessions,
    trash,
    upload_requests,
    users,
)
from gateway.console.context import EXTENSION, ConsoleState, audit_refusal
from gateway.console.layout import age, layout
from gateway.errors import (
    BadRequest,
    ClindavError,
    DatabaseUnavailable,
    NotFound,
    PayloadTooLarge,
    from_os_error,
)
from gateway.records.audit import recorded_answer
from gateway.server.responses import request_id
from gateway.services import Services

log = logging.getLogger("clindav.console")
ErrorPage = tuple[str, int, dict[str, str]]
# Endpoints a browser may reach before signing in.
_OPEN = frozenset({"auth.sign_in", "auth.sign_in_expired", "static"})


class FormTokenInvalid(BadRequest):
    code = "form-token-invalid"
    message = (
        "The form had expired or did not come from this console; nothing was changed. "
        "Open the page again and resend the form."
    )


def create_console(
    services: Services, lock_manager: Any, secret: bytes
) -> Callable[..., Iterable[bytes]]:
    """The console as a WSGI app, to be mounted at ``/app`` (gateway/console/mount.py);
    ``secret`` signs its form tokens (the key table's seed ``CSRF_SEED``, mount.py)."""
    app = Flask("gateway.console", static_url_path="/static")
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="clindav-form",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        # The signed cookie before sign-in holds a sign-in form's token: an hour is plenty.
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=1),
        # A form is good for as long as its session: the idle timeout ends both.
        WTF_CSRF_TIME_LIMIT=None,
        # Pages send no Referer (headers.py), so the token alone is checked (with SameSite).
        WTF_CSRF_SSL_STRICT=False,
        MAX_CONTENT_LENGTH=64 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    app.logger.disabled = True  # failures are logged once, with the request id (_unexpected)
    app.extensions[EXTENSION] = ConsoleState(services, lock_manager)
    store = sessions.SessionStore(services)
    app.session_interface = sessions.ConsoleSessionInterface(store)
    app.extensions["clindav.sessions"] = store
    app.before_request(_begin)  # before Flask-WTF's check: a stale session signs in again
    CSRFProtect(app)
    _register_pages(app)
    app.after_request(_finish)
    app.register_error_handler(ClindavError, _refused)
    app.register_error_handler(SQLAlchemyError, _database_failed)
    app.register_error_handler(CSRFError, _form_token_failed)
    app.register_error_handler(HTTPException, _http_error)
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True
    app.context_processor(layout)
    app.jinja_env.filters["age"] = age
    return app.wsgi_app


def _register_pages(app: Flask) -> None:
    pages = (
        auth,
        inbox,
        patient,
        images,
        trash,
        holds,
        audit_trail,
        users,
        upload_requests,
        devices,
        nextcloud,
    )
    for page in pages:
        page.register(app)


def _begin() -> Response | None:
    g.request_id = request_id(request.environ)  # the one PathGuard may have made
    if request.endpoint == "static":
        return None
    store: sessions.SessionStore = _app_store()
    g.principal = sessions.load(store, session)
    if g.principal is not None or request.endpoint in _OPEN:
        return None
    expired = isinstance(session, sessions.SignedInSession) and session.expired
    nextcloud.remember_flow(request.endpoint, request.view_args)
    target = url_for("auth.sign_in_expired" if expired else "auth.sign_in")
    return redirect(target, 303)  # type: ignore[return-value]


def _app_store() -> sessions.SessionStore:
    from flask import current_app

    store: sessions.SessionStore = current_app.extensions["clindav.sessions"]
    return store


def _finish(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "-")
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def error_page(refusal: ClindavError) -> ErrorPage:
    """The error page for ``refusal``, audited (503 if the refusal cannot be recorded)."""
    if refusal.status >= 500:
        log.error("request %s: %s %s", g.get("request_id"), refusal.code, refusal.detail)
    refusal = recorded_answer(refusal, lambda: audit_refusal(refusal))
    page = render_template("error.html", refusal=refusal, request_id=g.get("request_id", "-"))
    return page, refusal.status, {"X-Clindav-Error": refusal.code}


def _refused(exc: ClindavError) -> ErrorPage:
    return error_page(exc)


def _database_failed(exc: SQLAlchemyError) -> ErrorPage:
    log.error("request %s: database error: %s", g.get("request_id"), exc)
    return error_page(DatabaseUnavailable(f"database: {type(exc).__name__}"))


def _form_token_failed(exc: CSRFError) -> ErrorPage:
    return error_page(FormTokenInvalid(f"{request.method} {request.path}: {exc.description}"))


def _http_error(exc: HTTPException) -> ErrorPage:
    """Flask's own refusals (no such page, wrong method, body too large) and crashes."""
    if isinstance(exc, InternalServerError):
        return error_page(_unexpected(exc.original_exception))
    known = _HTTP_ERRORS.get(exc.code or 500)
    detail = f"{request.method} {request.path}: {exc.code} {exc.name}"
    return error_page(known(detail) if known else BadRequest(detail))


class MethodNotAllowed(ClindavError):
    status = 405
    code = "method-not-allowed"
    message = "This page does not take this kind of request."


_HTTP_ERRORS: dict[int, type[ClindavError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def _unexpected(exc: BaseException | None) -> ClindavError:
    if isinstance(exc, ClindavError):
        return exc
    if isinstance(exc, SQLAlchemyError):
        return DatabaseUnavailable(f"database: {type(exc).__name__}")
    known = from_os_error(exc) if isinstance(exc, OSError) else None
    if known is not None:
        return known
    log.error("request %s failed", g.get("request_id"), exc_info=exc)
    return ClindavError(type(exc).__name__)
