"""Whose forwarding headers count: the proxies in ``server.trusted_proxies``.

From a trusted proxy the last ``X-Forwarded-For`` entry (the address the proxy
saw; earlier ones are the client's say) becomes the client address, the last
``X-Forwarded-Proto`` entry the request's scheme (``wsgi.url_scheme``: a TLS
proxy before ``clindav serve --no-tls`` makes the console's cookies ``Secure``
and adds HSTS, as clindav's own TLS does), and ``X-Forwarded-Host`` stays for
the doors that read it.  From
anyone else every ``X-Forwarded-*`` and ``Forwarded`` header goes before
anything reads it: a client-sent ``X-Forwarded-Host`` would otherwise pass
WsgiDAV's COPY/MOVE host check, and ``X-Forwarded-For`` would put a lie in
the audit trail.

A proxy on this host that is not trusted is the usual deployment mistake
(docs/HARDENING.md): every client then looks like the proxy, to the audit
log and to the per-address limits alike.  A loopback peer that sends
``X-Forwarded-For`` is therefore logged, once per address and instance, with
the setting that fixes it.

The path guard (gateway/dav/guard.py), the first layer every door's request
passes, judges them before anything else reads the request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from gateway.settings import is_loopback

log = logging.getLogger("clindav.forwarding")

# Set on a request once its headers are judged: several doors judge the same
# request (e.g. the Nextcloud door hands its requests to the WebDAV stack).
_JUDGED = "clindav.forwarding.judged"


class ProxyTrust:
    """One per running instance (``Services.proxies``)."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self.trusted = frozenset(trusted)
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def apply(self, environ: dict[str, Any]) -> None:
        """Keep or drop the request's forwarding headers (see the module doc)."""
        if environ.get(_JUDGED):
            return
        environ[_JUDGED] = True
        peer = environ.get("REMOTE_ADDR", "")
        if peer in self.trusted:
            forwarded_for = environ.get("HTTP_X_FORWARDED_FOR", "")
            if forwarded_for:
                environ["REMOTE_ADDR"] = forwarded_for.split(",")[-1].strip()[:64]
            scheme = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if scheme in ("http", "https"):
                environ["wsgi.url_scheme"] = scheme
            return
        if "HTTP_X_FORWARDED_FOR" in environ:
            self._warn_once(peer)
        for key in [
            k for k in environ if k.startswith("HTTP_X_FORWARDED") or k == "HTTP_FORWARDED"
        ]:
            del environ[key]

    def _warn_once(self, peer: str) -> None:
        if not is_loopback(peer):
            return  # a client's own header: not a proxy of ours
        with self._lock:
            if peer in self._warned:
                return
            self._warned.add(peer)
        log.warning(
            "requests from %s carry X-Forwarded-For, but server.trusted_proxies does not "
            "list %s: the audit log and the per-address limits see every client behind "
            "that proxy as %s. If it is your reverse proxy, add it to "
            "server.trusted_proxies (docs/HARDENING.md).",
            peer,
            peer,
            peer,
        )
