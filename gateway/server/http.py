"""Serving the app with cheroot, over TLS unless on loopback by explicit choice."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

from cheroot import errors, wsgi
from cheroot.makefile import StreamReader, StreamWriter
from cheroot.server import HTTPConnection, HTTPRequest
from cheroot.ssl.builtin import BuiltinSSLAdapter

from gateway.dav.limits import MAX_REQUEST_HEADERS, HeaderFieldsTooLarge
from gateway.errors import ClindavError, ConfigError
from gateway.pipeline import RequestInfo, new_request_id
from gateway.records.audit import AuditLog
from gateway.server import metrics
from gateway.server.responses import ErrorAnswer, refusal_answer
from gateway.settings import Settings, is_loopback

log = logging.getLogger("clindav")
# Explorer and Finder open bursts of connections; cheroot's default backlog
# of 5 makes some of them wait a second for a retransmit.
LISTEN_BACKLOG = 128


class _Request(HTTPRequest):
    """cheroot's request, but a header flood answers 431 (RFC 6585), not 413.

    cheroot reads at most ``max_request_header_size`` bytes of headers and
    raises ``MaxSizeExceeded``; its own answer is "413 Request Entity Too
    Large", which tells a client its *body* is too big.  The refusal happens
    before WSGI, so it is audited (and logged by the audit log) from here.
    """

    server: Server

    def read_request_headers(self) -> bool:
        try:
            return bool(super().read_request_headers())
        except errors.MaxSizeExceeded:
            self._refuse(HeaderFieldsTooLarge(f"request headers over {MAX_REQUEST_HEADERS} bytes"))
            return False

    def respond(self) -> None:
        try:
            super().respond()
        finally:
            self.conn.count_bytes()

    def send_headers(self) -> None:
        """Close the connection after a request whose body framing cannot be trusted, or
        whose unread body is too large to drain.

        RFC 9112 section 6.3: after a request with both ``Transfer-Encoding``
        and ``Content-Length`` the server MUST close the connection.  And
        cheroot drains an unread Content-Length body but not an unread chunked
        one: without closing, the rest of a refused chunked body would be read
        as the next request on this connection.  cheroot's drain waits for the
        whole rest of the body before the answer leaves and holds it in memory
        at once: a stranger's PUT of gigabytes to a 401 was buffered whole.
        Past :data:`MAX_DRAIN` the answer goes at once and the connection
        closes (as cheroot does after a 413; RFC 9112 section 9.6 allows it).
        """
        if self.chunked_read and (
            b"Content-Length" in self.inheaders or not getattr(self.rfile, "closed", True)
        ):
            self.close_connection = True
        if not self.chunked_read and getattr(self.rfile, "remaining", 0) > MAX_DRAIN:
            self.close_connection = True
        super().send_headers()

    def _refuse(self, error: ClindavError) -> None:
        method = (self.method or b"-").decode("latin-1")
        metrics.count_request(method, error.status, error.code)
        agent = self.inheaders.get(b"User-Agent", b"")[:255].decode("latin-1")
        request = RequestInfo(new_request_id(), None, self.conn.remote_addr or "-", agent, method)
        answer = refusal_answer(
            self.server.audit, request, error, https=self.server.ssl_adapter is not None
        )
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client went away: nothing left to tell it
            self.conn.wfile.write(_serialised(self.server.protocol, answer))


def _serialised(protocol: str, answer: ErrorAnswer) -> bytes:
    """An answer written before WSGI, on a connection that closes after it."""
    headers = [*answer.headers, ("Connection", "close")]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"{protocol} {answer.status}\r\n{head}\r\n".encode("latin-1") + answer.body


class _SendallWriter(StreamWriter):
    """Response bytes go out with one ``sendall`` per write.

    cheroot's writer copies every write into a buffer and copies the rest of
    that buffer again after each partial ``send``: a 1 MiB block over a
    200 KiB socket buffer was copied about three times.  ``sendall`` on the
    caller's bytes copies nothing and keeps the socket's timeout.
    """

    def write(self, b: Any) -> int:
        self._checkClosed()
        with self._write_lock:  # type: ignore[attr-defined]
            self._flush_unlocked()  # type: ignore[attr-defined]
            cast(Any, self.raw)._sock.sendall(b)
        self.bytes_written += len(b)
        return len(b)


class _BlockReader(StreamReader):
    """Request bodies read in the caller's blocks, straight into one buffer.

    cheroot's reader (the pure-Python ``_pyio.BufferedReader``) builds a
    read of n bytes from ``raw.read(n)`` calls, each allocating and zeroing
    an n-byte buffer for what one ``recv`` returns, then joins and slices
    the pieces: for WsgiDAV's 1 MiB blocks that is many megabytes of
    copying per block.  A large read here takes what is buffered, then
    ``recv_into`` the block itself (``readinto1``: one system call each;
    ``_pyio``'s ``readinto`` miscounts a refill after a partial one).
    Headers, small reads and reads larger than any block (cheroot draining
    the rest of a refused body: never allocated up front) go cheroot's way.
    """

    def read(self, size: int | None = -1) -> bytes:
        if size is None or not _LARGE_READ <= size <= _MAX_BLOCK:
            return cast(bytes, super().read(size))
        block = bytearray(size)
        with memoryview(block) as view:
            got = 0
            while got < size and (n := self.readinto1(view[got:])):
                got += n
        del block[got:]
        self.bytes_read += got
        return bytes(block)


# The most of a refused request's unread body drained to keep its connection open.
MAX_DRAIN = 64 * 1024
# Reads of these sizes go straight into their block: a body's blocks (server.block_size
# is at most 16 MiB), never headers.
_LARGE_READ = 64 * 1024
_MAX_BLOCK = 16 * 1024 * 1024


class _Connection(HTTPConnection):
    RequestHandlerClass = _Request

    def __init__(self, server: Any, sock: Any, makefile: Any) -> None:
        super().__init__(server, sock, makefile)
        self.rfile = _BlockReader(sock, "rb", self.rbufsize)
        self.wfile = _SendallWriter(sock, "wb", self.wbufsize)
        self._counted = (0, 0)

    def count_bytes(self) -> None:
        """Add what crossed this connection since the last answer to ``/metrics``
        (bytes as the client sent and received them, headers included, TLS removed)."""
        now = (getattr(self.rfile, "bytes_read", 0), self.wfile.bytes_written)
        metrics.count_bytes(now[0] - self._counted[0], now[1] - self._counted[1])
        self._counted = now


class Server(wsgi.Server):
    """cheroot's WSGI server with clindav's request class and an audit log for refusals."""

    ConnectionClass = _Connection
    audit: AuditLog | None = None
    # A socket already bound and listening (``server.workers``): used instead of binding.
    listener: socket.socket | None = None

    def bind(self, family: int, type: int, proto: int = 0) -> socket.socket:
        if self.listener is None:
            return cast(socket.socket, super().bind(family, type, proto))
        sock = self.listener
        if self.ssl_adapter is not None:
            sock = self.ssl_adapter.bind(sock)
        self.socket = sock
        self.bind_addr = self.resolve_real_bind_addr(sock)
        return sock


def check_listen(settings: Settings, *, host: str, tls: bool) -> None:
    """Refuse an address and TLS choice that must not serve, before anything is bound."""
    if not tls and not is_loopback(host):
        raise ConfigError.single(
            "settings",
            "server.tls",
            f"--no-tls is allowed only on loopback addresses, not {host}: drop --no-tls to "
            "serve HTTPS, or serve on 127.0.0.1 behind a TLS proxy (docs/DEPLOY.md)",
        )
    if tls and settings.server.tls is None:
        raise ConfigError.single("settings", "server.tls", "no certificate configured")


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another program listens there (a clindav serve already running?): "
    "stop it or choose another --port",
    errno.EACCES: "ports below 1024 need CAP_NET_BIND_SERVICE (docs/DEPLOY.md, systemd)",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
}


def check_port_free(host: str, port: int) -> None:
    """Refuse an address this process cannot listen on, before anything is bound.

    The workers bind their port with ``SO_REUSEPORT``, which would also let a
    second gateway join a running one's port and take part of its connections
    unnoticed.  This probe binds without it, so any listener there refuses it.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Only a listener counts, not the closed connections of a gateway just stopped.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            hint = _LISTEN_HINTS.get(exc.errno or 0, "")
            problem = f"cannot listen on {host}:{port}: {exc.strerror}" + (
                f"; {hint}" if hint else ""
            )
            raise ConfigError.single("settings", "server.port", problem) from None


def make_server(
    settings: Settings,
    app: Any,
    *,
    host: str,
    port: int,
    tls: bool,
    audit: AuditLog | None = None,
    listener: socket.socket | None = None,
) -> Server:
    check_listen(settings, host=host, tls=tls)
    server = Server(
        (host, port),
        app,
        numthreads=settings.server.threads,
        timeout=settings.server.socket_timeout,
        server_name="clindav",
        request_queue_size=LISTEN_BACKLOG,
    )
    server.listener = listener
    server.max_request_header_size = MAX_REQUEST_HEADERS
    server.audit = audit
    if tls:
        assert settings.server.tls is not None
        server.ssl_adapter = BuiltinSSLAdapter(
            str(settings.resolve(settings.server.tls.cert)),
            str(settings.resolve(settings.server.tls.key)),
        )
    return server


def run_until_signalled(server: wsgi.Server, on_reload: Callable[[], object]) -> None:
    """Serve a prepared server until SIGINT/SIGTERM, then stop cleanly.

    SIGHUP runs ``on_reload`` (the policy reload) in this thread, between
    waits: never inside the signal handler, never twice at once.
    """
    stop = threading.Event()
    wake = threading.Event()
    reloads = 0

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()
        wake.set()

    def _reload(_signum: int, _frame: Any) -> None:
        nonlocal reloads
        reloads += 1
        wake.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    thread = threading.Thread(target=server.serve, name="cheroot", daemon=True)
    thread.start()
    while not stop.is_set():
        wake.wait()
        wake.clear()
        if reloads and not stop.is_set():
            reloads = 0
            on_reload()
    server.stop()
