"""Per-address and per-link request limits of the patient upload pages.

A sliding window of 10 minutes, counted in this serving process's memory
(each of ``server.workers`` counts on its own, so the limits are per
process): enough to stop a script trying links or dates of birth at speed,
which the link's 192 bits and its ``uploads.dob_tries`` lock already make
pointless, and to keep one client from filling a worker with uploads.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from gateway.errors import ClindavError

WINDOW = 600.0
_MAX_KEYS = 100_000  # beyond this, the oldest keys are forgotten (memory stays bounded)


class RateLimited(ClindavError):
    status = 429
    code = "upload-rate-limited"
    message = (
        "Too many requests from this address or for this link; wait a few minutes and try again."
    )


class SlidingWindow:
    """At most ``limit`` hits per key in any ``WINDOW`` seconds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> bool:
        """Count a request; False when it is over the limit (it is not counted then)."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.pop(key, None) or deque()
            while hits and hits[0] <= now - WINDOW:
                hits.popleft()
            allowed = len(hits) < self.limit
            if allowed:
                hits.append(now)
            self._hits[key] = hits  # re-inserted: the dict's order is least recently used first
            while len(self._hits) > _MAX_KEYS:
                self._hits.pop(next(iter(self._hits)))
        return allowed


class UploadThrottle:
    def __init__(self, per_address: int, per_link: int) -> None:
        self.addresses = SlidingWindow(per_address)
        self.links = SlidingWindow(per_link)

    def check(self, address: str, token: str | None) -> None:
        if not self.addresses.hit(address):
            raise RateLimited(f"address {address} over uploads.address_rate")
        if token is not None and not self.links.hit(token):
            raise RateLimited("link over uploads.link_rate")
