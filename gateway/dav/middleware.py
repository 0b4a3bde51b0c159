"""The gateway's own WSGI layer, in front of WsgiDAV's request server.

For every request, in this order: a request id; removal of forwarding
headers (no proxy is trusted unless configured); authentication (Basic only,
401 challenge, 400 for a malformed header, 503 when the account store is
down); the policy gate, which decides before any body byte is read, for the
source and (COPY/MOVE) the destination; then WsgiDAV; then error translation
and the audit event for the outcome.

Error translation: a :class:`ClindavError` answers its status, code and fixed
public message; a WsgiDAV ``DAVError`` answers its status with a generic text
(or its precondition XML, which clients need); anything else is a 500 with a
generic text.  Internal detail goes only to the log, tagged with the request
id the client also receives (``X-Request-Id``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from wsgidav.dav_error import DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from gateway.auth.base import Principal
from gateway.change import RequestChange
from gateway.dav import propfind
from gateway.dav.crossshare import copy_across
from gateway.dav.destination import Destination, resolve_destination
from gateway.dav.held import held_headers
from gateway.dav.junk import JunkDestination, PhantomStore, answer_junk, is_junk
from gateway.dav.limits import check_copy_size, check_dead_properties, check_request
from gateway.dav.locks import begin_request
from gateway.dav.manifest import handle_manifest, is_manifest
from gateway.dav.placement import judge_relocation
from gateway.dav.provider import AUDITED, DECISION, ERROR, REQUEST, ShareProvider
from gateway.dav.root import PRINCIPAL
from gateway.errors import (
    AuthenticationRequired,
    BadRequest,
    ClindavError,
    DatabaseUnavailable,
    PayloadTooLarge,
    PolicyDenied,
    ShareUnavailable,
    from_os_error,
)
from gateway.policy import ACTIONS, Check, Decision, request_checks
from gateway.records.patientpaths import patient_of
from gateway.records.trash import Trash
from gateway.services import Services
from gateway.storage.backing import split_path

log = logging.getLogger("clindav.request")

StartResponse = Callable[..., Any]
# Their success says nothing beyond the status; WsgiDAV's status page for it
# names its product and version, so it is never sent.
_STATUS_ONLY_METHODS = frozenset({"PUT", "MKCOL", "COPY", "MOVE", "DELETE", "UNLOCK"})
_BODY_HEADERS = ("content-type", "content-length")
# Methods WsgiDAV carries out in several steps: each request's steps and its
# audit event are one change (gateway/change.py), committed together or not at all.
_CHANGING = frozenset({"MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"})


class GatewayMiddleware(BaseMiddleware):
    """Replaces WsgiDAV's authenticator and error printer (see module doc)."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.services: Services = config["clindav"]["services"]
        self.phantoms = PhantomStore()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        request_id = uuid.uuid4().hex[:16]
        begin_request(environ.get("REQUEST_METHOD", "") in ("GET", "HEAD", "PROPFIND", "OPTIONS"))
        _apply_forwarding(environ, self.services.settings.server.trusted_proxies)
        outcome = _Outcome(request_id)
        body: str | bytes
        try:
            principal = self._authenticate(environ, outcome)
            self._gate(environ, principal, outcome)
            if outcome.action in _CHANGING:
                services = self.services
                outcome.change = RequestChange(services.sessions, services.audit.lock_head)
            if outcome.share is not None and is_manifest(outcome.action, outcome.path or ""):
                yield from self._manifest(environ, start_response, outcome)
                return
            if outcome.share is not None and is_junk(outcome.path or ""):
                yield from self._junk(environ, start_response, outcome, principal)
                return
            if outcome.destination is not None and outcome.destination[0] != outcome.share:
                yield from self._across(environ, start_response, outcome)
                return
            if outcome.share is not None and propfind.serves(environ, self.services.settings):
                yield from self._propfind(environ, start_response, outcome)
                return
            yield from self._run(environ, start_response, outcome)
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
            log.error("request %s: database error: %s", request_id, exc)
            unavailable = DatabaseUnavailable(f"database: {type(exc).__name__}")
            outcome.fail(unavailable.status, unavailable.code, unavailable.detail)
            body = unavailable.public_message
        except Exception as exc:  # the last line of defence: never a traceback to clients
            self._abort_if_started(outcome, exc)
            known = from_os_error(exc) if isinstance(exc, OSError) else None
            if known is None:
                log.exception("request %s failed", request_id)
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
    def _abort_if_started(outcome: _Outcome, exc: BaseException) -> None:
        """Once the status line is out, the only honest signal is a cut connection."""
        if outcome.started:
            log.error("request %s failed mid-response: %r", outcome.request_id, exc)
            raise exc

    # --- authentication --------------------------------------------------

    def _authenticate(self, environ: dict[str, Any], outcome: _Outcome) -> Principal:
        outcome.action = environ.get("REQUEST_METHOD", "-").upper()  # audited even if refused
        outcome.request = _request_info(environ, outcome.request_id, None)
        user, password = _parse_basic(environ.get("HTTP_AUTHORIZATION", ""))
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
        outcome.request = _request_info(environ, outcome.request_id, principal)
        environ[REQUEST] = outcome.request
        return principal

    # --- policy gate -----------------------------------------------------

    def _gate(self, environ: dict[str, Any], principal: Principal, outcome: _Outcome) -> None:
        method = environ["REQUEST_METHOD"].upper()
        provider = environ.get("wsgidav.provider")
        outcome.action = method
        is_admin = self.services.policy.doc.admin_group in principal.groups
        check_request(environ, method, is_admin=is_admin)
        if not isinstance(provider, ShareProvider):
            return  # the read-only virtual root lists only readable shares
        share = provider.share.name
        path = environ.get("PATH_INFO", "/")
        outcome.share, outcome.path = share, path
        if is_junk(path):
            self._gate_junk(environ, principal, method, share, path)
            return
        split_path(path)
        # Before the request runs: a MOVE or DELETE takes the registry row away.
        outcome.patient = patient_of(self.services, share, path)
        if not provider.share.store.root.is_dir():
            raise ShareUnavailable(f"backing folder of {share} is missing")
        # Only COPY and MOVE have a destination (gateway/dav/limits.py drops the header elsewhere).
        outcome.destination = self._destination(environ) if method in ("COPY", "MOVE") else None
        self._require_mounted(share, outcome.destination)
        checks = request_checks(method, share, path, outcome.destination)
        if method in ("DELETE", "MOVE", "COPY"):
            # A folder operation reaches everything below it: each item must pass too.
            checks += [
                Check(share, sub, method, checks[0].action)
                for sub in provider.share.store.descendants(split_path(path))
            ]
        environ[DECISION] = self._decide(principal, checks)
        if method == "COPY":  # after the policy (no size hints to strangers), before any copy
            limits = self.services.settings.limits
            check_copy_size(provider.share, split_path(path), environ.get("HTTP_DEPTH"), limits)
        if method == "MOVE" and outcome.destination is not None:
            # A hold keeps what it holds in its place (deletes are checked by the
            # trash; what an overwrite replaces goes to the trash, kept).
            dest_share, dest_path = outcome.destination
            Trash(self.services, self.services.clock).check_move(
                share,
                "/" + "/".join(split_path(path)),
                dest_share,
                "/" + "/".join(split_path(dest_path)),
            )
        if outcome.destination is not None and outcome.destination[0] == share:
            # Into another share, gateway/dav/crossshare.py runs that share's pipeline.
            judge_relocation(
                self.services, provider, environ, principal, path, outcome.destination[1]
            )
        self._check_length(environ)
        if method == "PROPPATCH" and provider.prop_manager is not None:
            resource = provider.get_resource_inst(path, environ)
            if resource is not None:  # else WsgiDAV answers 404
                check_dead_properties(environ, resource, provider.prop_manager)

    def _decide(self, principal: Principal, checks: list[Check]) -> Decision | None:
        """Every check must pass; the first one's decision carries the pipeline."""
        decision: Decision | None = None
        for check in checks:
            verdict = self.services.policy.decide(principal, check)
            if not verdict.allowed:
                raise PolicyDenied(f"rule {verdict.rule} denies {check}")
            decision = decision or verdict
        return decision

    def _gate_junk(
        self, environ: dict[str, Any], principal: Principal, method: str, share: str, path: str
    ) -> None:
        """Client junk is answered and never stored (gateway/dav/junk.py), so its own name
        need not be one clindav could store (Finder probes ``._.``): its folder must
        be, and the policy decides as for any request at that path."""
        split_path(path.rstrip("/").rsplit("/", 1)[0])
        check = Check(share, path, method, ACTIONS.get(method, "write"))
        environ[DECISION] = self._decide(principal, [check])
        self._check_length(environ)

    def _destination(self, environ: dict[str, Any]) -> Destination | None:
        """The one reading of a COPY/MOVE Destination (gateway/dav/destination.py).

        Its share and NFC share-relative path are what the gate judges, and
        ``HTTP_DESTINATION`` now holds exactly that path for WsgiDAV.  Client
        junk is never a destination: it would be stored under a name every
        later request answers as junk, hidden for ever.
        """
        destination = resolve_destination(environ, self.services.shares)
        if destination is not None and is_junk(destination.path):
            raise JunkDestination(f"{destination.share}:{destination.path}")
        return destination

    def _require_mounted(self, share: str, destination: tuple[str, str] | None) -> None:
        """503 share-unavailable while a share's marker is gone (gateway/storage/marker.py):
        an unmounted share's empty mount point is never listed or written."""
        for name in (share, destination[0] if destination else None):
            watch = self.services.markers.get(name) if name else None
            if watch is not None:
                watch.check()

    def _check_length(self, environ: dict[str, Any]) -> None:
        """A declared length over what the request can take: 413 before any byte is read.

        Bodies up to ``limits.max_upload_bytes`` are held in memory.  A larger
        PUT is streamed (gateway/dav/provider.py), up to ``limits.max_stream_bytes``,
        if every stage of its pipeline can judge a streamed upload; otherwise
        the refusal names the stage that needs the whole body.
        """
        limits = self.services.settings.limits
        for key in ("CONTENT_LENGTH", "HTTP_X_EXPECTED_ENTITY_LENGTH"):
            raw = environ.get(key) or ""
            if raw and (not raw.isdigit() or len(raw) > 18):
                raise BadRequest(f"bad {key}: {raw[:32]!r}")
            if not raw or int(raw) <= limits.max_upload_bytes:
                continue
            if environ["REQUEST_METHOD"].upper() != "PUT":
                raise PayloadTooLarge(f"{key} {raw}")
            refusal = environ[DECISION].pipeline.stream_refusal()
            if refusal is not None:
                raise refusal
            if int(raw) > limits.max_stream_bytes:
                raise PayloadTooLarge(f"{key} {raw} over limits.max_stream_bytes")

    # --- running WsgiDAV and reporting the outcome ------------------------

    def _run(
        self, environ: dict[str, Any], start_response: StartResponse, outcome: _Outcome
    ) -> Iterator[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        app_iter = self.next_app(environ, capture)
        try:
            chunks = iter(app_iter)
            first = next(chunks, b"")
            status = int(captured["status"].split(" ", 1)[0])
            if status >= 400:
                # WsgiDAV's own error pages can carry exception text: replace them,
                # with our own error where a provider method recorded one.
                recorded = environ.get(ERROR)
                if isinstance(recorded, ClindavError):
                    raise recorded
                if outcome.change is not None and outcome.change.failure is not None:
                    raise outcome.change.failure  # e.g. the database, while WsgiDAV says 500
                raise DAVError(status)
            if status == 207:
                first, chunks = _sanitised_multistatus(first, chunks, captured)
            elif environ["REQUEST_METHOD"].upper() in _STATUS_ONLY_METHODS:
                first, chunks = b"", iter(())
                captured["headers"] = [
                    *(h for h in captured["headers"] if h[0].lower() not in _BODY_HEADERS),
                    ("Content-Length", "0"),
                ]
            self._start(environ, start_response, outcome, captured)
            yield first
            yield from chunks
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()

    def _manifest(
        self, environ: dict[str, Any], start_response: StartResponse, outcome: _Outcome
    ) -> Iterator[bytes]:
        """An EHR's consent manifest: recorded, never stored (gateway/dav/manifest.py)."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        assert outcome.share is not None
        body = handle_manifest(environ, capture, self.services, outcome.share, outcome.path or "/")
        self._start(environ, start_response, outcome, captured, code="consent-manifest")
        yield from body

    def _across(
        self, environ: dict[str, Any], start_response: StartResponse, outcome: _Outcome
    ) -> Iterator[bytes]:
        """COPY/MOVE into another share: clindav's own handler (gateway/dav/crossshare.py)."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        assert outcome.share is not None and outcome.destination is not None
        body = copy_across(
            environ,
            capture,
            self.services,
            (outcome.share, outcome.path or "/"),
            outcome.destination,
        )
        self._start(environ, start_response, outcome, captured)
        yield from body

    def _junk(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        outcome: _Outcome,
        principal: Principal,
    ) -> Iterator[bytes]:
        """Client junk: answered so the copy goes on, and never stored (gateway/dav/junk.py)."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        body = answer_junk(environ, capture, principal.uid, self.phantoms)
        self._start(environ, start_response, outcome, captured, code="junk-not-stored")
        yield from body

    def _propfind(
        self, environ: dict[str, Any], start_response: StartResponse, outcome: _Outcome
    ) -> Iterator[bytes]:
        """PROPFIND Depth 0/1 in a share, answered by gateway/dav/propfind.py where it can."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        body = propfind.answer(environ, capture, environ["wsgidav.provider"])
        if body is None:  # a request only WsgiDAV answers exactly
            yield from self._run(environ, start_response, outcome)
            return
        self._start(environ, start_response, outcome, captured)
        yield from body

    def _start(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        outcome: _Outcome,
        captured: dict[str, Any],
        code: str | None = None,
    ) -> None:
        status = int(captured["status"].split(" ", 1)[0])
        outcome.status = status
        outcome.code = code or ("ok" if status < 400 else _status_code(status))
        # Reads are audited before the first byte leaves.
        self._audit(environ, outcome)
        headers = [
            *captured["headers"],
            *held_headers(environ),
            ("X-Request-Id", outcome.request_id),
        ]
        start_response(captured["status"], headers)
        outcome.started = True

    def _respond_error(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        outcome: _Outcome,
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
        data = body if isinstance(body, bytes) else _text_body(outcome, body)
        ctype = (
            "application/xml; charset=utf-8"
            if isinstance(body, bytes)
            else "text/plain; charset=utf-8"
        )
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", "0" if outcome.status in (204, 304) else str(len(data))),
            ("X-Request-Id", outcome.request_id),
            ("X-Clindav-Error", outcome.code),
        ]
        if outcome.challenge:
            realm = self.services.settings.auth.realm.replace('"', "")
            headers.append(("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'))
        phrase = (
            HTTPStatus(outcome.status).phrase
            if outcome.status in HTTPStatus._value2member_map_
            else ""
        )
        start_response(f"{outcome.status} {phrase}", headers)
        bodiless = environ["REQUEST_METHOD"] == "HEAD" or outcome.status in (204, 304)
        yield b"" if bodiless else data

    def _audit(self, environ: dict[str, Any], outcome: _Outcome) -> None:
        change, outcome.change = outcome.change, None
        if change is not None and outcome.status < 400:
            self._commit(environ, outcome, change)
            return
        if change is not None:  # a refusal changes nothing
            change.abandon()
            environ[AUDITED] = False
        if environ.get(AUDITED) or outcome.request is None:
            return
        if outcome.status == 401 and outcome.action != "LOGIN":
            return  # a bare challenge (no credentials sent) is not an event
        environ[AUDITED] = True
        self.services.audit.record(outcome.request, **outcome.event_fields())

    def _commit(self, environ: dict[str, Any], outcome: _Outcome, change: RequestChange) -> None:
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


class _Outcome:
    """What happened to one request, gathered for its audit event."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.request: Any = None
        self.action = "-"
        self.share: str | None = None
        self.path: str | None = None
        self.status = 200
        self.code = "ok"
        self.reason = ""
        self.challenge = False
        self.started = False
        # COPY/MOVE: the Destination as read once and judged (gateway/dav/destination.py).
        self.destination: Destination | None = None
        self.patient: str | None = None  # whose object it touches (gateway/records/patientpaths.py)
        # The request's change (methods in _CHANGING) until it commits or is abandoned.
        self.change: RequestChange | None = None

    def fail(self, status: int, code: str, reason: str) -> None:
        self.status, self.code, self.reason = status, code, reason

    def event_fields(self) -> dict[str, Any]:
        """The request's audit event, whether recorded alone or with its change."""
        return {
            "action": self.action,
            "share": self.share,
            "path": self.path,
            "status": self.status,
            "code": self.code,
            "reason": self.reason,
            "details": self._moves(),
            "patient_id": self.patient,
        }

    def _moves(self) -> dict[str, str] | None:
        """A COPY's or MOVE's source and destination."""
        if self.destination is None:
            return None
        return {"from": f"{self.share}:{self.path}", "to": "{}:{}".format(*self.destination)}


def _apply_forwarding(environ: dict[str, Any], trusted: list[str]) -> None:
    """Forwarding headers count only from a trusted proxy; from anyone else they go.

    A client-sent X-Forwarded-Host would otherwise pass WsgiDAV's COPY/MOVE
    host check, and X-Forwarded-For would put a lie in the audit trail.
    """
    if environ.get("REMOTE_ADDR") in trusted:
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded_for:
            # The last hop is the one our proxy saw; earlier ones are the client's say.
            environ["REMOTE_ADDR"] = forwarded_for.split(",")[-1].strip()[:64]
        return
    for key in [k for k in environ if k.startswith("HTTP_X_FORWARDED") or k == "HTTP_FORWARDED"]:
        del environ[key]


def _request_info(environ: dict[str, Any], request_id: str, principal: Principal | None) -> Any:
    from gateway.pipeline import RequestInfo

    return RequestInfo(
        request_id=request_id,
        principal=principal,
        client=environ.get("REMOTE_ADDR", "-"),
        user_agent=environ.get("HTTP_USER_AGENT", "")[:255],
        method=environ.get("REQUEST_METHOD", "-"),
    )


def _parse_basic(header: str) -> tuple[str | None, str | None]:
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


def _dav_failure(exc: DAVError, outcome: _Outcome) -> str | bytes:
    source = getattr(exc, "src_exception", None)
    if isinstance(source, SQLAlchemyError):
        source = DatabaseUnavailable(f"database: {type(source).__name__}")
    elif isinstance(source, OSError):
        source = from_os_error(source) or source
    if isinstance(source, ClindavError):
        outcome.fail(source.status, source.code, source.detail)
        return source.public_message
    status = exc.value if isinstance(exc.value, int) else 500
    outcome.fail(status, _status_code(status), str(exc.context_info or "")[:500])
    if status >= 500:
        log.error("request %s: WsgiDAV error %s (%r)", outcome.request_id, status, source)
    if exc.err_condition is not None:
        return exc.err_condition.as_string().encode("utf-8")
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"


_DESCRIPTION = re.compile(rb"<(\w+:)?responsedescription>.*?</(\w+:)?responsedescription>", re.S)


def _sanitised_multistatus(
    first: bytes, rest: Iterator[bytes], captured: dict[str, Any]
) -> tuple[bytes, Iterator[bytes]]:
    """A 207 body without WsgiDAV's free-text descriptions (they can name exceptions)."""
    body = first + b"".join(rest)
    if b"responsedescription>" in body:
        body = _DESCRIPTION.sub(b"", body)
        captured["headers"] = [
            (k, str(len(body)) if k.lower() == "content-length" else v)
            for k, v in captured["headers"]
        ]
    return body, iter(())


def _text_body(outcome: _Outcome, public: str) -> bytes:
    return f"{outcome.status} {outcome.code}: {public}\nrequest id: {outcome.request_id}\n".encode()


def _status_code(status: int) -> str:
    """A kebab-case code for a protocol-level status (``precondition-failed``)."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return f"http-{status}"
