"""What every answer of clindav's HTTP edge carries, built in one place.

- **The request id** (:func:`request_id`): made once per request, by the first
  layer that needs it, and kept in the WSGI environ under :data:`REQUEST_ID`,
  so every later layer (the path guard, the WebDAV middleware, the staff
  console) reuses it.  The audit event, the log lines and ``X-Request-Id``
  all carry that one id.
- **The security headers** (:func:`security_headers`): ``X-Content-Type-Options:
  nosniff`` and a sandboxing ``Content-Security-Policy`` on every answer, and
  ``Strict-Transport-Security`` under TLS.  :class:`SecurityHeaders` applies
  them to any WSGI app; an app serving HTML pages (the console) passes
  :data:`PAGE_HEADERS`, which replace the sandbox with a page policy and add
  ``Referrer-Policy``.
- **Error answers** (:func:`error_answer`): status line, ``X-Clindav-Error``,
  ``X-Request-Id``, the security headers and the body
  ``<status> <code>: <public message>`` + ``request id: <id>``
  (docs/ERRORS.md).  WSGI layers send it with :meth:`ErrorAnswer.send`;
  the HTTP server, which refuses some requests before WSGI, writes the same
  answer out itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gateway.auth.base import Principal
from gateway.errors import ClindavError
from gateway.pipeline import RequestInfo, new_request_id
from gateway.records.audit import AuditLog

log = logging.getLogger("clindav")
StartResponse = Callable[..., Any]
Headers = Sequence[tuple[str, str]]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

REQUEST_ID = "clindav.request_id"
# A year; no includeSubDomains: other hosts of the practice are not ours to pin.
HSTS = "max-age=31536000"
SECURITY_HEADERS: Headers = (
    ("X-Content-Type-Options", "nosniff"),
    # A stored SVG or HTML file opened in a browser is inert: no script, no page.
    ("Content-Security-Policy", "sandbox; default-src 'none'"),
)
# For clindav's own HTML pages (the console, docs/CONSOLE.md): their own scripts,
# styles and images only, never framed (clickjacking of the consent forms), forms
# posted only to clindav, and no address (which can name a patient) sent on.
PAGE_HEADERS: Headers = (
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


def request_id(environ: dict[str, Any]) -> str:
    """This request's id: the one an earlier layer gave it, or a new one kept for later layers."""
    known = environ.get(REQUEST_ID)
    if isinstance(known, str):
        return known
    made = environ[REQUEST_ID] = new_request_id()
    return made


def request_info(environ: dict[str, Any], principal: Principal | None) -> RequestInfo:
    """The request as its audit events record it."""
    return RequestInfo(
        request_id=request_id(environ),
        principal=principal,
        client=environ.get("REMOTE_ADDR", "-"),
        user_agent=environ.get("HTTP_USER_AGENT", "")[:255],
        method=environ.get("REQUEST_METHOD", "-"),
    )


def is_https(environ: dict[str, Any]) -> bool:
    return environ.get("wsgi.url_scheme") == "https"


def security_headers(https: bool, extra: Headers = ()) -> list[tuple[str, str]]:
    """The headers every answer carries; ``extra`` replaces (by name) or adds to them."""
    replaced = {name.lower() for name, _ in extra}
    headers = [h for h in SECURITY_HEADERS if h[0].lower() not in replaced]
    headers += extra
    return [*headers, ("Strict-Transport-Security", HSTS)] if https else headers


def secured(start_response: StartResponse, https: bool, extra: Headers = ()) -> StartResponse:
    """``start_response`` adding the security headers, in place of any the app set itself."""
    added = security_headers(https, extra)
    names = {name.lower() for name, _ in added}

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        kept = [(k, v) for k, v in headers if k.lower() not in names]
        return start_response(status, [*kept, *added], exc_info)

    return start


class SecurityHeaders:
    """A WSGI layer: every answer of ``app`` carries the security headers (and ``extra``)."""

    def __init__(self, app: WsgiApp, extra: Headers = ()) -> None:
        self.app = app
        self.extra = tuple(extra)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self.app(environ, secured(start_response, is_https(environ), self.extra))


@dataclass(frozen=True)
class ErrorAnswer:
    status: str  # the status line after the protocol: "403 Forbidden"
    headers: list[tuple[str, str]]
    body: bytes  # empty for HEAD, 204 and 304

    def send(self, start_response: StartResponse) -> list[bytes]:
        start_response(self.status, self.headers)
        return [self.body]


def error_answer(
    status: int,
    code: str,
    message: str | bytes,
    request: str,
    *,
    https: bool,
    head: bool = False,
    realm: str | None = None,
) -> ErrorAnswer:
    """The answer to a refused or failed request ``request`` (its id).

    ``message`` is the public message, or (bytes) a WebDAV precondition's XML,
    which clients need as it is.  ``realm``: a 401's Basic challenge.
    """
    if isinstance(message, bytes):
        data, ctype = message, "application/xml; charset=utf-8"
    else:
        data = f"{status} {code}: {message}\nrequest id: {request}\n".encode()
        ctype = "text/plain; charset=utf-8"
    bodiless = status in (204, 304)
    headers = [
        ("Content-Type", ctype),
        ("Content-Length", "0" if bodiless else str(len(data))),
        ("X-Request-Id", request),
        ("X-Clindav-Error", code),
    ]
    if realm is not None:
        quoted = realm.replace('"', "")
        headers.append(("WWW-Authenticate", f'Basic realm="{quoted}", charset="UTF-8"'))
    headers += security_headers(https)
    return ErrorAnswer(status_line(status), headers, b"" if head or bodiless else data)


def status_line(status: int) -> str:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    return f"{status} {phrase}"


def status_code(status: int) -> str:
    """A kebab-case code for a protocol-level status (``precondition-failed``)."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return f"http-{status}"


def refusal_answer(
    audit: AuditLog | None, request: RequestInfo, error: ClindavError, *, https: bool
) -> ErrorAnswer:
    """The answer to a refusal made before any share is known, once it is audited.

    When the event cannot be written, the answer is the audit log's own
    failure (503): an unrecorded refusal must not look like a recorded one.
    Without an audit log (a server run without one) the refusal is logged.
    """
    if audit is None:
        log.warning(
            "request %s: refused %s: %s %s", request.request_id, request.method, error.code, error
        )
    else:
        error = _recorded(audit, request, error)
    return error_answer(
        error.status,
        error.code,
        error.public_message,
        request.request_id,
        https=https,
        head=request.method == "HEAD",
    )


def _recorded(audit: AuditLog, request: RequestInfo, error: ClindavError) -> ClindavError:
    try:
        audit.record(
            request,
            action=request.method,
            share=None,
            path=None,
            status=error.status,
            code=error.code,
            reason=error.detail,
        )
    except ClindavError as exc:
        return exc
    return error
