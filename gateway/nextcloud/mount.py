"""The Nextcloud apps' door: status.php, OCS and Login Flow v2 (docs/NEXTCLOUD-APPS.md).

It sits behind the path guard (so paths are checked and answers carry the
security headers) and in front of the console and WebDAV.  The routes are
the "minimal surface" of ../shared/NEXTCLOUD.md:

* ``GET /status.php`` (and the 3.7 client's fallback ``/nextcloud/status.php``),
  ``GET /index.php/204``: no credentials needed;
* ``GET /ocs/v1.php|v2.php/cloud/capabilities``: no credentials needed (the
  desktop wizard asks before it has any);
* ``GET /ocs/v1.php|v2.php/cloud/user``: the account, by the gateway's own
  authenticator (local or LDAP, app passwords included; its throttle, its
  503 when the store is down);
* ``DELETE /ocs/v2.php/core/apppassword``: a device signing out revokes the
  app password it authenticated with (audited ``APP-PASSWORD``);
* ``POST /index.php/login/v2`` and ``POST /index.php/login/v2/poll``
  (gateway/nextcloud/loginflow.py); the browser part is the console's
  ``/app/nextcloud/login/<token>`` page;
* any other ``/ocs/`` or ``/index.php/`` address: 404, which every client
  takes as "feature absent".

A refusal answers through the one error builder (gateway/server/responses.py)
and is audited as WebDAV's are (a bare challenge without credentials is not
an event); a database or audit failure is 503.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.exc import SQLAlchemyError

from gateway.auth.apppasswords import is_app_password
from gateway.auth.base import Principal
from gateway.console.headers import MOUNT
from gateway.dav.middleware import parse_basic
from gateway.errors import (
    AuthenticationRequired,
    BadRequest,
    ClindavError,
    DatabaseUnavailable,
    Forbidden,
    NotFound,
)
from gateway.nextcloud import ocs, paths, uploads
from gateway.nextcloud.devices import server_address
from gateway.nextcloud.loginflow import LoginFlows
from gateway.nextcloud.records import chained_event
from gateway.nextcloud.replies import Replies
from gateway.server.responses import error_answer, is_https, request_id, request_info
from gateway.services import Services

log = logging.getLogger("clindav.nextcloud")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_OCS = re.compile(r"^/ocs/v(?P<version>[12])\.php(?P<route>/.*)$")
_STATUS_PATHS = frozenset({"/status.php", "/nextcloud/status.php"})
# Legacy (v1) chunk names, PUT by a client that did not see chunking v2 advertised.
_LEGACY_CHUNK = re.compile(r"-chunking-\d+-\d+-\d+$")
_MAX_FORM = 4096
GRANT_PAGE = MOUNT + "/nextcloud/login/"


class LegacyChunking(BadRequest):
    code = "legacy-chunking-refused"
    message = "Legacy chunked uploads are not accepted; update the app (chunking v2 is)."


class NotAnAppPassword(Forbidden):
    code = "not-an-app-password"
    message = "Only a device's app password can be revoked this way."


class NextcloudRequest:
    """One request to the door: its answer's parts, and its audit fields."""

    def __init__(self, environ: dict[str, Any], services: Services) -> None:
        self.environ = environ
        self.services = services
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.query = parse_qs(environ.get("QUERY_STRING", ""))
        self.principal: Principal | None = None
        self.action = self.method
        self.challenge = False

    @property
    def base_url(self) -> str:
        return server_address(self.environ)

    def authenticate(self) -> Principal:
        user, password = parse_basic(self.environ.get("HTTP_AUTHORIZATION", ""))
        if user is None:
            self.challenge = True
            raise AuthenticationRequired("no credentials")
        who = self.services.authenticator.login(
            user, password or "", client=self.environ.get("REMOTE_ADDR", "-")
        )
        if who is None:
            self.challenge, self.action = True, "LOGIN"
            raise AuthenticationRequired(f"login failed for {user!r}", public="Login failed.")
        self.principal = who
        return who

    def form(self) -> dict[str, list[str]]:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if length > _MAX_FORM:
            raise BadRequest(f"form of {length} bytes")
        raw = self.environ["wsgi.input"].read(length) if length else b""
        return parse_qs(raw.decode("utf-8", "replace"))


Answer = tuple[int, bytes, str]  # status, body, content type


