"""Scaling out: two gateway processes over one backing share, with PostgreSQL
for the registry and keys and Redis for WebDAV locks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import Instance, start_gateway
from tests.integration.test_dav_methods import LOCK_BODY

REDIS_DB = 11  # a database of its own, flushed around the test


@pytest.fixture
def shared_redis() -> Iterator[str]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis at 127.0.0.1:6379 is required for this test: {exc}")
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()
    client.close()


@pytest.mark.parametrize("instance", ["postgres"], indirect=True)
def test_two_gateways_share_files_keys_and_locks(instance: Instance, shared_redis: str) -> None:
    settings = instance.settings()
    settings["locks"] = {"storage": shared_redis}
    instance.write_settings(settings)
    first, second = start_gateway(instance), start_gateway(instance)
    try:
        a, b = first.session("alice"), second.session("ivy")
        url_a, url_b = f"{first.url}/documents/shared.txt", f"{second.url}/documents/shared.txt"
        assert a.put(url_a, data=b"written through the first gateway").status_code == 201
        # Same names, same keys: the second process reads what the first wrote.
        assert b.get(url_b).content == b"written through the first gateway"

        lock = a.request("LOCK", url_a, data=LOCK_BODY, headers={"Timeout": "Second-300"})
        assert lock.status_code == 200
        token = lock.headers["Lock-Token"]
        # The lock lives in Redis, so the other process honours it.
        assert b.put(url_b, data=b"overwrite attempt").status_code == 423
        second_alice = second.session("alice")
        assert (
            second_alice.put(url_b, data=b"with token", headers={"If": f"({token})"}).status_code
            == 204
        )
        assert a.request("UNLOCK", url_a, headers={"Lock-Token": token}).status_code == 204
        assert b.put(url_b, data=b"after unlock").status_code == 204
        assert a.get(url_a).content == b"after unlock"
    finally:
        first.stop()
        second.stop()
