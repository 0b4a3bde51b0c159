"""Per-address and per-link request limits of the patient upload pages.

Counted in the database's sliding window (gateway/records/rates.py), so that
every serving process and every gateway on the same database count together;
refused requests count too.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.errors import ClindavError
from gateway.records.rates import RateWindow


class RateLimited(ClindavError):
    status = 429
    code = "upload-rate-limited"
    message = (
        "Too many requests from this address or for this link; wait a few minutes and try again."
    )


class UploadThrottle:
    def __init__(
        self, sessions: sessionmaker[Session], clock: Clock, per_address: int, per_link: int
    ) -> None:
        self.window = RateWindow(sessions, clock)
        self.per_address = per_address
        self.per_link = per_link

    def check(self, address: str, token: str | None) -> None:
        if not self.window.allows("address", address, self.per_address):
            raise RateLimited(f"address {address} over uploads.address_rate")
        if token is not None and not self.window.allows("link", token, self.per_link):
            raise RateLimited("link over uploads.link_rate")
