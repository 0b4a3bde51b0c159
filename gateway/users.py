"""The local user store: accounts for practices without a directory.

Passwords are kept only as scrypt hashes (:func:`gateway.auth.hash_password`).
Group names are the ones policies use (``clinicians``, ``admins``, ...).
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from gateway.auth import hash_password
from gateway.db import LocalUser
from gateway.errors import BadRequest, Conflict, NotFound

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_GROUP = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class UserStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def add(self, name: str, password: str, groups: list[str]) -> None:
        if not _NAME.match(name):
            raise BadRequest(
                f"invalid user name {name!r}",
                public="User names are letters, digits and . _ @ - (up to 128).",
            )
        for group in groups:
            if not _GROUP.match(group):
                raise BadRequest(
                    f"invalid group {group!r}", public=f"Invalid group name {group!r}."
                )
        if len(password) < 12:
            raise BadRequest("short password", public="Passwords need at least 12 characters.")
        with self._sessions.begin() as session:
            if session.get(LocalUser, name) is not None:
                raise Conflict(f"user {name} exists", public=f"User {name!r} already exists.")
            session.add(LocalUser(name=name, password_hash=hash_password(password), groups=groups))

    def remove(self, name: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(LocalUser, name)
            if row is None:
                raise NotFound(f"no user {name}", public=f"No user {name!r}.")
            session.delete(row)

    def list(self) -> list[tuple[str, list[str]]]:
        with self._sessions() as session:
            rows = session.scalars(select(LocalUser).order_by(LocalUser.name))
            return [(row.name, list(row.groups)) for row in rows]
