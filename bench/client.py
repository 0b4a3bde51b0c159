"""A lean WebDAV client (http.client, one keep-alive connection) and load phases.

A *phase* runs ``clients`` threads against one server at once, each doing
``per_client`` requests back to back over its own connection, and measures
the wall time of the whole phase, every request's latency (first byte sent to
last byte received), the bytes moved, and the server's CPU time and memory.
"""

from __future__ import annotations

import base64
import http.client
import re
import select
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from bench import procstat

READ_BUFFER = 1024 * 1024
_RESPONSE_TAG = re.compile(rb"<(?:[A-Za-z0-9_]+:)?response[\s>]")


@dataclass
class Reply:
    """What one request got back; ``body`` is kept only when asked for."""

    status: int
    nbytes: int
    seconds: float
    body: bytes = b""
    error: str = ""
    sent: int = 0


class DavClient:
    """One keep-alive HTTP/1.1 connection with preemptive Basic auth."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None, timeout: float = 300) -> None:
        parsed = urlparse(base_url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.timeout = timeout
        self.headers: dict[str, str] = {"User-Agent": "clindav-bench/1"}
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._buffer = bytearray(READ_BUFFER)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def connect(self) -> None:
        """Open the connection now (phases pre-connect, so they time requests, not SYNs)."""
        self._connection().connect()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        keep_body: bool = False,
    ) -> Reply:
        """Send one request and read the whole response (counted, kept if asked)."""
        start = time.perf_counter()
        try:
            conn = self._connection()
            conn.request(
                method, quote(path), body=body, headers={**self.headers, **(headers or {})}
            )
            reply = self._read(conn.getresponse(), start, keep_body)
            reply.sent = len(body or b"")
            return reply
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Reply(0, 0, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")

    def put_stream(self, path: str, total: int, pieces: Iterable[memoryview]) -> Reply:
        """PUT ``total`` bytes from ``pieces``; stops sending if the server answers early."""
        start = time.perf_counter()
        try:
            conn = self._connection()
            conn.putrequest("PUT", quote(path))
            for name, value in {**self.headers, "Content-Length": str(total)}.items():
                conn.putheader(name, value)
            conn.endheaders()
            sent_error = self._send_pieces(conn, pieces)
            reply = self._read(conn.getresponse(), start, keep_body=True)
            if sent_error:
                reply.error = f"server answered before the body was sent ({sent_error})"
            else:
                reply.sent = total
            return reply
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Reply(0, 0, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _send_pieces(conn: http.client.HTTPConnection, pieces: Iterable[memoryview]) -> str:
        """Send the body; '' when all was sent, else why sending stopped early."""
        sock = conn.sock
        assert sock is not None
        for piece in pieces:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                return "response pending"
            try:
                sock.sendall(piece)
            except OSError as exc:
                return f"{type(exc).__name__}"
        return ""

    def _read(self, resp: http.client.HTTPResponse, start: float, keep_body: bool) -> Reply:
        nbytes = 0
        kept: list[bytes] = []
        view = memoryview(self._buffer)
        while True:
            n = resp.readinto(view)
            if not n:
                break
            nbytes += n
            if keep_body:
                kept.append(bytes(view[:n]))
        if resp.will_close:
            self.close()
        return Reply(resp.status, nbytes, time.perf_counter() - start, b"".join(kept))


def count_responses(multistatus: bytes) -> int:
    """Number of <response> elements in a 207 Multi-Status body."""
    return len(_RESPONSE_TAG.findall(multistatus))


# A request function: (client, client index, request index) -> Reply.
RequestFn = Callable[[DavClient, int, int], Reply]


@dataclass
class PhaseResult:
    """Everything measured in one phase against one server."""

    clients: int
    requests: int
    wall_s: float
    bytes: int
    latencies_s: list[float]
    statuses: dict[str, int]
    errors: list[str]
    server_cpu_s: float
    peak_rss_kib: int
    rss_before_kib: int
    rss_samples_peak_kib: int
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, float | int | None]:
        """The derived figures: MB/s, req/s, p50/p95 ms, CPU ms per request, peak RSS MiB."""
        ok = len(self.latencies_s)
        return {
            "mb_s": self.bytes / 1e6 / self.wall_s if self.wall_s > 0 else None,
            "req_s": self.requests / self.wall_s if self.wall_s > 0 else None,
            "p50_ms": percentile(self.latencies_s, 50) * 1000 if ok else None,
            "p95_ms": percentile(self.latencies_s, 95) * 1000 if ok else None,
            "max_ms": max(self.latencies_s) * 1000 if ok else None,
            "cpu_ms_per_req": self.server_cpu_s * 1000 / self.requests if self.requests else None,
            "peak_rss_mib": self.peak_rss_kib / 1024,
            "rss_before_mib": self.rss_before_kib / 1024,
            "rss_growth_mib": (self.peak_rss_kib - self.rss_before_kib) / 1024,
            "errors": len(self.errors),
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation; honest for small samples)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def run_phase(
    base_url: str,
    auth: tuple[str, str] | None,
    server_pid: int,
    clients: int,
    per_client: int,
    fn: RequestFn,
    ok_statuses: tuple[int, ...],
    first: Callable[[DavClient], object] | None = None,
) -> PhaseResult:
    """Drive ``clients`` x ``per_client`` requests of ``fn`` at one server and measure it.

    ``first``, if given, is sent on each connection before the phase, unmeasured (a
    request that logs in: the worker process it reached then has the login cached)."""
    pool = [DavClient(base_url, auth) for _ in range(clients)]
    replies: list[list[Reply]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        barrier.wait()
        for i in range(per_client):
            replies[index].append(fn(pool[index], index, i))

    for c in pool:
        c.connect()
        if first is not None:
            first(c)
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    procstat.reset_peak_rss(server_pid)
    rss_before = procstat.status_kib(server_pid, "VmRSS")
    cpu_before = procstat.cpu_seconds(server_pid)
    with procstat.RssSampler(server_pid) as sampler:
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    cpu = procstat.cpu_seconds(server_pid) - cpu_before
    peak = max(procstat.status_kib(server_pid, "VmHWM"), sampler.peak_kib())
    for c in pool:
        c.close()
    return _collect(replies, clients, wall, cpu, peak, rss_before, sampler, ok_statuses)


def _collect(
    replies: list[list[Reply]],
    clients: int,
    wall: float,
    cpu: float,
    peak: int,
    rss_before: int,
    sampler: procstat.RssSampler,
    ok_statuses: tuple[int, ...],
) -> PhaseResult:
    flat = [r for per in replies for r in per]
    good = [r for r in flat if r.status in ok_statuses and not r.error]
    errors = [
        f"status {r.status} {r.error} {r.body[:200]!r}".strip()
        for r in flat
        if r.status not in ok_statuses or r.error
    ]
    return PhaseResult(
        clients=clients,
        requests=len(flat),
        wall_s=wall,
        bytes=sum(r.nbytes + r.sent for r in good),
        latencies_s=[r.seconds for r in good],
        statuses=dict(Counter(str(r.status) for r in flat)),
        errors=errors[:10],
        server_cpu_s=cpu,
        peak_rss_kib=peak,
        rss_before_kib=rss_before,
        rss_samples_peak_kib=sampler.peak_kib(),
        extra={"rss_timeline_mib": sampler.timeline_mib()},
    )


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that exist (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
