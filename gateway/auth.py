"""Authentication: who is asking.

Contract of an authenticator (Radicale's shape): :meth:`Authenticator.login`
is a fixed template (input checks, a short cache of successful logins, a
constant delay after a failure); a backend overrides only :meth:`_login`,
which returns a :class:`Principal` or ``None`` for bad credentials, and raises
:class:`~gateway.errors.ServiceUnavailable` when its store cannot be reached
(clindav then answers 503: it never falls back to anything weaker).

Nothing about one user is ever kept on the authenticator object between
calls except the cache, which is keyed by a salted hash of the credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.db import LocalUser
from gateway.errors import ServiceUnavailable


@dataclass(frozen=True)
class Principal:
    """An authenticated user and the groups the policy knows them by."""

    uid: str
    groups: frozenset[str]


class Authenticator(ABC):
    """Template for every account backend."""

    cache_ttl: float = 60.0
    failure_delay: float = 0.5

    def __init__(self) -> None:
        self._salt = os.urandom(16)
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._cache_lock = threading.Lock()

    def login(self, user: str, password: str) -> Principal | None:
        """The principal for these credentials, or None (after a fixed delay)."""
        if not user or not password or len(user) > 255 or len(password) > 1024:
            # An empty password is an anonymous bind on many directories.
            time.sleep(self.failure_delay)
            return None
        key = hashlib.sha256(self._salt + user.encode() + b"\0" + password.encode()).digest()
        cached = self._cached(key)
        if cached is not None:
            return cached
        principal = self._login(user, password)
        if principal is None:
            time.sleep(self.failure_delay)
            return None
        with self._cache_lock:
            self._cache[key] = (time.monotonic() + self.cache_ttl, principal)
        return principal

    def _cached(self, key: bytes) -> Principal | None:
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._cache[key]
                return None
            return entry[1]

    def forget(self) -> None:
        """Drop every cached login (after an account change)."""
        with self._cache_lock:
            self._cache.clear()

    @abstractmethod
    def _login(self, user: str, password: str) -> Principal | None:
        """Check the credentials against the backend; see the module contract."""


# scrypt parameters: 2**15 x 8 costs ~50 ms and 32 MiB, the OWASP floor.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    """A self-describing scrypt hash: ``scrypt$N$r$p$salt$hash`` (hex)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, bytes.fromhex(digest))


# Compared against when the user does not exist, so both paths cost the same.
_DUMMY_HASH = hash_password(os.urandom(16).hex())


class LocalAuthenticator(Authenticator):
    """Accounts kept in clindav's own database (``clindav user add``)."""

    def __init__(self, sessions: sessionmaker) -> None:
        super().__init__()
        self._sessions = sessions

    def _login(self, user: str, password: str) -> Principal | None:
        try:
            with self._sessions() as session:
                row = session.get(LocalUser, user)
                stored = row.password_hash if row else _DUMMY_HASH
                groups = frozenset(row.groups) if row else frozenset()
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"user store unreachable: {exc}") from None
        if not verify_password(password, stored) or row is None:
            return None
        return Principal(uid=user, groups=groups)
