"""Serving the app with cheroot, over TLS unless on loopback by explicit choice."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from gateway.errors import ConfigError
from gateway.settings import Settings, is_loopback

log = logging.getLogger("clindav")


def make_server(settings: Settings, app: Any, *, host: str, port: int, tls: bool) -> wsgi.Server:
    if not tls and not is_loopback(host):
        raise ConfigError.single(
            "settings", "server.tls", "--no-tls is allowed only on loopback addresses"
        )
    if tls and settings.server.tls is None:
        raise ConfigError.single("settings", "server.tls", "no certificate configured")
    server = wsgi.Server(
        (host, port),
        app,
        numthreads=settings.server.threads,
        timeout=settings.server.socket_timeout,
        server_name="clindav",
        # Explorer and Finder open bursts of connections; cheroot's default
        # backlog of 5 makes some of them wait a second for a retransmit.
        request_queue_size=128,
    )
    server.max_request_header_size = 64 * 1024
    if tls:
        assert settings.server.tls is not None
        server.ssl_adapter = BuiltinSSLAdapter(
            str(settings.resolve(settings.server.tls.cert)),
            str(settings.resolve(settings.server.tls.key)),
        )
    return server


def run_until_signalled(server: wsgi.Server) -> None:
    """Serve a prepared server until SIGINT/SIGTERM, then stop cleanly."""
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve, name="cheroot", daemon=True)
    thread.start()
    stop.wait()
    server.stop()
