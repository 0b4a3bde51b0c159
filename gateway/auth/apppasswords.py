"""App passwords: one per device, for the Nextcloud apps (docs/NEXTCLOUD-APPS.md).

A device never holds the account's own password: ``clindav user
app-password NAME`` or Login Flow v2 (gateway/nextcloud/loginflow.py) mint
one here, and the device sends it as the Basic password with the user's
name.  The authenticator (gateway/auth/base.py) accepts it for local and LDAP
accounts alike, through the same throttle and the same fail-closed rules;
the account must still exist and be enabled, and its groups are the
account's current ones.

Only a SHA-256 of each secret is stored (it carries 124 random bits, so a
slow hash would add nothing); deleting the row revokes the device, on the
next request, in every gateway process.  Every change takes an ``audit``
callable run first in its transaction, as the user store's do.

Each row also says when the device last signed a request in (``last_used_at``,
Nextcloud's "last activity"), so that an admin can tell a lost or stale phone
from one in use.  The authenticator notes it (:meth:`AppPasswords.note_use`)
once the login is accepted, at most once per :data:`NOTE_USE_EVERY`.  That is
bookkeeping, not authentication: the login was verified first, so a database
failure while noting it is logged and the request goes on (the fail-closed
rules apply to the look-up that verifies the password, never to this write).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Select, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock, aware
from gateway.db import AppPassword
from gateway.errors import BadRequest, DatabaseUnavailable, NotFound

# Letters and digits that cannot be misread when typed from a screen.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_GROUPS, _GROUP_LENGTH = 5, 5
_SHAPE = re.compile(
    rf"^[{_ALPHABET}]{{{_GROUP_LENGTH}}}(-[{_ALPHABET}]{{{_GROUP_LENGTH}}}){{{_GROUPS - 1}}}$"
)
MAX_LABEL = 128
Audit = Callable[[Session], None]
# A device's use is written at most this often, not at every request: a phone
# syncing a folder sends hundreds, and each would be a write (SQLite serialises
# writers).  "Last used 3 min ago" needs no finer grain.
NOTE_USE_EVERY = dt.timedelta(minutes=5)

log = logging.getLogger("clindav.auth")


def is_app_password(password: str) -> bool:
    """Whether ``password`` has an app password's shape (only those are looked up)."""
    return bool(_SHAPE.match(password))


def new_secret() -> str:
    """``xxxxx-xxxxx-xxxxx-xxxxx-xxxxx``: 25 characters of a 31-letter alphabet."""
    return "-".join(
        "".join(secrets.choice(_ALPHABET) for _ in range(_GROUP_LENGTH)) for _ in range(_GROUPS)
    )


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class DevicePassword:
    """An app password as listed (never its secret)."""

    id: int
    uid: str
    label: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None  # None: it never signed a request in


def _listed(row: AppPassword) -> DevicePassword:
    used = None if row.last_used_at is None else aware(row.last_used_at)
    return DevicePassword(row.id, row.uid, row.label, aware(row.created_at), used)


class AppPasswords:
    def __init__(self, sessions: sessionmaker, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def create(self, uid: str, label: str, audit: Audit | None = None) -> str:
        """A new app password for ``uid``; the secret is returned once and never stored."""
        label = label.strip()
        if not label or len(label) > MAX_LABEL or not label.isprintable():
            raise BadRequest(
                f"invalid device label {label[:40]!r}",
                public=f"Name the device in 1 to {MAX_LABEL} printable characters.",
            )
        secret = new_secret()
        with self._sessions.begin() as session:
            if audit is not None:
                audit(session)
            session.add(
                AppPassword(
                    uid=uid,
                    label=label,
                    secret_hash=secret_hash(secret),
                    created_at=self._clock.now(),  # comparable with its last use
                )
            )
        return secret

    def find(self, login: str, secret: str) -> DevicePassword | None:
        """The device ``secret`` belongs to, if it was issued to ``login``; else None.

        Raises DatabaseUnavailable when the table cannot be read (503, never a guess).
        """
        try:
            with self._sessions() as session:
                row = session.scalar(
                    select(AppPassword).where(AppPassword.secret_hash == secret_hash(secret))
                )
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(f"app passwords unreadable: {exc}") from None
        if row is None or row.uid != login:
            return None
        return _listed(row)

    def note_use(self, device: DevicePassword) -> None:
        """Note that ``device`` signed a request in now, unless that was noted in the last
        :data:`NOTE_USE_EVERY`; a database failure is logged, never raised (module doc)."""
        now = self._clock.now()
        cutoff = now - NOTE_USE_EVERY
        if device.last_used_at is not None and device.last_used_at >= cutoff:
            return  # read with the row that verified the password: no write at all
        # One conditional statement: of several processes seeing the device at
        # once, one writes.  Its own transaction, never a request's change
        # (gateway/change.py): the request's failure does not undo a use.
        noted = (
            update(AppPassword)
            .where(
                AppPassword.id == device.id,
                or_(AppPassword.last_used_at.is_(None), AppPassword.last_used_at < cutoff),
            )
            .values(last_used_at=now)
        )
        try:
            with self._sessions() as session, session.begin():
                session.execute(noted)
        except SQLAlchemyError as exc:
            log.warning(
                "app password %d of %s: its use was not noted (the login stands): %s",
                device.id,
                device.uid,
                exc,
            )

    def revoke_secret(self, secret: str, audit: Audit | None = None) -> bool:
        """Revoke the app password ``secret`` (a device signing out); False if unknown."""
        with self._sessions.begin() as session:
            row = session.scalar(
                select(AppPassword).where(AppPassword.secret_hash == secret_hash(secret))
            )
            if row is None:
                return False
            if audit is not None:
                audit(session)
            session.delete(row)
        return True

    def revoke(self, uid: str, ident: int, audit: Audit | None = None) -> None:
        """Revoke ``uid``'s app password number ``ident`` (the list's first column)."""
        with self._sessions.begin() as session:
            row = session.get(AppPassword, ident)
            if row is None or row.uid != uid:
                raise NotFound(
                    f"no app password {ident} of {uid}",
                    public=f"{uid} has no app password {ident}.",
                )
            if audit is not None:
                audit(session)
            session.delete(row)

    def get(self, ident: int) -> DevicePassword:
        """App password number ``ident`` (NotFound if there is none)."""
        with self._sessions() as session:
            row = session.get(AppPassword, ident)
            if row is None:
                raise NotFound(f"no app password {ident}", public=f"No device {ident}.")
            return _listed(row)

    def list_all(self) -> list[DevicePassword]:
        """Every account's, by account: directory accounts too, which no user list shows."""
        return self._rows(select(AppPassword).order_by(AppPassword.uid))

    def _rows(self, query: Select[AppPassword]) -> list[DevicePassword]:
        with self._sessions() as session:
            rows = session.scalars(query.order_by(AppPassword.id))
            return [_listed(r) for r in rows]

    def list(self, uid: str) -> list[DevicePassword]:
        return self._rows(select(AppPassword).where(AppPassword.uid == uid))
