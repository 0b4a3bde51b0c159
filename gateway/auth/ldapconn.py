"""Connections to the directory, for gateway/auth/ldap.py.

Contract: :meth:`LdapConnections.open` returns a connection to the first
server (in ``auth.ldap.servers`` order, or round robin) that answers, with TLS
established and the certificate verified against ``ca_file`` (or the system
CAs) and the host name, but not yet bound; :meth:`LdapConnections.run` runs
an operation on a bound service-account connection from a small pool.
Errors: when no server answers, TLS fails, the service account is refused or
the pool stays busy, both raise :class:`~gateway.errors.ServiceUnavailable`
with the reason in ``detail`` (never a password).  A missing CA file or bind
password is a :class:`~gateway.errors.ConfigError` when the object is built.

Threads: a connection is used by one thread at a time.  ldap3 ``Server``
objects carry per-connection state (the address in use), so every connection
gets its own.  Failover is ours rather than ldap3's ``ServerPool``: that one
sleeps ``POOLING_LOOP_TIMEOUT`` (a global, 10 s) after a failed cycle and
keeps a state entry for every connection object it has seen.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from ldap3 import ANONYMOUS, NONE, SIMPLE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException

from gateway.errors import ConfigError, ServiceUnavailable
from gateway.settings import LdapSettings

log = logging.getLogger("clindav.ldap")

T = TypeVar("T")


class _Servers:
    """Failover order: a server that failed is skipped for ``retry_after`` s,
    unless every server has failed (then all are tried, so service returns as
    soon as one answers)."""

    def __init__(self, urls: list[str], strategy: str, retry_after: float) -> None:
        self._urls = list(urls)
        self._round_robin = strategy == "round_robin"
        self._retry_after = retry_after
        self._down_until: dict[str, float] = {}
        self._next = 0
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        with self._lock:
            start = self._next
            if self._round_robin:
                self._next = (self._next + 1) % len(self._urls)
            urls = self._urls[start:] + self._urls[:start]
            now = time.monotonic()
            up = [u for u in urls if self._down_until.get(u, 0.0) <= now]
            return up or urls

    def failed(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = time.monotonic() + self._retry_after

    def answered(self, url: str) -> None:
        with self._lock:
            self._down_until.pop(url, None)


def close(conn: Connection) -> None:
    with suppress(LDAPException, OSError):
        conn.unbind()


class LdapConnections:
    """Opening connections (failover, TLS) and the service-account pool."""

    def __init__(self, conf: LdapSettings, resolve: Callable[[Path], Path] = Path) -> None:
        self.conf = conf
        self._servers = _Servers(conf.servers, conf.pool_strategy, conf.server_retry_after)
        self._tls = _make_tls(conf, resolve)
        self._bind_password = _bind_password(conf, resolve)
        self._pool = _ServicePool(self.service_connection, conf.pool_size, conf.timeout)

    def open(self, user: str | None = None, password: str | None = None) -> Connection:
        """A connection to the first server that answers, TLS established, not bound."""
        problems = []
        for url in self._servers.order():
            conn = self._connection(url, user, password)
            try:
                conn.open(read_server_info=False)
                # ldap3 writes a request in pieces: without this, Nagle and the
                # peer's delayed ACK add ~40 ms to every bind.
                conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.conf.tls == "starttls":
                    conn.start_tls(read_server_info=False)  # raises unless TLS is up
            except Exception as exc:  # ldap3 re-raises socket and TLS errors of any type
                close(conn)
                self._servers.failed(url)
                problems.append(f"{url}: {exc}")
                continue
            self._servers.answered(url)
            return conn
        raise ServiceUnavailable("ldap: no server reachable: " + "; ".join(problems))

    def _connection(self, url: str, user: str | None, password: str | None) -> Connection:
        parts = urlparse(url)
        server = Server(
            parts.hostname,
            port=parts.port or (636 if parts.scheme == "ldaps" else 389),
            use_ssl=parts.scheme == "ldaps",
            tls=self._tls,
            get_info=NONE,
            connect_timeout=self.conf.connect_timeout,
        )
        return Connection(
            server,
            user=user,
            password=password,
            authentication=SIMPLE if user else ANONYMOUS,
            client_strategy=SYNC,
            raise_exceptions=False,
            auto_referrals=False,  # a referral must not carry our binds elsewhere
            auto_escape=False,  # callers escape every value themselves
            receive_timeout=self.conf.timeout,
            read_only=True,
        )

    def service_connection(self) -> Connection:
        conn = self.open(self.conf.bind_dn, self._bind_password)
        try:
            bound = conn.bind(read_server_info=False)
        except LDAPException as exc:
            close(conn)
            raise ServiceUnavailable(f"ldap: service bind: {exc}") from None
        if not bound:
            result = conn.result
            close(conn)
            log.error("ldap: the service account %s was refused: %s", self.conf.bind_dn, result)
            raise ServiceUnavailable(f"ldap: service bind refused: {result.get('description')}")
        return conn

    def run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` on a pooled service connection (see _ServicePool)."""
        return self._pool.run(operation)


