"""Per-file data keys, wrapped by a master key for the database's key table.

Format of a wrapped key (60 bytes)::

    nonce (12, random) || AES-256-GCM ciphertext of the data key (32) || tag (16)

sealed under the 32-byte master key named by ``key_id`` with associated data
``b"clindav-data-key-v1" + file_id.bytes + key_id`` (ASCII; it comes last, so
the concatenation is unambiguous).  Binding the file id and key id means a
wrapped-key row moved onto another file, or relabelled with another key id,
fails to unwrap.  The random nonce is safe: a master key wraps far fewer than
2**32 keys between rotations.  Purging a file deletes its row, which makes every
copy of its ciphertext unreadable (crypto-shredding).

Contract and errors: :func:`unwrap_data_key` raises :class:`KeyUnwrapError`
(code ``key-unwrap-failed``, a :class:`TamperedContent`) for any wrapped value
that does not authenticate, including a wrong master key.  Bad arguments from
the program (keys of the wrong length, an invalid key id) raise ``ValueError``.
"""

from __future__ import annotations

import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.crypto.fileformat import DATA_KEY_SIZE, TAG_SIZE, TamperedContent, key_id_problem

MASTER_KEY_SIZE = 32
NONCE_SIZE = 12
WRAPPED_SIZE = NONCE_SIZE + DATA_KEY_SIZE + TAG_SIZE
_LABEL = b"clindav-data-key-v1"


class KeyUnwrapError(TamperedContent):
    """A wrapped data key did not authenticate (tampered row, wrong file or master key)."""

    code = "key-unwrap-failed"
    message = "The stored file's key could not be unlocked."


def new_data_key() -> bytes:
    """A fresh random 32-byte data key for one file."""
    return os.urandom(DATA_KEY_SIZE)


def _associated_data(master_key: bytes, key_id: str, file_id: uuid.UUID) -> bytes:
    if len(master_key) != MASTER_KEY_SIZE:
        raise ValueError(f"master key must be {MASTER_KEY_SIZE} bytes, not {len(master_key)}")
    problem = key_id_problem(key_id)
    if problem:
        raise ValueError(problem)
    return _LABEL + file_id.bytes + key_id.encode("ascii")


def wrap_data_key(master_key: bytes, key_id: str, file_id: uuid.UUID, data_key: bytes) -> bytes:
    """Wrap ``data_key`` for the key table row of ``file_id`` under master key ``key_id``."""
    associated_data = _associated_data(master_key, key_id, file_id)
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError(f"data key must be {DATA_KEY_SIZE} bytes, not {len(data_key)}")
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(master_key).encrypt(nonce, data_key, associated_data)


def unwrap_data_key(master_key: bytes, key_id: str, file_id: uuid.UUID, wrapped: bytes) -> bytes:
    """Return the data key wrapped by :func:`wrap_data_key` with the same arguments.

    Raises :class:`KeyUnwrapError` if ``wrapped`` does not authenticate for
    this master key, key id and file id.
    """
    associated_data = _associated_data(master_key, key_id, file_id)
    if len(wrapped) != WRAPPED_SIZE:
        raise KeyUnwrapError(f"wrapped key is {len(wrapped)} bytes, not {WRAPPED_SIZE}")
    nonce, sealed = wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:]
    try:
        return AESGCM(master_key).decrypt(nonce, sealed, associated_data)
    except InvalidTag:
        raise KeyUnwrapError(f"wrapped key of file {file_id} under {key_id!r} failed") from None
