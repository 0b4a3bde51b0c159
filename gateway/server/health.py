"""``/healthz``, ``/readyz`` and ``/metrics``: for monitors, not WebDAV clients.

:class:`Operations` is the outermost WSGI layer.  It answers these three
paths itself, before the path guard, WsgiDAV and authentication: they take
no credentials, are not shares and are not audited (a monitor scraping every
15 seconds would otherwise fill the audit trail).  Every other request goes
on, and its answer is counted for ``/metrics`` (method, status, refusal code).

- ``/healthz``: liveness, 200 as long as the process answers HTTP.
- ``/readyz``: database, master key, backing shares and lock storage, each
  checked; 200, or 503 naming the failing parts.  The answer names parts and
  shares, never a path, a patient or an error text (those go to the log).
- ``/metrics``: Prometheus text (gateway/server/metrics.py), only to the addresses in
  ``metrics.allow`` (default: loopback); others get 404, as if it did not exist.

Their answers carry the security headers every answer carries
(gateway/server/responses.py), and are never cached.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select

from gateway.db import AuditHead
from gateway.server import metrics
from gateway.server.responses import is_https, secured
from gateway.services import Services
from gateway.storage.keys import key_source

log = logging.getLogger("clindav")
StartResponse = Callable[..., Any]
PATHS = ("/healthz", "/readyz", "/metrics")
_HEADERS = [("Cache-Control", "no-store")]
# A lock token that never exists: reading it exercises the lock storage.
_PROBE_TOKEN = "opaquelocktoken:clindav-readiness-probe"


class Operations:
    def __init__(self, app: Callable[..., Iterable[bytes]], services: Services, locks: Any):
        self.app = app
        self.services = services
        self.locks = locks  # WsgiDAV's lock storage (None: locking off)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in PATHS:
            answer = self._answer(path, environ, secured(start_response, is_https(environ)))
            return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else answer
        method = environ.get("REQUEST_METHOD", "-")

        def counting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = next((v for k, v in headers if k.lower() == "x-clindav-error"), None)
            metrics.count_request(method, int(status.split(" ", 1)[0]), code)
            return start_response(status, headers, exc_info)

        return self.app(environ, counting)

    def _answer(
        self, path: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(
                start_response, "405 Method Not Allowed", b"", extra=(("Allow", "GET, HEAD"),)
            )
        if path == "/healthz":
            return _reply(start_response, "200 OK", b"ok\n")
        if path == "/readyz":
            return self._ready(start_response)
        if not self._may_scrape(environ):
            return _reply(start_response, "404 Not Found", b"404 not-found\n")
        try:
            body, ctype = metrics.exposition(self.services)
        except Exception:  # the database, most likely: say so, as /readyz would
            log.exception("metrics: the database state could not be read")
            return _reply(start_response, "503 Service Unavailable", b"database unavailable\n")
        return _reply(start_response, "200 OK", body, ctype)

    def _may_scrape(self, environ: dict[str, Any]) -> bool:
        """Whether the client (behind a trusted proxy: the address it forwards) may scrape.

        A request forwarded by a proxy that is not trusted comes from someone
        unknown, whatever the proxy's own address: refused.
        """
        proxies = self.services.proxies
        forwarded = "HTTP_X_FORWARDED_FOR" in environ or "HTTP_FORWARDED" in environ
        if forwarded and environ.get("REMOTE_ADDR") not in proxies.trusted:
            return False
        seen = dict(environ)
        proxies.apply(seen)
        try:
            client = ipaddress.ip_address(seen.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        allowed = self.services.settings.metrics.allow
        return any(client in ipaddress.ip_network(net, strict=False) for net in allowed)

    def _ready(self, start_response: StartResponse) -> Iterable[bytes]:
        checks = {
            "database": self._database,
            "key": self._key,
            "shares": self._shares,
            "locks": self._locks,
        }
        results: dict[str, str] = {}
        for part, check in checks.items():
            try:
                results[part] = check()
            except Exception as exc:
                log.warning("readiness: %s failing: %s: %s", part, type(exc).__name__, exc)
                results[part] = "unavailable"
        failing = [part for part, result in results.items() if result != "ok"]
        body = json.dumps(
            {"status": "not-ready" if failing else "ready", "failing": failing, "checks": results},
            sort_keys=True,
        )
        status = "503 Service Unavailable" if failing else "200 OK"
        return _reply(start_response, status, (body + "\n").encode(), "application/json")

    def _database(self) -> str:
        with self.services.sessions() as session:
            session.scalar(select(AuditHead.seq).where(AuditHead.id == 1))
        return "ok"

    def _key(self) -> str:
        """The key source still yields the keys the gateway runs with (file there, private)."""
        loaded = key_source(self.services.settings).load()
        return "ok" if self.services.keys.masters.active_id in loaded.keys else "changed"

    def _shares(self) -> str:
        broken = [
            name
            for name, share in self.services.shares.items()
            if not _usable(str(share.store.root))
        ]
        if broken:
            log.warning("readiness: backing folders unusable: %s", ", ".join(broken))
        return "ok" if not broken else "unusable: " + ", ".join(broken)

    def _locks(self) -> str:
        if self.locks is not None:
            self.locks.get(_PROBE_TOKEN)
        return "ok"


def _usable(folder: str) -> bool:
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


_TEXT = "text/plain; charset=utf-8"


def _reply(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = _TEXT,
    extra: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", content_type), *extra, *_HEADERS, ("Content-Length", str(len(body)))],
    )
    return [body]