class NextcloudMount:
    def __init__(self, app: WsgiApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.flows = LoginFlows(services)
        self.replies = Replies(services)
        inbox = services.settings.nextcloud.inbox_share
        self.inbox_url = services.shares[inbox].url if inbox else None
        self.chunks = services.chunks
        self.chunks.sweep()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if self.services.settings.nextcloud.enabled and paths.is_file_path(path):
            return self._files(environ, start_response)
        if self.services.settings.nextcloud.enabled and uploads.is_upload_path(path):
            return self._uploads(environ, start_response)
        route = self._route(path, environ.get("REQUEST_METHOD", "GET").upper())
        if route is None:
            return self.app(environ, start_response)
        request = NextcloudRequest(environ, self.services)
        try:
            status, body, ctype = route(request)
        except ClindavError as exc:
            return self._refuse(request, exc, start_response)
        except SQLAlchemyError as exc:
            log.error("request %s: database error: %s", request_id(environ), exc)
            return self._refuse(request, DatabaseUnavailable(type(exc).__name__), start_response)
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Request-Id", request_id(environ)),
        ]
        start_response(f"{status} {_REASONS.get(status, 'OK')}", headers)
        return [b"" if request.method == "HEAD" else body]

    def _files(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """An app's file request, answered by WebDAV (gateway/nextcloud/paths.py)."""
        if environ.get("REQUEST_METHOD", "").upper() == "PUT" and (
            environ.get("HTTP_OC_CHUNKED") or _LEGACY_CHUNK.search(environ["PATH_INFO"])
        ):
            refusal = LegacyChunking(f"legacy chunk {environ['PATH_INFO'][-80:]!r}")
            return self._refuse(NextcloudRequest(environ, self.services), refusal, start_response)
        login, _password = parse_basic(environ.get("HTTP_AUTHORIZATION", ""))
        paths.rewrite(environ, self.inbox_url, login)
        self._offer_inbox(environ)
        return self.app(environ, self.replies.wrap(environ, start_response))

    def _offer_inbox(self, environ: dict[str, Any]) -> None:
        """The user's camera inbox folder is made, if missing, once they are signed in."""
        inbox = self.services.settings.nextcloud.inbox_share
        if inbox is None:
            return
        store = self.services.shares[inbox].store
        environ[paths.MAKE_INBOX] = lambda uid: store.locate([uid]).mkdir(exist_ok=True)

    def _uploads(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Chunked upload v2 (gateway/nextcloud/uploads.py); the final MOVE becomes a PUT."""
        request = NextcloudRequest(environ, self.services)
        try:
            upload = uploads.UploadRequest(environ)
            who = request.authenticate()
            upload.check_user(who.uid)
            if not uploads.is_final_move(upload):
                request.action = "UPLOAD"
                return self._upload_step(request, upload, start_response)
            uploads.as_put(upload, environ, self.chunks, self.inbox_url)
            self._offer_inbox(environ)
        except ClindavError as exc:
            return self._refuse(request, exc, start_response)
        except SQLAlchemyError as exc:
            log.error("request %s: database error: %s", request_id(environ), exc)
            return self._refuse(request, DatabaseUnavailable(type(exc).__name__), start_response)
        transfer = upload.transfer
        assert transfer is not None

        def finished(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if int(status[:3]) < 300:
                self.chunks.remove(upload.uid, transfer)
            return (
                start_response(status, headers, exc_info)
                if exc_info
                else start_response(status, headers)
            )

        return self.app(environ, self.replies.wrap(environ, finished))

    def _upload_step(
        self,
        request: NextcloudRequest,
        upload: uploads.UploadRequest,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        """MKCOL, chunk PUT, PROPFIND, DELETE; starting and cancelling are audited."""
        held: list[Any] = []
        limit = self.services.settings.limits.max_stream_bytes
        body = uploads.answer(
            upload, request.environ, self.chunks, lambda *answer: held.extend(answer), limit
        )
        change = {"MKCOL": "started", "DELETE": "cancelled"}.get(upload.method)
        if change is not None:
            self.services.audit.record(
                request_info(request.environ, request.principal),
                action="UPLOAD",
                share=None,
                path=None,
                status=int(held[0][:3]),
                code="ok",
                details={"change": change, "transfer": upload.transfer},
            )
        headers = [*held[1], ("X-Request-Id", request_id(request.environ))]
        start_response(held[0], headers)
        return body

    def _route(self, path: str, method: str) -> Callable[[NextcloudRequest], Answer] | None:
        if not self.services.settings.nextcloud.enabled:
            return None
        if path in _STATUS_PATHS and method in ("GET", "HEAD"):
            return _status
        if path == "/index.php/204" and method in ("GET", "HEAD"):
            return _no_content
        if path == "/index.php/login/v2" and method == "POST":
            return self._login_start
        if path == "/index.php/login/v2/poll" and method == "POST":
            return self._login_poll
        found = _OCS.match(path)
        if found is not None:
            return lambda request: self._ocs(request, int(found["version"]), found["route"])
        if path.startswith(("/index.php/", "/remote.php/")) or path == "/index.php":
            return _not_found
        return None

    def _ocs(self, request: NextcloudRequest, version: int, route: str) -> Answer:
        method = request.method
        data: Any
        if route == "/cloud/capabilities" and method in ("GET", "HEAD"):
            data = ocs.capabilities()
        elif route == "/cloud/user" and method in ("GET", "HEAD"):
            data = ocs.user(request.authenticate().uid)
        elif route == "/core/apppassword" and method == "DELETE":
            data = self._revoke(request)
        else:
            raise _Unaudited(f"no OCS route {route}")
        as_json = ocs.wants_json(request.query, request.environ.get("HTTP_ACCEPT", ""))
        body, ctype = ocs.render(ocs.envelope(version, data), as_json)
        return 200, body, ctype

    def _revoke(self, request: NextcloudRequest) -> list[Any]:
        who = request.authenticate()
        _user, secret = parse_basic(request.environ.get("HTTP_AUTHORIZATION", ""))
        request.action = "APP-PASSWORD"
        if secret is None or not is_app_password(secret):
            raise NotAnAppPassword(f"{who.uid} sent an account password")
        event = chained_event(
            self.services, request_info(request.environ, who), "APP-PASSWORD", change="revoked"
        )
        if not self.services.app_passwords.revoke_secret(secret, event):
            raise NotFound("app password already revoked")
        return []

    def _login_start(self, request: NextcloudRequest) -> Answer:
        client = request.environ.get("HTTP_USER_AGENT", "")
        poll, login = self.flows.start(client, request.environ.get("REMOTE_ADDR", "-"))
        base = request.base_url
        document = {
            "poll": {"token": poll, "endpoint": base + "/index.php/login/v2/poll"},
            "login": base + GRANT_PAGE + login,
        }
        return 200, json.dumps(document).encode(), "application/json; charset=utf-8"

    def _login_poll(self, request: NextcloudRequest) -> Answer:
        token = request.form().get("token", [""])[0]
        granted = self.flows.poll(token) if token else None
        if granted is None:
            return 404, b"[]", "application/json; charset=utf-8"
        document = {
            "server": request.base_url,
            "loginName": granted.login_name,
            "appPassword": granted.app_password,
        }
        return 200, json.dumps(document).encode(), "application/json; charset=utf-8"

    def _refuse(
        self, request: NextcloudRequest, refusal: ClindavError, start_response: StartResponse
    ) -> Iterable[bytes]:
        environ = request.environ
        if refusal.status >= 500:
            log.error("request %s: %s %s", request_id(environ), refusal.code, refusal.detail)
        bare_challenge = refusal.status == 401 and request.action != "LOGIN"
        if not bare_challenge and not isinstance(refusal, _Unaudited):
            refusal = self.services.audit.record_refusal(
                request_info(environ, request.principal),
                refusal,
                action=request.action,
                path=environ.get("PATH_INFO", "")[:255],
            )
        answer = error_answer(
            refusal.status,
            refusal.code,
            refusal.public_message,
            request_id(environ),
            https=is_https(environ),
            head=request.method == "HEAD",
            realm=self.services.settings.auth.realm if request.challenge else None,
        )
        return answer.send(start_response)


class _Unaudited(NotFound):
    """An address of a feature clindav does not have (avatars, notifications...)."""

    code = "not-found"


def _status(request: NextcloudRequest) -> Answer:
    return 200, json.dumps(ocs.status()).encode(), "application/json; charset=utf-8"


def _no_content(request: NextcloudRequest) -> Answer:
    return 204, b"", "text/plain; charset=utf-8"


def _not_found(request: NextcloudRequest) -> Answer:
    raise _Unaudited(f"no route {request.environ.get('PATH_INFO', '')}")


_REASONS = {200: "OK", 204: "No Content", 404: "Not Found"}
