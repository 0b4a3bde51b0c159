"""Time, from one place, and the durations policies are written in.

Every decision that depends on the date (trash windows, retention, holds of
images awaiting consent) asks a :class:`Clock`, so that tests and drills can
run them with short durations and the code has one notion of "now" (UTC).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Protocol

from pydantic import BeforeValidator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


def parse_duration(value: object) -> dt.timedelta:
    """``30d``, ``12h``, ``8y`` (365-day years), ``45s``; a timedelta passes through."""
    if isinstance(value, dt.timedelta):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("a duration such as 30d, 12h, 90m, 45s or 8y")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def aware(when: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes; every time clindav stores is UTC."""
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]
