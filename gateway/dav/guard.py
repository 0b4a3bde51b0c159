"""The outermost layer: request paths that cannot be a name are refused here.

It runs before WsgiDAV routes a request, because WsgiDAV itself mishandles
them: a path that is not valid UTF-8 makes it raise (the client's connection
drops with no answer), and dot segments that climb above the root get a 400
whose declared body never comes.  Such a request answers a complete
``400 invalid-path`` with its request id, and is audited.

Every other path is NFC-normalised here, once, before anything reads it: a
Mac sends names decomposed (NFD), and a name stored as sent escaped the
checks that compare NFC names (held images of others were listed and read).
The Destination of COPY/MOVE gets the same normalisation where it is read
(gateway/dav/destination.py).

Every response leaving through this layer gets the security headers, built
in one place (:func:`security_headers`).
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from gateway.console.headers import is_console_path, with_console_headers
from gateway.pipeline import RequestInfo
from gateway.services import Services

StartResponse = Callable[..., Any]
# A year; no includeSubDomains: other hosts of the practice are not ours to pin.
HSTS = "max-age=31536000"


def security_headers(https: bool) -> list[tuple[str, str]]:
    """The headers every response carries; Strict-Transport-Security under TLS."""
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", "sandbox; default-src 'none'"),
    ]
    return [*headers, ("Strict-Transport-Security", HSTS)] if https else headers


def path_problem(raw: str) -> str | None:
    """Why a WSGI PATH_INFO (latin-1 decoded bytes) is no usable path, or None."""
    try:
        path = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return "the path is not valid UTF-8"
    if "\x00" in path:
        return "the path contains a NUL byte"
    if any(segment in (".", "..") for segment in path.split("/")):
        return "the path contains . or .. segments"
    return None


class PathGuard:
    def __init__(self, app: Callable[..., Iterable[bytes]], services: Services) -> None:
        self.app = app
        self.services = services

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        added = security_headers(environ.get("wsgi.url_scheme") == "https")
        if is_console_path(environ.get("PATH_INFO", "")):
            added = with_console_headers(added)  # pages: their own CSP (docs/CONSOLE.md)
        names = {name.lower() for name, _ in added}

        def secured(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() not in names]
            return start_response(status, [*kept, *added], exc_info)

        raw = environ.get("PATH_INFO", "")
        problem = path_problem(raw)
        if problem is None:
            environ["PATH_INFO"] = _nfc(raw)
            return self.app(environ, secured)
        request_id = uuid.uuid4().hex[:16]
        request = RequestInfo(
            request_id,
            None,
            environ.get("REMOTE_ADDR", "-"),
            environ.get("HTTP_USER_AGENT", "")[:255],
            environ.get("REQUEST_METHOD", "-"),
        )
        self.services.audit.record(
            request,
            action=request.method,
            share=None,
            path=None,
            status=400,
            code="invalid-path",
            reason=problem,
        )
        body = f"400 invalid-path: {problem}.\nrequest id: {request_id}\n".encode()
        secured(
            "400 Bad Request",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", request_id),
                ("X-Clindav-Error", "invalid-path"),
            ],
        )
        return [body]


def _nfc(raw: str) -> str:
    """A WSGI PATH_INFO (latin-1 decoded UTF-8, already checked) with its text in NFC."""
    path = raw.encode("latin-1").decode("utf-8")
    return unicodedata.normalize("NFC", path).encode("utf-8").decode("latin-1")
