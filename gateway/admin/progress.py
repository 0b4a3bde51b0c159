"""Progress output for long commands (rotate, fsck, migrate).

On a terminal: one line redrawn in place with counts, rate and ETA.  Not on a
terminal (CI, cron, logs): a plain line at most every ``interval`` seconds.
Always on standard error, so standard output stays parseable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``total_bytes`` (optional) adds bytes and MB/s; a terminal also gets a bar."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        interval: float = 5.0,
        total_bytes: int | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.total_bytes = total_bytes
        self.done_bytes = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval if not self._tty else 0.1
        self._start = time.monotonic()
        self._last = self._start  # the first line after one interval: no wild first rate

    def advance(self, count: int = 1, nbytes: int = 0) -> None:
        self.done += count
        self.done_bytes += nbytes
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._emit(final=False)

    def finish(self) -> None:
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 and self.total else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.label}: {self.done}/{self.total} ({pct:.0f}%), {rate:.0f}/s"
        if self.total_bytes is not None:
            mb, total_mb = self.done_bytes / 1e6, self.total_bytes / 1e6
            text += f", {mb:.1f}/{total_mb:.1f} MB, {mb / elapsed:.1f} MB/s"
        if self._tty and self.total_bytes is not None:
            filled = int(24 * pct / 100)
            text = f"[{'#' * filled}{'.' * (24 - filled)}] " + text
        if not final:
            text += f", ETA {left:.0f}s"
        if self._tty:
            self._stream.write("\r" + text + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
