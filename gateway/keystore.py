"""The key table: per-file data keys and per-share name seeds, wrapped by master keys.

Contract: :meth:`KeyStore.new_file_key` makes a fresh data key and the row to
commit for it; :meth:`KeyStore.data_key` unwraps the key a file header names,
raising :class:`KeyMissing` (410) when the row is gone (the file was purged:
crypto-shredded) and :class:`~gateway.crypto.keywrap.KeyUnwrapError` when it
does not authenticate.  A database failure raises
:class:`~gateway.errors.ServiceUnavailable`: clindav never serves or stores
without its keys.
"""

from __future__ import annotations

import os
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.crypto.keywrap import new_data_key, unwrap_data_key, wrap_data_key
from gateway.db import DataKey, ShareKey
from gateway.errors import ClindavError, ConfigError, KeyFileUnavailable, ServiceUnavailable
from gateway.keys import FileKeySource, KeySource, MasterKeys

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

    def _source_stamp(self) -> float | None:
        if isinstance(self._source, FileKeySource):
            try:
                return os.stat(self._source.path).st_mtime
            except OSError:
                return None
        return None

    def _refresh(self) -> None:
        """Reload the master keys if the key file changed since the last load."""
        stamp = self._source_stamp()
        if self._source is not None and stamp != self._stamp:
            try:
                self.masters = self._source.load()
            except ConfigError as exc:
                # Gone or unreadable while serving: fail closed (503) until it is back,
                # rather than go on with keys that may no longer be the right ones.
                raise KeyFileUnavailable(str(exc)) from None
            self._stamp = stamp

    def new_file_key(self, file_id: uuid.UUID) -> tuple[bytes, DataKey]:
        """A fresh data key for ``file_id`` and its wrapped row (not yet committed)."""
        self._refresh()
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