class _VerifiedTls(Tls):
    """ldap3's Tls, with the standard library doing every check in the handshake.

    One ``ssl.create_default_context`` (shared by all threads, as SSLContext
    allows): TLS 1.2 at least, the chain verified against ``ca_file`` or the
    system CAs, and the host name (DNS or IP SAN) checked by ``ssl`` itself.
    ldap3's own check uses ``ssl.match_hostname``, gone in Python 3.12.
    """

    def __init__(self, ca_file: Path | None) -> None:
        super().__init__(
            validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file) if ca_file else None
        )
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )


def _make_tls(conf: LdapSettings, resolve: Callable[[Path], Path]) -> Tls | None:
    if conf.tls == "none":
        return None
    ca = resolve(conf.ca_file) if conf.ca_file else None
    if ca is not None and not ca.is_file():
        raise ConfigError.single("settings", "auth.ldap.ca_file", f"{ca} is not a file")
    try:
        return _VerifiedTls(ca)
    except (ssl.SSLError, LDAPException) as exc:
        raise ConfigError.single("settings", "auth.ldap.ca_file", f"{ca}: {exc}") from None


def _bind_password(conf: LdapSettings, resolve: Callable[[Path], Path]) -> str | None:
    if conf.bind_password_env:
        value = os.environ.get(conf.bind_password_env, "")
        if not value:
            raise ConfigError.single(
                "settings",
                "auth.ldap.bind_password_env",
                f"${conf.bind_password_env} is unset or empty",
            )
        return value
    if conf.bind_password_file:
        path = resolve(conf.bind_password_file)
        try:
            value = path.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise ConfigError.single(
                "settings", "auth.ldap.bind_password_file", f"{path}: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError.single("settings", "auth.ldap.bind_password_file", f"{path} is empty")
        return value
    return None


class _ServicePool:
    """Bound service-account connections, each used by one thread at a time.

    At most ``size`` exist; a thread waits up to ``wait`` s for one (then 503).
    A pooled connection the server has dropped (restart, idle timeout) fails
    its first operation: it is thrown away and the operation runs once more on
    a fresh connection, so a directory restart needs no gateway restart.
    """

    max_idle = 120.0

    def __init__(self, connect: Callable[[], Connection], size: int, wait: float) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._wait = wait
        self._idle: list[tuple[float, Connection]] = []
        self._lock = threading.Lock()

    def run(self, operation: Callable[[Connection], T]) -> T:
        with self._slot():
            conn = self._take()
            if conn is not None:
                try:
                    result = operation(conn)
                except (LDAPException, ServiceUnavailable):
                    close(conn)  # stale: once more on a fresh connection
                else:
                    self._give_back(conn)
                    return result
            conn = self._connect()
            try:
                result = operation(conn)
            except LDAPException as exc:
                close(conn)
                raise ServiceUnavailable(f"ldap: {type(exc).__name__}: {exc}") from None
            except BaseException:
                close(conn)
                raise
            self._give_back(conn)
            return result

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self._wait):
            raise ServiceUnavailable("ldap: every service connection is busy")
        try:
            yield
        finally:
            self._slots.release()

    def _take(self) -> Connection | None:
        """The most recently used idle connection; older ones past max_idle are closed."""
        with self._lock:
            now = time.monotonic()
            stale = [c for t, c in self._idle if now - t >= self.max_idle]
            self._idle = [(t, c) for t, c in self._idle if now - t < self.max_idle]
            conn = self._idle.pop()[1] if self._idle else None
        for old in stale:
            close(old)  # outside the lock: unbind talks to the server
        return conn

    def _give_back(self, conn: Connection) -> None:
        with self._lock:
            self._idle.append((time.monotonic(), conn))
