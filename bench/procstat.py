"""Server-side resource figures read from /proc: CPU time and resident memory.

Every figure covers a server's whole process tree (the process started and
its descendants), so a server that forks workers (Apache, or a future
multi-process clindav) is measured completely.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (from /proc/<pid>/task/*/children)."""
    seen: list[int] = []
    todo = [pid]
    while todo and len(seen) < 4096:
        current = todo.pop()
        if current in seen or not Path(f"/proc/{current}").exists():
            continue
        seen.append(current)
        todo.extend(_children(current))
    return seen


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds consumed so far by the tree under ``pid``."""
    total = 0
    for member in process_tree(pid):
        try:
            raw = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (e.g. VmRSS, VmHWM) summed over the tree."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith(key + ":"):
                total += int(line.split()[1])
                break
    return total


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM of every process in the tree (``clear_refs`` 5); False if refused."""
    ok = True
    for member in process_tree(pid):
        try:
            Path(f"/proc/{member}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


class RssSampler:
    """Samples the tree's VmRSS in a thread; measures the peak and its shape over a phase."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set() and len(self.samples) < 100_000:
            self.samples.append((time.perf_counter() - self._start, status_kib(self.pid, "VmRSS")))
            self._stop.wait(self.interval)

    def peak_kib(self) -> int:
        return max((kib for _t, kib in self.samples), default=0)

    def timeline_mib(self, points: int = 20) -> list[tuple[float, float]]:
        """About ``points`` evenly spaced (seconds, MiB) samples: the shape of RSS over time."""
        step = max(1, len(self.samples) // points)
        picked = self.samples[::step]
        if self.samples and picked[-1] is not self.samples[-1]:
            picked.append(self.samples[-1])
        return [(round(t, 2), round(kib / 1024, 1)) for t, kib in picked]

    def first_kib(self) -> int:
        return self.samples[0][1] if self.samples else 0
