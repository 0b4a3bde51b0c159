"""The key table: per-file data keys and per-share name seeds, wrapped by master keys.

Contract: :meth:`KeyStore.new_file_key` makes a fresh data key and the row to
commit for it; :meth:`KeyStore.data_key` unwraps the key a file header names,
raising :class:`KeyMissing` (410) when the row is gone (the file was purged:
crypto-shredded) and :class:`~gateway.crypto.keywrap.KeyUnwrapError` when it
does not authenticate.  A database failure raises
:class:`~gateway.errors.ServiceUnavailable`: clindav never serves or stores
without its keys.

:meth:`KeyStore.verify` (at start) and every reload of a changed key file
compare each master key with the key-check value recorded for its id
(``master_key_check``): a key with a known id and other bytes is refused,
naming the key file, and a running gateway then stores nothing
(``503 master-key-mismatch``) until the right file is back.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import uuid

from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.crypto.keywrap import KeyUnwrapError, new_data_key, unwrap_data_key, wrap_data_key
from gateway.db import DataKey, MasterKeyCheck, ShareKey
from gateway.errors import ClindavError, ConfigError, KeyFileUnavailable, ServiceUnavailable
from gateway.storage.keys import (
    FileKeySource,
    KeySource,
    MasterKeyMismatch,
    MasterKeys,
    check_value,
    wrong_key_error,
)

log = logging.getLogger("clindav.keys")

# Fixed-length data-key ids keep every header the same size, so a listing can
# compute plaintext sizes from file sizes without opening files.
KEY_ID_PREFIX = "dk-"
KEY_ID_LENGTH = len(KEY_ID_PREFIX) + 24
_SHARE_NAMESPACE = uuid.UUID("6f1c2f4e-8a51-4c59-9d3e-6b1f0c8e2a77")


class KeyMissing(ClindavError):
    status = 410
    code = "content-key-purged"
    message = "This file was purged; its key no longer exists."


def share_binding(share: str) -> uuid.UUID:
    """The id a share's name seed is bound to when wrapped."""
    return uuid.uuid5(_SHARE_NAMESPACE, share)


