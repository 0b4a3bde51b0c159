"""Several serving processes on one port (``server.workers``).

One Python process serves on one core at a time (the GIL); a practice's
gateway machine has several.  The parent process binds one listening socket
per worker with ``SO_REUSEPORT`` (the kernel spreads new connections over
them), forks the workers, and then only supervises: it forwards SIGTERM,
SIGINT and SIGHUP (policy reload, gateway/server/reload.py), and restarts a worker
that dies unexpectedly.  Each worker builds its
own services (database engine, key store, authenticator) after the fork, so
no connection or thread crosses it.

Everything that must be shared lives outside the processes already: the
registry, the audit chain (ordered by its head row and, for SQLite, an
``flock``), dead properties, and locks (``locks.storage`` database or Redis;
``memory`` forces a single worker).  Per process, in memory: the login cache
and throttle, and the sizes of client junk answered but never stored.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger("clindav")

# A worker that dies within this many seconds of starting is not restarted in
# a loop: the gateway stops instead (a configuration or environment problem).
_MIN_UPTIME = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` listening sockets on one address; the first picks the port when 0."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def run_workers(sockets: list[socket.socket], serve: Callable[[int, socket.socket], None]) -> int:
    """Fork one worker per socket running ``serve(index, sock)``; supervise until signalled.

    Returns the exit status for the command: 0 after a clean stop, 1 when a
    worker kept dying at start-up.
    """
    children: dict[int, tuple[int, float]] = {}
    stopping = False

    parent = os.getpid()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                _die_with(parent)
                for other, sock in enumerate(sockets):
                    if other != index:
                        sock.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker can reload
                serve(index, sockets[index])
            except BaseException:
                log.exception("worker %d failed", index)
                status = 1
            finally:
                os._exit(status)
        children[pid] = (index, time.monotonic())

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        log.info("signal %d: stopping %d workers", signum, len(children))
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:
        log.info("signal %d: reloading the policy in %d workers", signum, len(children))
        for pid in children:
            _signal(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    for index in range(len(sockets)):
        spawn(index)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index, started = children.pop(pid, (-1, 0.0))
        if stopping or index < 0:
            continue
        log.error("worker %d (pid %d) exited with status %d", index, pid, status)
        if time.monotonic() - started < _MIN_UPTIME:
            failed = True
            stop(signal.SIGTERM, None)
        else:
            spawn(index)
    for sock in sockets:
        sock.close()
    return 1 if failed else 0


def _die_with(parent: int) -> None:
    """Never outlive the supervisor: a killed parent takes its workers along (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, signum)
