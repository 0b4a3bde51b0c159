"""The outermost layer: request paths that cannot be a name are refused here.

It runs before WsgiDAV routes a request, because WsgiDAV itself mishandles
them: a path that is not valid UTF-8 makes it raise (the client's connection
drops with no answer), and dot segments that climb above the root get a 400
whose declared body never comes.  Such a request answers a complete
``400 invalid-path`` with its request id, and is audited.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from gateway.pipeline import RequestInfo
from gateway.services import Services

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
        problem = path_problem(environ.get("PATH_INFO", ""))
        if problem is None:
            return self.app(environ, start_response)
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
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", request_id),
                ("X-Clindav-Error", "invalid-path"),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", "sandbox; default-src 'none'"),
            ],
        )
        return [body]
