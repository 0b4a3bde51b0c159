"""Authentication: who is asking.

Contract of an authenticator (Radicale's shape): :meth:`Authenticator.login`
is a fixed template (input checks, a short cache of successful logins, a
constant delay after a failure); a backend overrides only :meth:`_login`,
which returns a :class:`Principal` or ``None`` for bad credentials, and raises
:class:`~gateway.errors.ServiceUnavailable` when its store cannot be reached
(clindav then answers 503: it never falls back to anything weaker).

Nothing about one user is ever kept on the authenticator object between
calls except the cache, which is keyed by a salted hash of the credentials,
and, when a backend sets one, the :class:`LoginThrottle`: failed logins per
user and per client address; once either is over its limit the template
raises :class:`LoginThrottled` (429) without calling the backend.  A backend
may refuse a cached login (e.g. during an outage) in :meth:`_on_cache_hit`.

App passwords (gateway/auth/apppasswords.py, the Nextcloud apps' devices)
go through the same template: a password of their shape is looked up first,
and a backend says in :meth:`_principal_of` who the account is now (enabled,
its current groups); a revoked one stops at the next request, cached or not.
Each accepted one notes the device's use (:meth:`AppPasswords.note_use`, at
most once per few minutes; a failure to note it is logged, not a refusal).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import threading
import time
import unicodedata
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.auth.apppasswords import AppPasswords, is_app_password
from gateway.db import LocalUser
from gateway.errors import ClindavError, DatabaseUnavailable
from gateway.settings import ThrottleSettings


@dataclass(frozen=True)
class Principal:
    """An authenticated user and the groups the policy knows them by."""

    uid: str
    groups: frozenset[str]


class LoginThrottled(ClindavError):
    status = 429
    code = "login-throttled"
    message = "Too many failed logins for this account or address; try again in a few minutes."


class LoginThrottle:
    """Failed logins per user and per client address in a sliding window.

    Per process, in memory, thread-safe.  A limit of 0 switches that key off.
    User names are counted in their normalised form (NFKC, case-folded):
    directories match ``ALICE`` and its fullwidth form to one entry, so
    each spelling must not get fresh tries.  A backend that resolves the name
    to an account (the LDAP entry's DN) also counts per account
    (:meth:`check_account`, :meth:`failed_account`, under the per-user limit),
    which catches spellings only the directory folds.  A success clears the
    user's count, never the address's (one valid account must not reset a
    guessing address).
    """

    max_keys = 100_000  # bounds memory under a flood of invented names

    def __init__(
        self,
        per_user: int,
        per_address: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"user": per_user, "account": per_user, "address": per_address}
        self._window = window
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def configured(cls, conf: ThrottleSettings) -> LoginThrottle:
        return cls(conf.max_failures_per_user, conf.max_failures_per_address, conf.window)

    def check(self, user: str, client: str) -> None:
        """Raise LoginThrottled when the user or the address is over its limit."""
        self._check_keys(self._keys(user, client))

    def failed(self, user: str, client: str) -> None:
        self._failed_keys(self._keys(user, client))

    def _check_keys(self, keys: list[tuple[str, str]]) -> None:
        now = self._clock()
        with self._lock:
            for kind, key in keys:
                times = self._recent(kind, key, now)
                if self._limits[kind] and len(times) >= self._limits[kind]:
                    raise LoginThrottled(f"{kind} {key!r}: {len(times)} failed logins in window")

    def _failed_keys(self, keys: list[tuple[str, str]]) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._sweep(now)
            for kind, key in keys:
                limit = self._limits[kind]
                if limit:
                    self._failures.setdefault((kind, key), deque(maxlen=limit)).append(now)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(("user", _user_key(user)), None)

    def check_account(self, account: str) -> None:
        """Raise LoginThrottled when the resolved account is over the per-user limit."""
        self._check_keys([("account", account)])

    def failed_account(self, account: str) -> None:
        self._failed_keys([("account", account)])

    def succeeded_account(self, account: str) -> None:
        with self._lock:
            self._failures.pop(("account", account), None)

    @staticmethod
    def _keys(user: str, client: str) -> list[tuple[str, str]]:
        return [("user", _user_key(user)), ("address", client)]

    def _recent(self, kind: str, key: str, now: float) -> deque[float]:
        times = self._failures.get((kind, key), deque())
        while times and times[0] <= now - self._window:
            times.popleft()
        return times

    def _sweep(self, now: float) -> None:
        for entry in list(self._failures):
            if not self._recent(*entry, now):
                del self._failures[entry]
        while len(self._failures) >= self.max_keys:  # still full: forget the oldest keys
            del self._failures[next(iter(self._failures))]


def _user_key(user: str) -> str:
    # NFKC, case folding, NFKC again (Unicode's NFKC_Casefold, less the
    # default-ignorables): fullwidth, compatibility and case variants meet.
    folded = unicodedata.normalize("NFKC", user).casefold()
    return unicodedata.normalize("NFKC", folded).strip()


class Authenticator(ABC):
    """Template for every account backend."""

    cache_ttl: float = 60.0
    failure_delay: float = 0.5
    throttle: LoginThrottle | None = None
    app_passwords: AppPasswords | None = None  # set by gateway/app.py

    def __init__(self) -> None:
        self._salt = os.urandom(16)
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._cache_lock = threading.Lock()
        self._flights = [threading.Lock() for _ in range(64)]

    def login(
        self, user: str, password: str, client: str = "-", *, devices: bool = True
    ) -> Principal | None:
        """The principal for these credentials, or None (after a fixed delay).

        ``client`` is the peer address, for the throttle.  ``devices``: whether
        a device's app password counts (WebDAV and the Nextcloud apps); the
        console's sign-in takes the account's own password only, so a lost
        phone's app password cannot mint devices or use admin pages there.
        Raises LoginThrottled or ServiceUnavailable (see the module contract).
        """
        if not user or not password or len(user) > 255 or len(password) > 1024:
            # An empty password is an anonymous bind on many directories.
            time.sleep(self.failure_delay)
            return None
        if self.throttle is not None:
            # Before the cache: a cache hit must not become a guessing oracle.
            self.throttle.check(user, client)
        # The kind of login is part of the key: a device's cached login opens no console.
        kind = b"d" if devices else b"a"
        key = hashlib.sha256(self._salt + kind + user.encode() + b"\0" + password.encode()).digest()
        cached = self._cached(key)
        if cached is not None and not (
            self._is_current(cached) and self._app_password_stands(user, password)
        ):
            self._drop(key)  # the account changed since: check the credentials again
            cached = None
        if cached is not None:
            self._on_cache_hit(cached)
            return cached
        # One check per credentials at a time: when an entry expires under load,
        # the other requests wait for it instead of each running scrypt or a bind.
        with self._flight(key):
            cached = self._cached(key)
            if cached is not None:
                return cached
            return self._check(key, user, password, client, devices)

    def _flight(self, key: bytes) -> threading.Lock:
        return self._flights[key[0] % len(self._flights)]

    def _check(
        self, key: bytes, user: str, password: str, client: str, devices: bool
    ) -> Principal | None:
        principal = self._app_login(user, password) if devices else None
        if principal is None:
            principal = self._login(user, password)
        if principal is None:
            if self.throttle is not None:
                self.throttle.failed(user, client)
            time.sleep(self.failure_delay)
            return None
        if self.throttle is not None:
            self.throttle.succeeded(user)
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

    def _app_login(self, user: str, password: str) -> Principal | None:
        """The account behind a device's app password, as it is now; None: not one."""
        if self.app_passwords is None or not is_app_password(password):
            return None
        device = self.app_passwords.find(user, password)
        if device is None:
            return None
        principal = self._principal_of(device.uid)
        if principal is not None:
            self.app_passwords.note_use(device)
        return principal

    def _app_password_stands(self, user: str, password: str) -> bool:
        """False once the app password a cached login used is revoked; else its use is noted."""
        if self.app_passwords is None or not is_app_password(password):
            return True
        device = self.app_passwords.find(user, password)
        if device is None:
            return False
        self.app_passwords.note_use(device)
        return True

    def account(self, uid: str) -> Principal | None:
        """The enabled account ``uid`` as an app password would sign it in, or None."""
        return self._principal_of(uid)

    def _principal_of(self, uid: str) -> Principal | None:
        """Hook: the enabled account ``uid`` with its groups, without its password.
        Default: None (the backend takes no app passwords)."""
        return None

    def _drop(self, key: bytes) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)

    def _is_current(self, principal: Principal) -> bool:
        """Hook: False when the account behind a cached login changed. Default: True."""
        return True

    def forget(self) -> None:
        """Drop every cached login (after an account change)."""
        with self._cache_lock:
            self._cache.clear()

    def _on_cache_hit(self, principal: Principal) -> None:
        """Hook: raise (e.g. ServiceUnavailable) to refuse a cached login. Default: accept."""
        return None

    @abstractmethod
    def _login(self, user: str, password: str) -> Principal | None:
        """Check the credentials against the backend; see the module contract."""


