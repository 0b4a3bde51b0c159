"""WebDAV locks in Redis (``locks.storage: redis://...``), failing closed.

Its own module so that redis-py is loaded only by a gateway whose settings
name a Redis (gateway/app.py imports it then): every other process is
spared its memory (docs/BENCHMARKS.md, idle worker).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from wsgidav.lock_man.lock_storage_redis import LockStorageRedis

from gateway.change import ChangeSessions
from gateway.dav.locks import kept_if_committed
from gateway.errors import LockStorageUnavailable

# A Redis that does not answer within this long is down: 503 within about this
# bound (one attempt, no retries), not a request hanging on redis-py's defaults.
REDIS_WAIT_SECONDS = 1.0


def _redis_down(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: RedisLockStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            raise LockStorageUnavailable(f"redis: {type(exc).__name__}: {exc}") from None

    return wrapper


class RedisLockStorage(LockStorageRedis):
    """WsgiDAV's Redis lock storage (``locks.storage: redis://...``), failing closed.

    An unreachable Redis is ``503 lock-storage-unavailable`` after at most
    :data:`REDIS_WAIT_SECONDS` per call, and a lock taken by a request whose
    change does not commit (gateway/change.py) is deleted again.
    """

    def __init__(self, sessions: ChangeSessions, **server: Any) -> None:
        super().__init__(**server)
        self._sessions = sessions

    def open(self) -> None:
        self._redis = redis.Redis(
            host=self._redis_host,
            port=self._redis_port,
            db=self._redis_db,
            password=self._redis_password,
            socket_connect_timeout=REDIS_WAIT_SECONDS,
            socket_timeout=REDIS_WAIT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )

    get = _redis_down(LockStorageRedis.get)
    refresh = _redis_down(LockStorageRedis.refresh)
    delete = _redis_down(LockStorageRedis.delete)
    get_lock_list = _redis_down(LockStorageRedis.get_lock_list)
    clear = _redis_down(LockStorageRedis.clear)

    @_redis_down
    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        return kept_if_committed(self._sessions, super().create, self.delete, path, lock)
