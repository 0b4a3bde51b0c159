"""A WSGI app made at its first request, once per process.

The console and the patient pages are Flask apps: a worker that serves only
WebDAV never loads Flask, Jinja2 and WTForms (their memory), and a command
never does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class LazyApp:
    def __init__(self, make: Callable[[], WsgiApp]) -> None:
        self._make = make
        self._app: WsgiApp | None = None
        self._making = threading.Lock()

    def app(self) -> WsgiApp:
        if self._app is None:
            with self._making:
                if self._app is None:  # (another thread may have made it meanwhile)
                    self._app = self._make()
        return self._app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self.app()(environ, start_response)
