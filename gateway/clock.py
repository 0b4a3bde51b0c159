"""Time, from one place, and the durations policies are written in.

Every decision that depends on the date (trash windows, retention, holds of
images awaiting consent) asks a :class:`Clock`, so that tests and drills can
run them with short durations and the code has one notion of "now" (UTC).

Tests move an instance's time forward without waiting:
``CLINDAV_TEST_CLOCK=<file>`` in the environment of ``clindav serve`` and of
the ``clindav`` commands makes :func:`instance_clock` an :class:`OffsetClock`,
which adds the duration written in that file (``30d``, ``1y``; empty: none)
to the system time at every reading.  Unset, as in production, the clock is
the system clock and the file is never looked at.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import BeforeValidator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


TEST_CLOCK = "CLINDAV_TEST_CLOCK"


class OffsetClock:
    """Test-only: the system time plus the duration in ``path``, read at every call.

    Decisions in the gateway and in a ``clindav`` command see the same time, and
    a test advances both by rewriting one file instead of sleeping.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> dt.datetime:
        text = self.path.read_text().strip() if self.path.exists() else ""
        return dt.datetime.now(dt.UTC) + (parse_duration(text) if text else dt.timedelta())


def instance_clock() -> Clock:
    """The clock of a gateway or command: the system's, unless a test set :data:`TEST_CLOCK`."""
    path = os.environ.get(TEST_CLOCK)
    if not path:
        return SystemClock()
    logging.getLogger("clindav.clock").warning(
        "%s is set: time is the system time plus the offset in %s (tests only)", TEST_CLOCK, path
    )
    return OffsetClock(Path(path))


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
