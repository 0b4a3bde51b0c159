"""The one WSGI app behind the path guard: the console at ``/app/``, WebDAV elsewhere.

A browser that opens the gateway's address (a GET or HEAD of ``/`` that
accepts ``text/html`` and carries no WebDAV header) is sent to ``/app/``;
every WebDAV client asking for ``/`` (Explorer, Finder, davfs2, rclone
list it with PROPFIND, or GET it with WebDAV headers) still gets WsgiDAV's
virtual root.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.console.headers import MOUNT, is_console_path
from gateway.server.lazy import StartResponse, WsgiApp

# The key of the console's form-token signatures, a seed in the key table (wrapped by the
# master key), read when a worker starts: the console itself is made later (ConsoleMount).
CSRF_SEED = "@console-csrf"
# Headers only WebDAV clients send: such a GET of / is not a person at a browser.
_DAV_HEADERS = (
    "HTTP_DEPTH",
    "HTTP_TRANSLATE",
    "HTTP_DESTINATION",
    "HTTP_IF",
    "HTTP_LOCK_TOKEN",
    "HTTP_OVERWRITE",
)


def wants_console(environ: dict[str, Any]) -> bool:
    """A browser opening the gateway's root address."""
    return (
        environ.get("PATH_INFO") == "/"
        and environ.get("REQUEST_METHOD") in ("GET", "HEAD")
        and "text/html" in environ.get("HTTP_ACCEPT", "")
        and not any(name in environ for name in _DAV_HEADERS)
    )


class ConsoleMount:
    def __init__(self, dav: WsgiApp, console: WsgiApp) -> None:
        self.dav = dav
        self.console = console

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if is_console_path(path):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + MOUNT
            environ["PATH_INFO"] = path[len(MOUNT) :]
            return self.console(environ, start_response)
        if wants_console(environ):
            start_response(
                "303 See Other",
                [("Location", MOUNT + "/"), ("Content-Length", "0"), ("Cache-Control", "no-store")],
            )
            return [b""]
        return self.dav(environ, start_response)