# scrypt parameters: 2**15 x 8 costs ~50 ms and 32 MiB, the OWASP floor.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
# Each scrypt holds its 32 MiB while it runs, and more at once than there are
# cores buys no speed.  Unbounded, a burst of wrong passwords for distinct
# names (each under the per-user limit) would hold one per serving thread:
# 32 threads, 1 GiB.
_SCRYPT_SLOTS = threading.BoundedSemaphore(len(os.sched_getaffinity(0)))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _SCRYPT_SLOTS:
        return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM)


def hash_password(password: str) -> str:
    """A self-describing scrypt hash: ``scrypt$N$r$p$salt$hash`` (hex)."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, bytes.fromhex(digest))


@functools.cache
def _dummy_hash() -> str:
    """Compared against when the user does not exist, so both paths cost the same.

    Made by the first :class:`LocalAuthenticator`, not on import: a scrypt (32 MiB,
    tens of milliseconds) that a command reading the audit trail never needs.
    """
    return hash_password(os.urandom(16).hex())


class LocalAuthenticator(Authenticator):
    """Accounts kept in clindav's own database (``clindav user add``)."""

    def __init__(self, sessions: sessionmaker, throttle: ThrottleSettings | None = None) -> None:
        super().__init__()
        self._sessions = sessions
        self._hashes: dict[str, str] = {}  # the hash each cached login was checked against
        _dummy_hash()  # now, not during the first login of an unknown user
        if throttle is not None:
            # Guessing a local password costs a scrypt per try: the throttle
            # stops a guesser before the gateway's CPU does.
            self.throttle = LoginThrottle.configured(throttle)

    def _login(self, user: str, password: str) -> Principal | None:
        row = self._account(user)
        stored = row[0] if row else _dummy_hash()
        # A disabled account costs the same scrypt: its state is no oracle.
        if not verify_password(password, stored) or row is None or row[2]:
            return None
        self._hashes[user] = stored
        return Principal(uid=user, groups=row[1])

    def _principal_of(self, uid: str) -> Principal | None:
        row = self._account(uid)
        if row is None or row[2]:
            return None
        self._hashes[uid] = row[0]  # the cached login stands while the account is unchanged
        return Principal(uid=uid, groups=row[1])

    def _is_current(self, principal: Principal) -> bool:
        """A cached login stands while the account is enabled, with the same
        password and groups: `clindav user disable|passwd|set-groups` and
        `user remove` take effect on the next request, not after the cache's minute."""
        row = self._account(principal.uid)
        return (
            row is not None
            and not row[2]
            and row[1] == principal.groups
            and row[0] == self._hashes.get(principal.uid)
        )

    def _account(self, user: str) -> tuple[str, frozenset[str], bool] | None:
        """(password hash, groups, disabled) of a local account, or None."""
        try:
            with self._sessions() as session:
                row = session.get(LocalUser, user)
                if row is None:
                    return None
                return row.password_hash, frozenset(row.groups), row.disabled
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(f"user store unreachable: {exc}") from None
