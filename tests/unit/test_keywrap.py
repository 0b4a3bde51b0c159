"""Wrapping per-file data keys under a master key."""

from __future__ import annotations

import os
import uuid

import pytest

from gateway.crypto.fileformat import TamperedContent
from gateway.crypto.keywrap import (
    WRAPPED_SIZE,
    KeyUnwrapError,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from gateway.errors import ClindavError

MASTER = bytes(range(32))
KEY_ID = "master-2025"
FILE_ID = uuid.UUID("6f1c7c1e-0d7b-4f55-9a53-3b0b4d5e9a10")


def test_round_trip() -> None:
    data_key = new_data_key()
    wrapped = wrap_data_key(MASTER, KEY_ID, FILE_ID, data_key)
    assert len(wrapped) == WRAPPED_SIZE == 60
    assert unwrap_data_key(MASTER, KEY_ID, FILE_ID, wrapped) == data_key


def test_new_data_keys_are_fresh() -> None:
    keys = {new_data_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 32 for k in keys)


def test_wrapping_uses_a_random_nonce() -> None:
    data_key = new_data_key()
    first = wrap_data_key(MASTER, KEY_ID, FILE_ID, data_key)
    second = wrap_data_key(MASTER, KEY_ID, FILE_ID, data_key)
    assert first != second
    assert data_key not in first


@pytest.mark.parametrize(
    ("master", "key_id", "file_id"),
    [
        (os.urandom(32), KEY_ID, FILE_ID),  # wrong master key
        (MASTER, "master-2026", FILE_ID),  # row relabelled with another key id
        (MASTER, KEY_ID, uuid.uuid4()),  # row moved onto another file
    ],
    ids=["wrong-master", "other-key-id", "other-file"],
)
def test_unwrap_in_another_context_fails(master: bytes, key_id: str, file_id: uuid.UUID) -> None:
    wrapped = wrap_data_key(MASTER, KEY_ID, FILE_ID, new_data_key())
    with pytest.raises(KeyUnwrapError) as caught:
        unwrap_data_key(master, key_id, file_id, wrapped)
    error = caught.value
    assert isinstance(error, TamperedContent) and isinstance(error, ClindavError)
    assert (error.status, error.code) == (500, "key-unwrap-failed")
    assert error.__cause__ is None


def test_every_bit_flip_and_truncation_fails() -> None:
    wrapped = wrap_data_key(MASTER, KEY_ID, FILE_ID, new_data_key())
    for offset in range(len(wrapped)):
        for bit in range(8):
            damaged = bytearray(wrapped)
            damaged[offset] ^= 1 << bit
            with pytest.raises(KeyUnwrapError):
                unwrap_data_key(MASTER, KEY_ID, FILE_ID, bytes(damaged))
    for length in range(len(wrapped)):
        with pytest.raises(KeyUnwrapError):
            unwrap_data_key(MASTER, KEY_ID, FILE_ID, wrapped[:length])
    with pytest.raises(KeyUnwrapError):
        unwrap_data_key(MASTER, KEY_ID, FILE_ID, wrapped + b"\x00")


def test_bad_arguments_are_value_errors() -> None:
    wrapped = wrap_data_key(MASTER, KEY_ID, FILE_ID, new_data_key())
    with pytest.raises(ValueError):
        wrap_data_key(bytes(16), KEY_ID, FILE_ID, new_data_key())
    with pytest.raises(ValueError):
        wrap_data_key(MASTER, KEY_ID, FILE_ID, bytes(16))
    with pytest.raises(ValueError):
        wrap_data_key(MASTER, "bad key id", FILE_ID, new_data_key())
    with pytest.raises(ValueError):
        unwrap_data_key(bytes(31), KEY_ID, FILE_ID, wrapped)
