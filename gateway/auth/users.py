"""The local user store: accounts for practices without a directory.

Passwords are kept only as scrypt hashes (:func:`gateway.auth.base.hash_password`).
Group names are the ones policies use (``clinicians``, ``admins``, ...).
Both doors use it: ``clindav user ...`` and the console's users page.  Every
change takes an optional ``audit``: called first in the change's
transaction (it takes the audit chain's lock and appends the event), so the
change and its event commit together or not at all.  Bad input raises
before anything is written, with the message both doors show.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth.base import hash_password
from gateway.db import ConsoleSession, LocalUser
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.policy import Policy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_GROUP = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
MIN_PASSWORD = 12
# Records a change's audit event in its transaction (gateway/records/audit.py ``append``).
Audit = Callable[[Session], None]


class UserStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    @contextmanager
    def _change(self, audit: Audit | None) -> Iterator[Session]:
        with self._sessions.begin() as session:
            if audit is not None:
                audit(session)  # first: the chain's lock, then the event (undone with the change)
            yield session

    def add(self, name: str, password: str, groups: list[str], audit: Audit | None = None) -> None:
        if not _NAME.match(name):
            raise BadRequest(
                f"invalid user name {name!r}",
                public="User names are letters, digits and . _ @ - (up to 128).",
            )
        _check_groups(groups)
        _check_password(password)
        with self._change(audit) as session:
            if session.get(LocalUser, name) is not None:
                raise Conflict(f"user {name} exists", public=f"User {name!r} already exists.")
            session.add(LocalUser(name=name, password_hash=hash_password(password), groups=groups))

    def remove(self, name: str, audit: Audit | None = None) -> None:
        with self._change(audit) as session:
            session.delete(_user(session, name))

    def set_password(self, name: str, password: str, audit: Audit | None = None) -> None:
        """The new password, and every console session of the account ended with it: a reset
        after a stolen password must not leave the thief signed in."""
        _check_password(password)
        with self._change(audit) as session:
            _user(session, name).password_hash = hash_password(password)
            session.execute(delete(ConsoleSession).where(ConsoleSession.uid == name))

    def set_groups(self, name: str, groups: list[str], audit: Audit | None = None) -> None:
        _check_groups(groups)
        with self._change(audit) as session:
            _user(session, name).groups = groups

    def set_disabled(self, name: str, disabled: bool, audit: Audit | None = None) -> None:
        """A disabled account keeps its row and groups; it cannot log in."""
        with self._change(audit) as session:
            _user(session, name).disabled = disabled

    def list(self) -> list[tuple[str, list[str], bool]]:
        """(name, groups, disabled) of every account, by name."""
        with self._sessions() as session:
            rows = session.scalars(select(LocalUser).order_by(LocalUser.name))
            return [(row.name, list(row.groups), row.disabled) for row in rows]


class PasswordsDiffer(BadRequest):
    code = "passwords-differ"
    message = "The passwords differ; nothing was changed."


def check_same(password: str, again: str) -> None:
    """A new password is typed twice (no echo): both must match."""
    if password != again:
        raise PasswordsDiffer("the two passwords typed differ")


def unused_groups(policy: Policy, groups: list[str]) -> list[str]:
    """Groups the policy never names: they give a user nothing."""
    return sorted(set(groups) - policy_groups(policy))


def _user(session: Session, name: str) -> LocalUser:
    row = session.get(LocalUser, name)
    if row is None:
        raise NotFound(f"no user {name}", public=f"No user {name!r}.")
    return row


def _check_groups(groups: list[str]) -> None:
    if not groups:
        raise BadRequest("no group", public="A user needs at least one group.")
    for group in groups:
        if not _GROUP.match(group):
            raise BadRequest(f"invalid group {group!r}", public=f"Invalid group name {group!r}.")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(
            "short password", public=f"Passwords need at least {MIN_PASSWORD} characters."
        )


def policy_groups(policy: Policy) -> set[str]:
    """Every group the policy names: rules, ``admin_group``, ``auditor_group``,
    ``consent_recorders`` and stage options named ``*_group`` or ``*_groups`` (the
    consent stage's ``intimate_group``)."""
    doc = policy.doc
    named = set(policy.named_groups())
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
