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

Every response leaving through this layer gets the security headers
(gateway/server/responses.py).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from gateway.console.headers import is_console_path
from gateway.errors import InvalidPath
from gateway.server.responses import (
    PAGE_HEADERS,
    is_https,
    refusal_answer,
    request_info,
    secured,
)
from gateway.services import Services
from gateway.uploads.paths import is_upload_path

StartResponse = Callable[..., Any]


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
        self.services.proxies.apply(environ)  # first: the scheme and address every layer reads
        https = is_https(environ)
        raw = environ.get("PATH_INFO", "")
        problem = path_problem(raw)
        if problem is None:
            environ["PATH_INFO"] = _nfc(raw)
            # Console pages: the page headers in place of WebDAV's sandbox CSP.
            extra = PAGE_HEADERS if is_console_path(raw) or is_upload_path(raw) else ()
            return self.app(environ, secured(start_response, https, extra))
        refusal = InvalidPath(problem, public=f"{problem}.")
        answer = refusal_answer(
            self.services.audit, request_info(environ, None), refusal, https=https
        )
        return answer.send(start_response)


def _nfc(raw: str) -> str:
    """A WSGI PATH_INFO (latin-1 decoded UTF-8, already checked) with its text in NFC."""
    path = raw.encode("latin-1").decode("utf-8")
    return unicodedata.normalize("NFC", path).encode("utf-8").decode("latin-1")
