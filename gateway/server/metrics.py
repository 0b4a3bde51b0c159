"""Prometheus metrics for ``/metrics`` (prometheus-client; docs/DEPLOY.md "Monitoring").

Several worker processes serve one port and a scrape reaches one of them, so
two kinds of values are kept apart:

- **Counts and timings** (requests by method and status, refusals by code,
  bytes in and out, pipeline stage durations) happen in every process.
  They use prometheus-client's multiprocess mode: each process writes its
  values to its own memory-mapped file in one folder per gateway, and a
  scrape adds up every file, including those of workers that were restarted
  (counters never go back).  ``clindav serve`` creates the folder, empty, in
  ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``) or the temp
  folder, never in the instance folder (requests must not change files
  outside the shares), and removes it when it stops.
- **State** (held images, trash items due, the audit chain's length) is the
  database's: computed by a query at scrape time, so it is the same from
  every process and never stale.

Recording is a no-op until :func:`enable` (only ``clindav serve`` enables it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from gateway.db import AuditHead, StoredObject, TrashItem

if TYPE_CHECKING:
    from gateway.services import Services

# HTTP methods get their own label value; anything else counts as "other"
# (a client must not be able to create label values at will).
_METHODS = frozenset(
    [
        "GET",
        "HEAD",
        "OPTIONS",
        "PROPFIND",
        "PROPPATCH",
        "PUT",
        "MKCOL",
        "DELETE",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "POST",
    ]
)
_PREFIX = "clindav-metrics-"
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class _Metrics:
    folder: Path
    requests: Any
    refusals: Any
    received: Any
    sent: Any
    stages: Any


_active: _Metrics | None = None


def enable() -> None:
    """Switch recording on for this process and the workers it forks."""
    global _active
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or tempfile.gettempdir()
    _remove_stale(Path(runtime))
    folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=runtime))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from prometheus_client import Counter, Histogram, values

    # The library picks its value store when first imported, which a plugin may
    # have done before this: choose the multiprocess store explicitly.
    values.ValueClass = values.MultiProcessValue()
    _active = _Metrics(
        folder=folder,
        requests=Counter(
            "clindav_requests", "Requests answered.", ["method", "status"], registry=None
        ),
        refusals=Counter(
            "clindav_refusals", "Requests refused, by error code.", ["code"], registry=None
        ),
        received=Counter("clindav_received_bytes", "Bytes received from clients.", registry=None),
        sent=Counter("clindav_sent_bytes", "Bytes sent to clients.", registry=None),
        stages=Histogram(
            "clindav_stage_duration_seconds",
            "Time an upload spent in each pipeline stage.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=None,
        ),
    )


def enabled() -> bool:
    return _active is not None


def disable() -> None:
    """Stop recording and remove this gateway's values (``clindav serve`` stopping)."""
    global _active
    if _active is not None:
        shutil.rmtree(_active.folder, ignore_errors=True)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == str(_active.folder):
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]  # no later child inherits a removed folder
        _active = None


def _remove_stale(parent: Path) -> None:
    """Values folders of gateways that were killed before they could remove them."""
    for folder in parent.glob(f"{_PREFIX}*-*"):
        pid = folder.name[len(_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def count_request(method: str, status: int, code: str | None) -> None:
    """One answered request; ``code`` (the X-Clindav-Error) for a refusal."""
    if _active is None:
        return
    label = method if method in _METHODS else "other"
    _active.requests.labels(label, str(status)).inc()
    if status >= 400:
        _active.refusals.labels(code or f"http-{status}").inc()


def count_bytes(received: int, sent: int) -> None:
    if _active is None:
        return
    if received:
        _active.received.inc(received)
    if sent:
        _active.sent.inc(sent)


@contextlib.contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Time one stage's work on an upload (refused or not)."""
    if _active is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        _active.stages.labels(stage).observe(time.perf_counter() - started)


def exposition(services: Services) -> tuple[bytes, str]:
    """The scrape's body and content type: every process's counts, the database's state."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if _active is not None:
        MultiProcessCollector(registry, path=str(_active.folder))
    registry.register(_DatabaseState(services))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _DatabaseState:
    """Gauges read from the database when scraped (the same from every process)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        now = self.services.clock.now()
        with self.services.sessions() as session:
            held = session.scalar(
                select(func.count()).where(
                    StoredObject.held_until.is_not(None),
                    ~StoredObject.logical_path.startswith("@trash/"),
                )
            )
            due = session.scalar(
                select(func.count()).where(
                    TrashItem.state == "trashed", TrashItem.purge_after <= now
                )
            )
            chain = session.scalar(select(AuditHead.seq).where(AuditHead.id == 1))
        yield GaugeMetricFamily(
            "clindav_held_images", "Images held until consent is recorded.", value=held or 0
        )
        yield GaugeMetricFamily(
            "clindav_trash_items_due",
            "Trash items whose window has ended and that are not purged yet "
            "(retention or a legal hold keeps some).",
            value=due or 0,
        )
        yield GaugeMetricFamily(
            "clindav_audit_chain_length", "Events in the audit chain.", value=chain or 0
        )
