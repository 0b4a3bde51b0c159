"""The gateway's own WSGI layer, in front of WsgiDAV's request server.

For every request, in this order: its request id (gateway/server/responses.py);
(forwarding headers were judged by the path guard, gateway/dav/guard.py);
authentication (Basic only, 401 challenge, 400 for a malformed header, 503
when the account store is down); the policy gate (gateway/dav/gate.py), which
decides before any body byte is read; then the handler that answers
(gateway/dav/dispatch.py: manifest, junk, cross-share, PROPFIND, WsgiDAV);
then error translation and the audit event for the outcome.

Error translation: a :class:`ClindavError` answers its status, code and fixed
public message; a WsgiDAV ``DAVError`` answers its status with a generic text
(or its precondition XML, which clients need); anything else is a 500 with a
generic text.  Internal detail goes only to the log, tagged with the request
id the client also receives (``X-Request-Id``).  The error answer itself is
built by gateway/server/responses.py, as every error answer of clindav is.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from wsgidav.dav_error import DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from gateway.auth.base import Principal
from gateway.change import RequestChange
from gateway.dav.dispatch import HANDLERS, Captured, Dispatch
from gateway.dav.gate import PolicyGate
from gateway.dav.held import held_headers
from gateway.dav.junk import PhantomStore
from gateway.dav.locks import begin_request
from gateway.dav.outcome import Outcome
from gateway.dav.provider import AUDITED, REQUEST
from gateway.dav.root import PRINCIPAL
from gateway.errors import (
    AuthenticationRequired,
    BadRequest,
    ClindavError,
    DatabaseUnavailable,
    from_os_error,
)
from gateway.nextcloud.paths import check_dav_user
from gateway.server.responses import error_answer, is_https, request_info, status_code
from gateway.services import Services

log = logging.getLogger("clindav.request")

StartResponse = Callable[..., Any]
# Methods WsgiDAV carries out in several steps: each request's steps and its
# audit event are one change (gateway/change.py), committed together or not at all.
_CHANGING = frozenset({"MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"})


class GatewayMiddleware(BaseMiddleware):
    """Replaces WsgiDAV's authenticator and error printer (see module doc)."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.services: Services = config["clindav"]["services"]
        self.gate = PolicyGate(self.services)
        self.phantoms = PhantomStore()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        begin_request(environ.get("REQUEST_METHOD", "") in ("GET", "HEAD", "PROPFIND", "OPTIONS"))
        outcome = Outcome(request_info(environ, None))
        body: str | bytes
        try:
            principal = self._authenticate(environ, outcome)
            self.gate.check(environ, principal, outcome)
            if outcome.action in _CHANGING:
                services = self.services
                outcome.change = RequestChange(services.sessions, services.audit.lock_head)
            yield from self._dispatch(environ, start_response, outcome)
            return
        except ClindavError as exc:
            self._abort_if_started(outcome, exc)
            outcome.fail(exc.status, exc.code, exc.detail or exc.public_message)
            body = exc.public_message
        except DAVError as exc:
            self._abort_if_started(outcome, exc)
            body = _dav_failure(exc, outcome)
        except SQLAlchemyError as exc:
            # No database, no registry and no audit: fail closed.
            self._abort_if_started(outcome, exc)
            log.error("request %s: database error: %s", outcome.request_id, exc)
            unavailable = DatabaseUnavailable(f"database: {type(exc).__name__}")
            outcome.fail(unavailable.status, unavailable.code, unavailable.detail)
            body = unavailable.public_message
        except Exception as exc:  # the last line of defence: never a traceback to clients
            self._abort_if_started(outcome, exc)
            known = from_os_error(exc) if isinstance(exc, OSError) else None
            if known is None:
                log.exception("request %s failed", outcome.request_id)
                known = ClindavError(type(exc).__name__)
            outcome.fail(known.status, known.code, known.detail or known.public_message)
            body = known.public_message
        finally:
            if outcome.change is not None:  # not committed: the request did not succeed
                outcome.change.abandon()
                outcome.change = None
                environ[AUDITED] = False  # an event added by a step went with it
        yield from self._respond_error(environ, start_response, outcome, body)

    @staticmethod
    def _abort_if_started(outcome: Outcome, exc: BaseException) -> None:
        """Once the status line is out, the only honest signal is a cut connection."""
        if outcome.started:
            log.error("request %s failed mid-response: %r", outcome.request_id, exc)
            raise exc

    def _authenticate(self, environ: dict[str, Any], outcome: Outcome) -> Principal:
        user, password = parse_basic(environ.get("HTTP_AUTHORIZATION", ""))
        if user is None:
            outcome.challenge = True
            raise AuthenticationRequired("no credentials")
        principal = self.services.authenticator.login(
            user, password or "", client=environ.get("REMOTE_ADDR", "-")
        )
        if principal is None:
            outcome.challenge = True
            outcome.action = "LOGIN"
            raise AuthenticationRequired(f"login failed for {user!r}", public="Login failed.")
        environ[PRINCIPAL] = principal
        environ["wsgidav.auth.user_name"] = principal.uid
        environ["wsgidav.auth.realm"] = self.services.settings.auth.realm
        outcome.request = request_info(environ, principal)
        environ[REQUEST] = outcome.request
        check_dav_user(environ, principal)  # a Nextcloud app's path names this user
        return principal

    def _dispatch(
        self, environ: dict[str, Any], start_response: StartResponse, outcome: Outcome
    ) -> Iterator[bytes]:
        """The first handler that takes the request answers it (gateway/dav/dispatch.py)."""
        request = Dispatch(environ, outcome, self.services, self.phantoms, self.next_app)
        for handler in HANDLERS:
            captured = Captured()
            body = handler.answer(request, captured) if handler.applies(request) else None
            if body is not None:
                self._start(environ, start_response, outcome, captured, handler.code)
                yield from body
                return

    def _start(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        outcome: Outcome,
        captured: Captured,
        code: str | None,
    ) -> None:
        outcome.status = captured.code
        outcome.code = code or ("ok" if outcome.status < 400 else status_code(outcome.status))
        # Reads are audited before the first byte leaves.
        self._audit(environ, outcome)
        headers = [
            *captured.headers,
            *held_headers(environ),
            ("X-Request-Id", outcome.request_id),
        ]
        start_response(captured.status, headers)
        outcome.started = True

    def _respond_error(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        outcome: Outcome,
        body: str | bytes,
    ) -> Iterator[bytes]:
        if outcome.status >= 500:
            log.error("request %s: %s %s", outcome.request_id, outcome.code, outcome.reason)
        try:
            self._audit(environ, outcome)
        except ClindavError as exc:
            # An unrecorded refusal must not look like a plain refusal: 503,
            # unless the request already failed for want of the database.
            if outcome.status < 500:
                outcome.fail(exc.status, exc.code, exc.detail)
                body = exc.public_message
        answer = error_answer(
            outcome.status,
            outcome.code,
            body,
            outcome.request_id,
            https=is_https(environ),
            head=environ["REQUEST_METHOD"] == "HEAD",
            realm=self.services.settings.auth.realm if outcome.challenge else None,
        )
        yield from answer.send(start_response)

    def _audit(self, environ: dict[str, Any], outcome: Outcome) -> None:
        change, outcome.change = outcome.change, None
        if change is not None and outcome.status < 400:
            self._commit(environ, outcome, change)
            return
        if change is not None:  # a refusal changes nothing
            change.abandon()
            environ[AUDITED] = False
        if environ.get(AUDITED):
            return
        if outcome.status == 401 and outcome.action != "LOGIN":
            return  # a bare challenge (no credentials sent) is not an event
        environ[AUDITED] = True
        self.services.audit.record(outcome.request, **outcome.event_fields())

    def _commit(self, environ: dict[str, Any], outcome: Outcome, change: RequestChange) -> None:
        """A successful request's change, committed with its audit event, or not at all.

        Raising here (before the status line) turns the answer into the
        failure's, which is then audited on its own.
        """
        try:
            if not environ.get(AUDITED):  # a step may have added the event (a placeholder)
                event = self.services.audit.event(outcome.request, **outcome.event_fields())
                self.services.audit.append(change.session(), event)
            change.commit()
        except BaseException:
            change.abandon()
            environ[AUDITED] = False  # the event went with the change
            raise
        environ[AUDITED] = True


def parse_basic(header: str) -> tuple[str | None, str | None]:
    """(user, password) from a Basic header; (None, None) when absent."""
    if not header:
        return None, None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None  # e.g. Digest or Bearer: answer with our Basic challenge
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise BadRequest("Basic credentials without a colon")
    return user, password


def _dav_failure(exc: DAVError, outcome: Outcome) -> str | bytes:
    source = getattr(exc, "src_exception", None)
    if isinstance(source, SQLAlchemyError):
        source = DatabaseUnavailable(f"database: {type(source).__name__}")
    elif isinstance(source, OSError):
        source = from_os_error(source) or source
    if isinstance(source, ClindavError):
        outcome.fail(source.status, source.code, source.detail)
        return source.public_message
    status = exc.value if isinstance(exc.value, int) else 500
    outcome.fail(status, status_code(status), str(exc.context_info or "")[:500])
    if status >= 500:
        log.error("request %s: WsgiDAV error %s (%r)", outcome.request_id, status, source)
    if exc.err_condition is not None:
        return exc.err_condition.as_string().encode("utf-8")
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
