"""The patient upload pages' request limits (gateway/uploads/throttle.py, gateway/records/rates.py), counted in a
real SQLite database and on the PostgreSQL server, as the gateway's are."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.db import UploadRate, make_engine, make_sessions, prepare_database
from gateway.records.rates import WINDOW
from gateway.uploads.throttle import RateLimited, UploadThrottle
from tests.conftest import _drop_postgres_database, _postgres_database


class StepClock:
    """A fixed time, moved by what the test says."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def now(self) -> dt.datetime:
        return dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC) + self.offset


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database's own upsert counts (gateway/records/rates.py picks it by dialect)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'clindav.db'}"
        prepare_database(url)
        yield url
        return
    name = _postgres_database()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    prepare_database(url)
    yield url
    _drop_postgres_database(name)


def throttle(url: str, clock: StepClock, per_address: int, per_link: int) -> UploadThrottle:
    return UploadThrottle(make_sessions(make_engine(url)), clock, per_address, per_link)


def test_an_address_over_its_limit_is_refused_whatever_the_link(database: str) -> None:
    limits = throttle(database, StepClock(), per_address=2, per_link=100)
    limits.check("192.0.2.1", "link-one")
    limits.check("192.0.2.1", "link-two")
    with pytest.raises(RateLimited) as refused:
        limits.check("192.0.2.1", "link-three")
    assert refused.value.status == 429 and refused.value.code == "upload-rate-limited"
    limits.check("192.0.2.2", "link-three")  # another address is not held back


def test_a_link_over_its_limit_is_refused_from_every_address(database: str) -> None:
    limits = throttle(database, StepClock(), per_address=100, per_link=2)
    limits.check("192.0.2.1", "link")
    limits.check("192.0.2.2", "link")
    with pytest.raises(RateLimited):
        limits.check("192.0.2.3", "link")


def test_two_throttles_on_one_database_share_the_count(database: str) -> None:
    """As two gateway processes do: each its own engine, one count."""
    clock = StepClock()
    first, second = (throttle(database, clock, 100, 3) for _ in range(2))
    first.check("192.0.2.1", "link")
    second.check("192.0.2.1", "link")
    first.check("192.0.2.1", "link")
    with pytest.raises(RateLimited):
        second.check("192.0.2.1", "link")


def test_the_window_slides_and_old_counts_go(database: str) -> None:
    clock = StepClock()
    limits = throttle(database, clock, per_address=100, per_link=4)
    for _ in range(4):
        limits.check("192.0.2.1", "link")
    clock.offset = dt.timedelta(seconds=WINDOW)  # the next period: 4 hits, weighted fully
    with pytest.raises(RateLimited):
        limits.check("192.0.2.1", "link")
    clock.offset = dt.timedelta(seconds=WINDOW * 1.9)  # 10% of the last period still counts
    limits.check("192.0.2.1", "link")
    clock.offset = dt.timedelta(seconds=WINDOW * 5)
    limits.check("192.0.2.1", "link")
    sessions = limits.window.sessions
    with sessions() as session:
        periods = set(session.scalars(select(UploadRate.period)))
        keys = session.scalar(select(func.count(func.distinct(UploadRate.key))))
    assert len(periods) == 1  # older periods' counts deleted
    assert keys == 2  # the address and the link, hashed
    with sessions() as session:
        stored = session.scalars(select(UploadRate.key)).all()
    assert not any("link" in k or "192.0.2.1" in k for k in stored)
