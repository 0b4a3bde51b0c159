"""The local user store: accounts for practices without a directory.

Passwords are kept only as scrypt hashes (:func:`gateway.auth.base.hash_password`).
Group names are the ones policies use (``clinicians``, ``admins``, ...).
"""

from __future__ import annotations

import re

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth.base import hash_password
from gateway.db import LocalUser
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.policy import Policy

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
        _check_groups(groups)
        _check_password(password)
        with self._sessions.begin() as session:
            if session.get(LocalUser, name) is not None:
                raise Conflict(f"user {name} exists", public=f"User {name!r} already exists.")
            session.add(LocalUser(name=name, password_hash=hash_password(password), groups=groups))

    def remove(self, name: str) -> None:
        with self._sessions.begin() as session:
            session.delete(_user(session, name))

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        with self._sessions.begin() as session:
            _user(session, name).password_hash = hash_password(password)

    def set_groups(self, name: str, groups: list[str]) -> None:
        _check_groups(groups)
        with self._sessions.begin() as session:
            _user(session, name).groups = groups

    def set_disabled(self, name: str, disabled: bool) -> None:
        """A disabled account keeps its row and groups; it cannot log in."""
        with self._sessions.begin() as session:
            _user(session, name).disabled = disabled

    def list(self) -> list[tuple[str, list[str], bool]]:
        """(name, groups, disabled) of every account, by name."""
        with self._sessions() as session:
            rows = session.scalars(select(LocalUser).order_by(LocalUser.name))
            return [(row.name, list(row.groups), row.disabled) for row in rows]


def _user(session: Session, name: str) -> LocalUser:
    row = session.get(LocalUser, name)
    if row is None:
        raise NotFound(f"no user {name}", public=f"No user {name!r}.")
    return row


def _check_groups(groups: list[str]) -> None:
    for group in groups:
        if not _GROUP.match(group):
            raise BadRequest(f"invalid group {group!r}", public=f"Invalid group name {group!r}.")


def _check_password(password: str) -> None:
    if len(password) < 12:
        raise BadRequest("short password", public="Passwords need at least 12 characters.")


def policy_groups(policy: Policy) -> set[str]:
    """Every group the policy names: rules, ``admin_group``, ``consent_recorders`` and
    stage options named ``*_group`` or ``*_groups`` (the consent stage's ``intimate_group``)."""
    doc = policy.doc
    named = {doc.admin_group, *doc.consent_recorders}
    named |= {group for rule in doc.rules for group in rule.groups if group != "*"}
    for share in doc.shares:
        for stage in policy.pipeline(share).stages:
            options = getattr(stage, "options", None)
            values = options.model_dump() if isinstance(options, BaseModel) else {}
            for key, value in values.items():
                if key.endswith("_group") and isinstance(value, str):
                    named.add(value)
                elif key.endswith("_groups") and isinstance(value, list):
                    named.update(str(v) for v in value)
    return named
