"""Console sessions: kept in the database, the browser holds only a random token.

A signed-in browser holds the cookie ``clindav-session`` (``HttpOnly``,
``SameSite=Strict``, ``Path=/app``, ``Secure`` over HTTPS; no expiry date,
so it ends with the browser).  Its value is 32 random bytes; the
``console_session`` row is found by their SHA-256, so the table alone signs
nobody in, and every gateway process and instance sharing the database
knows the session.  A session ends:

* after ``console.idle_timeout`` without a request, and ``console.max_session``
  after sign-in (both measured by the instance clock);
* when its local account is disabled, removed or changes groups (checked on
  every request, one primary-key read, as WebDAV's cached logins are);
* at sign-out, and at sign-in (a new token replaces any old one).

Before sign-in, the only thing a browser needs between requests is the
sign-in form's token: it lives in a small signed cookie (``clindav-form``,
Flask's own), never in the database, so strangers cannot fill the table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from flask import Flask, Request, Response, g, request
from flask.sessions import (
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionInterface,
    SessionMixin,
)
from sqlalchemy import delete, or_, update
from werkzeug.datastructures import CallbackDict

from gateway.auth.base import Principal
from gateway.clock import aware
from gateway.db import ConsoleSession, LocalUser
from gateway.services import Services

COOKIE = "clindav-session"
# Rows are touched at most this often: the idle timeout is measured to within it.
TOUCH_EVERY = dt.timedelta(seconds=30)
_ISSUED = "clindav_console_issued"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SignedInSession(CallbackDict[str, Any], SessionMixin):
    """Flask's session for a browser that sent a session cookie; loaded by :func:`load`."""

    def __init__(self, token: str) -> None:
        def changed(session: SignedInSession) -> None:
            session.modified = True

        super().__init__({}, changed)
        self.token = token
        self.principal: Principal | None = None
        self.ended = False  # unknown, expired or signed out: the cookie goes
        self.expired = False  # ended for want of use (the sign-in page says so)
        self.touch = False
        self.modified = False


class SessionStore:
    """The ``console_session`` rows."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings.console

    def start(self, principal: Principal, client: str) -> str:
        """A new session for ``principal``; the token for the cookie.  Ended ones are cleared."""
        token = secrets.token_urlsafe(32)
        now = self.services.clock.now()
        with self.services.sessions.begin() as session:
            session.execute(delete(ConsoleSession).where(self._ended(now)))
            session.add(
                ConsoleSession(
                    token_hash=token_hash(token),
                    uid=principal.uid,
                    groups=sorted(principal.groups),
                    data={},
                    client=client[:64],
                    created_at=now,
                    last_seen=now,
                )
            )
        return token

    def _ended(self, now: dt.datetime) -> Any:
        return or_(
            ConsoleSession.last_seen < now - self.settings.idle_timeout,
            ConsoleSession.created_at < now - self.settings.max_session,
        )

    def find(self, token: str) -> tuple[ConsoleSession | None, bool]:
        """The live row of ``token`` and whether it must be touched; (None, expired?) otherwise.

        An ended row is deleted when found.
        """
        now = self.services.clock.now()
        with self.services.sessions() as session:
            row = session.get(ConsoleSession, token_hash(token))
        if row is None:
            return None, False
        idle = now - aware(row.last_seen)
        over = now - aware(row.created_at) > self.settings.max_session
        if idle > self.settings.idle_timeout or over or not self._account_current(row):
            self.end(token)
            return None, True
        return row, idle >= TOUCH_EVERY

    def _account_current(self, row: ConsoleSession) -> bool:
        """A local account still enabled, with the groups it signed in with."""
        if self.services.settings.auth.backend != "local":
            return True  # a directory's groups are read again at the next sign-in
        with self.services.sessions() as session:
            account = session.get(LocalUser, row.uid)
        return (
            account is not None
            and not account.disabled
            and sorted(account.groups) == sorted(row.groups)
        )

    def save(self, token: str, data: dict[str, Any]) -> None:
        with self.services.sessions.begin() as session:
            session.execute(
                update(ConsoleSession)
                .where(ConsoleSession.token_hash == token_hash(token))
                .values(data=data, last_seen=self.services.clock.now())
            )

    def end(self, token: str) -> None:
        with self.services.sessions.begin() as session:
            session.execute(
                delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token))
            )


def load(store: SessionStore, session: SessionMixin) -> Principal | None:
    """The signed-in principal of this request, or None (the session is marked ended)."""
    if not isinstance(session, SignedInSession):
        return None
    row, touch = store.find(session.token)
    if row is None:
        session.ended, session.expired = True, touch
        return None
    session.update(row.data)
    session.modified = False  # loading is no change
    session.touch = touch
    session.principal = Principal(row.uid, frozenset(row.groups))
    return session.principal


def issue(token: str) -> None:
    """Send ``token`` as this response's session cookie (at sign-in)."""
    setattr(g, _ISSUED, token)


class FormCookie(SecureCookieSessionInterface):
    """Flask's signed cookie, for what a browser keeps before sign-in (the form token)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


class ConsoleSessionInterface(SessionInterface):
    """Signed-in sessions from the database; before sign-in :class:`FormCookie`."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.form_cookie = FormCookie()

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        token = request.cookies.get(COOKIE)
        if token:
            return SignedInSession(token)  # read from the database in a before-request hook
        return self.form_cookie.open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        issued = g.get(_ISSUED)
        if issued is not None:
            self._cookie(app, response, COOKIE, issued)
            self._cookie(app, response, self.get_cookie_name(app), None)
            return
        if not isinstance(session, SignedInSession):
            self.form_cookie.save_session(app, session, response)
            return
        if session.ended:
            self._cookie(app, response, COOKIE, None)
            # What this request kept before sign-in (the form token) goes to the signed cookie.
            anonymous = SecureCookieSession(dict(session))
            anonymous.modified = bool(anonymous)
            self.form_cookie.save_session(app, anonymous, response)
        elif session.principal is not None and (session.modified or session.touch):
            self.store.save(session.token, dict(session))

    def _cookie(self, app: Flask, response: Response, name: str, value: str | None) -> None:
        options: dict[str, Any] = {
            "path": self.get_cookie_path(app),
            "secure": request.is_secure,
            "httponly": True,
            "samesite": "Strict",
        }
        if value is None:
            response.delete_cookie(name, **options)
        else:
            response.set_cookie(name, value, **options)
