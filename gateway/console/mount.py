"""The one WSGI app behind the path guard: the console at ``/app/``, WebDAV elsewhere.

A browser that opens the gateway's address (a GET or HEAD of ``/`` that
accepts ``text/html`` and carries no WebDAV header) is sent to ``/app/``;
every WebDAV client asking for ``/`` (Explorer, Finder, davfs2, rclone
list it with PROPFIND, or GET it with WebDAV headers) still gets WsgiDAV's
virtual root.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from gateway.console.headers import MOUNT, is_console_path

# The key of the console's form-token signatures, a seed in the key table (wrapped by the
# master key), read when a worker starts: the console itself is made later (ConsoleMount).
CSRF_SEED = "@console-csrf"
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
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
    """``make_console`` is called at the first console request, once: a worker that
    serves only WebDAV never loads Flask, Jinja2 and WTForms (their memory)."""

    def __init__(self, dav: WsgiApp, make_console: Callable[[], WsgiApp]) -> None:
        self.dav = dav
        self._make_console = make_console
        self._console: WsgiApp | None = None
        self._making = threading.Lock()

    def console(self) -> WsgiApp:
        if self._console is None:
            with self._making:
                if self._console is None:  # (another thread may have made it meanwhile)
                    self._console = self._make_console()
        return self._console

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if is_console_path(path):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + MOUNT
            environ["PATH_INFO"] = path[len(MOUNT) :]
            return self.console()(environ, start_response)
        if wants_console(environ):
            start_response(
                "303 See Other",
                [("Location", MOUNT + "/"), ("Content-Length", "0"), ("Cache-Control", "no-store")],
            )
            return [b""]
        return self.dav(environ, start_response)