class KeyStore:
    """Key rows and seeds; re-reads the master keys when their source changes.

    A running gateway thus follows ``clindav keys rotate``: new data keys are
    wrapped with the new active key from the next write on, and rows already
    re-wrapped with a key it has not loaded yet make it reload, not fail.
    """

    def __init__(
        self, sessions: sessionmaker, masters: MasterKeys, source: KeySource | None = None
    ) -> None:
        self._sessions = sessions
        self.masters = masters
        self._source = source
        self._stamp = self._source_stamp()
        # Set while the key file holds a key that is not this instance's: the
        # keys loaded before stay in use for reads, and nothing is stored.
        self._refusal: ConfigError | None = None

    def _source_stamp(self) -> tuple[int, int, int] | None:
        if isinstance(self._source, FileKeySource):
            try:
                st = os.stat(self._source.path)
            except OSError:
                return None
            return st.st_mtime_ns, st.st_ino, st.st_size
        return None

    def _refresh(self) -> None:
        """Reload the master keys if the key file changed since the last load.

        A reloaded key with a known id and other bytes is refused (see
        :meth:`mismatched`); so is every later write, until the file changes again.
        """
        stamp = self._source_stamp()
        if self._source is None or stamp == self._stamp:
            return
        try:
            masters = self._source.load()
        except ConfigError as exc:
            # Gone or unreadable while serving: fail closed (503) until it is back,
            # rather than go on with keys that may no longer be the right ones.
            raise KeyFileUnavailable(str(exc)) from None
        wrong = self.mismatched(masters, record=True)
        self._stamp = stamp  # (not before: a failed check is tried again on the next write)
        if wrong:
            self._refusal = wrong_key_error(self._source, wrong)
            log.error("%s; nothing is stored until it is put back", self._refusal.detail)
            return
        if self._refusal is not None:
            log.warning("the master keys match this instance again")
        self.masters, self._refusal = masters, None

    def verify(self) -> None:
        """At start: refuse master keys that are not this instance's (ConfigError)."""
        wrong = self.mismatched(self.masters, record=True)
        if wrong:
            raise wrong_key_error(self._source, wrong)

    def mismatched(self, masters: MasterKeys, *, record: bool) -> list[str]:
        """Ids of keys in ``masters`` that are not the keys this instance has used.

        A key is compared with the key-check value recorded for its id.  A key
        without one (created before check values existed, or new) must unwrap
        a row wrapped under its id, if there is one; with ``record`` its check
        value is then recorded.
        """
        try:
            with self._sessions.begin() as session:
                recorded = _recorded_checks(session)
                wrong = []
                for key_id, key in masters.keys.items():
                    value = check_value(key)
                    if key_id in recorded:
                        if not hmac.compare_digest(recorded[key_id], value):
                            wrong.append(key_id)
                    elif not _unwraps_its_rows(session, key_id, key):
                        wrong.append(key_id)
                    elif record:
                        session.add(MasterKeyCheck(key_id=key_id, check_value=value))
                return wrong
        except IntegrityError:  # another process recorded the same check value first
            return self.mismatched(masters, record=record)

    def check_writable(self) -> None:
        """Raise (503) while nothing may be sealed: the key file changed to a wrong key or
        went away.  A door that records something before it seals asks first."""
        self._refresh()
        if self._refusal is not None:
            raise MasterKeyMismatch(self._refusal.detail)

    def new_file_key(self, file_id: uuid.UUID) -> tuple[bytes, DataKey]:
        """A fresh data key for ``file_id`` and its wrapped row (not yet committed)."""
        self.check_writable()
        data_key = new_data_key()
        key_id = KEY_ID_PREFIX + secrets.token_hex(12)
        wrapped = wrap_data_key(self.masters.active, self.masters.active_id, file_id, data_key)
        row = DataKey(
            key_id=key_id,
            file_id=str(file_id),
            master_key_id=self.masters.active_id,
            wrapped=wrapped,
        )
        return data_key, row

    def data_key(self, key_id: str, file_id: uuid.UUID) -> bytes:
        try:
            with self._sessions() as session:
                row = session.get(DataKey, key_id)
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(f"key table unreachable: {exc}") from None
        if row is None or row.file_id != str(file_id):
            raise KeyMissing(f"no key row {key_id} for file {file_id}")
        return self._unwrap(row.master_key_id, file_id, row.wrapped)

    def _unwrap(self, master_key_id: str, bound: uuid.UUID, wrapped: bytes) -> bytes:
        if master_key_id not in self.masters.keys:
            self._refresh()
        master = self.masters.keys.get(master_key_id)
        if master is None:
            raise ServiceUnavailable(f"master key {master_key_id} is not loaded")
        return unwrap_data_key(master, master_key_id, bound, wrapped)

    def seed(self, name: str) -> bytes:
        """The random 32-byte seed called ``name`` (a share's names, dead properties).

        Created on first use; kept wrapped by the master key in the key table.
        """
        binding = share_binding(name)
        with self._sessions() as session:
            row = session.scalar(select(ShareKey).where(ShareKey.share == name))
        if row is not None:
            return self._unwrap(row.master_key_id, binding, row.wrapped)
        seed = new_data_key()
        wrapped = wrap_data_key(self.masters.active, self.masters.active_id, binding, seed)
        try:
            with self._sessions.begin() as session:
                row = ShareKey(share=name, master_key_id=self.masters.active_id, wrapped=wrapped)
                session.add(row)
        except IntegrityError:
            return self.seed(name)  # another gateway process created it first
        return seed


def _recorded_checks(session: Session) -> dict[str, str]:
    """Recorded key-check values by key id (none in a database from before them)."""
    if not inspect(session.connection()).has_table(MasterKeyCheck.__tablename__):
        return {}
    rows = session.execute(select(MasterKeyCheck.key_id, MasterKeyCheck.check_value))
    return {key_id: value for key_id, value in rows}


def _unwraps_its_rows(session: Session, key_id: str, key: bytes) -> bool:
    """Whether ``key`` unwraps a row wrapped under ``key_id`` (True when there is none)."""
    seed = session.scalar(select(ShareKey).where(ShareKey.master_key_id == key_id).limit(1))
    if seed is not None:
        bound, wrapped = share_binding(seed.share), seed.wrapped
    else:
        row = session.scalar(select(DataKey).where(DataKey.master_key_id == key_id).limit(1))
        if row is None:
            return True
        bound, wrapped = uuid.UUID(row.file_id), row.wrapped
    try:
        unwrap_data_key(key, key_id, bound, wrapped)
    except KeyUnwrapError:
        return False
    return True
