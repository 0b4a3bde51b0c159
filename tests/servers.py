"""The gateway and the CLI inside the test process: same wiring, no process start.

``clindav serve`` costs a test about three seconds (a Python start, the
imports, the checks); most tests only need a real gateway on a real socket.
:func:`start_in_process` builds it with the code ``clindav serve`` runs
(gateway/app.py's ``build_services`` and ``build_app``, gateway/cli/serve.py's
``worker_server`` and background threads, cheroot on a loopback port) and
serves it from a thread of this process.  What a separate process is needed
for stays on :func:`tests.conftest.start_gateway`: killing or signalling the
gateway, worker processes, its exit status or stderr, its working folder.

:func:`run_cli_in_process` runs a ``clindav`` command through
``gateway.cli.main.main`` with its own stdin, stdout, stderr and log handler,
and answers as :func:`subprocess.run` would.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from traceback import format_exc, print_exc
from typing import TextIO

from gateway import decoding
from gateway.app import build_services
from gateway.cli.main import main
from gateway.cli.serve import background_threads, worker_server
from gateway.records.scheduler import AuditAnchor, TrashSweeper
from gateway.server import metrics
from gateway.server.http import Server
from gateway.settings import load_settings

# The format of ``clindav``'s stderr log (gateway/cli/main.py).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _GatewayRecords(logging.Filter):
    """A gateway's records: its threads', and the test thread's while it starts.

    The test thread also runs in-process commands and test code whose log
    lines a separate ``clindav serve`` would never have written.
    """

    def __init__(self) -> None:
        super().__init__()
        self.test_thread = threading.get_ident()
        self.starting = True

    def filter(self, record: logging.LogRecord) -> bool:
        return self.starting or record.thread != self.test_thread


@dataclass
class InProcessServing:
    """What one in-process gateway runs: undone in reverse by :meth:`close`."""

    log_file: TextIO
    handler: logging.Handler
    level: int
    server: Server | None = None
    thread: threading.Thread | None = None
    background: list[TrashSweeper | AuditAnchor] = field(default_factory=list)
    engine_disposers: list[Callable[[], None]] = field(default_factory=list)
    metrics: bool = False  # this gateway enabled (and so disables) the metrics
    closed: bool = False

    def close(self) -> None:
        """Stop serving and undo the rest; a second call (a test stopped it) does nothing."""
        if self.closed:
            return
        self.closed = True
        if self.server is not None:
            self.server.stop()
        if self.thread is not None:
            self.thread.join(15)
        for worker in self.background:
            worker.stop()
        for worker in self.background:
            worker.join(15)
        for dispose in self.engine_disposers:
            dispose()
        if self.metrics:
            metrics.disable()
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)
        self.handler.close()
        self.log_file.close()


def serve_in_process(config: Path, log_path: Path, *, tls: bool) -> tuple[str, InProcessServing]:
    """Start serving ``config`` on a free loopback port; the URL and what to close."""
    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed by InProcessServing.close
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    records = _GatewayRecords()
    handler.addFilter(records)
    root = logging.getLogger()
    serving = InProcessServing(log_file, handler, root.level)
    root.addHandler(handler)
    try:
        settings = load_settings(config)
        root.setLevel(settings.log_level.upper())
        services = build_services(settings)
        serving.engine_disposers.append(services.sessions.kw["bind"].dispose)
        if not metrics.enabled():  # one values folder per process: the first gateway's
            metrics.enable()
            serving.metrics = True
        server = worker_server(services, host="127.0.0.1", port=0, tls=tls, listener=None)
        server.error_log = _error_log(log_file)  # type: ignore[method-assign]
        # cheroot's stop waits for its connection loop, which wakes every
        # expiration_interval (0.5 s) to expire idle connections: a tenth of that
        # stops a test's gateway at once and still expires them long before any
        # client timeout.
        server.expiration_interval = 0.05
        serving.server = server
        serving.background = background_threads(services)
        serving.thread = threading.Thread(target=server.serve, name="cheroot", daemon=True)
        serving.thread.start()
        for worker in serving.background:
            worker.start()
    except BaseException:
        serving.close()
        raise
    records.starting = False
    host, port = server.bind_addr[:2]
    return f"{'https' if tls else 'http'}://{host}:{port}", serving


def _error_log(stream: TextIO) -> Callable[..., None]:
    """cheroot's error log, which writes to the process's stderr, into the gateway's log."""

    def error_log(msg: str = "", level: int = 20, traceback: bool = False) -> None:
        stream.write(f"{msg!s}\n")
        if traceback:
            stream.write(format_exc())

    return error_log


def run_cli_in_process(argv: Sequence[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``clindav ARGV`` through its ``main``, answered as :func:`subprocess.run` would."""
    out, err = io.StringIO(), io.StringIO()
    budget = decoding.BUDGET  # the command sizes its own: an in-process gateway keeps its
    with _command_streams(io.StringIO(stdin), out, err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: usage errors and --help
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=err)
        except Exception:  # as an uncaught exception ends the process: traceback, status 1
            print_exc(file=err)
            code = 1
        finally:
            decoding.BUDGET = budget
    return subprocess.CompletedProcess(["clindav", *argv], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _command_streams(stdin: TextIO, out: TextIO, err: TextIO) -> Iterator[None]:
    """The command's standard streams, and its log records on its stderr in its format.

    ``main`` calls ``logging.basicConfig``, a no-op once the root logger has a
    handler: the handler added here, removed (with the level) afterwards.  It
    takes the test thread's records only: an in-process gateway's threads log
    to the gateway's log, as they would in their own process.
    """
    root = logging.getLogger()
    level = root.level
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_ThisThread())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    saved = sys.stdin
    sys.stdin = stdin
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        sys.stdin = saved
        root.removeHandler(handler)
        root.setLevel(level)


class _ThisThread(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread
