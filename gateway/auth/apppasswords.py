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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

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


def _listed(row: AppPassword) -> DevicePassword:
    return DevicePassword(row.id, row.uid, row.label, row.created_at)


class AppPasswords:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

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
            session.add(AppPassword(uid=uid, label=label, secret_hash=secret_hash(secret)))
        return secret

    def owner(self, login: str, secret: str) -> str | None:
        """The account ``secret`` belongs to, if it was issued to ``login``; else None.

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
        return row.uid

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
