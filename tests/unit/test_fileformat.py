"""The CLDV content format: round trips, range reads, tampering, shipped vectors."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from gateway.crypto.fileformat import (
    DEFAULT_CHUNK_SIZE,
    TAG_SIZE,
    EncryptedFileReader,
    FileEncryptor,
    FileHeader,
    TamperedContent,
    UnknownFormat,
    ciphertext_size_for,
    decrypt_bytes,
    encrypt_bytes,
    plaintext_size_for,
    read_header,
)
from gateway.errors import ClindavError

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KEY = bytes(range(32))
FILE_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
KEY_ID = "master-2025"
SMALL = 64


def reader_for(stored: bytes, key: bytes = KEY) -> EncryptedFileReader:
    f = io.BytesIO(stored)
    return EncryptedFileReader(f, key, read_header(f), len(stored))


def load_make_vectors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize("chunk", [SMALL, 1024, DEFAULT_CHUNK_SIZE])
@pytest.mark.parametrize("factor", ["0", "1", "c-1", "c", "c+1", "3c", "3c+5"])
def test_round_trip_sizes(chunk: int, factor: str) -> None:
    size = {
        "0": 0,
        "1": 1,
        "c-1": chunk - 1,
        "c": chunk,
        "c+1": chunk + 1,
        "3c": 3 * chunk,
        "3c+5": 3 * chunk + 5,
    }[factor]
    plaintext = os.urandom(size)
    stored = encrypt_bytes(KEY, FILE_ID, KEY_ID, plaintext, chunk)
    header = read_header(io.BytesIO(stored))
    assert len(stored) == ciphertext_size_for(size, header.size, chunk)
    assert plaintext_size_for(len(stored), header) == size
    assert decrypt_bytes(KEY, stored) == plaintext
    reader_for(stored).verify_all()


def test_round_trip_4mb_and_overhead() -> None:
    plaintext = os.urandom(4 * 1024 * 1024)
    stored = encrypt_bytes(KEY, FILE_ID, KEY_ID, plaintext)
    assert decrypt_bytes(KEY, stored) == plaintext
    overhead = (len(stored) - len(plaintext)) / len(plaintext)
    assert overhead < 0.001
    assert len(stored) - len(plaintext) == read_header(io.BytesIO(stored)).size + 64 * TAG_SIZE


@pytest.mark.parametrize("piece", [1, 7, SMALL - 1, SMALL, SMALL + 1, 1000])
def test_streaming_pieces_equal_one_shot(piece: int) -> None:
    plaintext = os.urandom(5 * SMALL + 3)
    encryptor = FileEncryptor(KEY, FILE_ID, KEY_ID, SMALL)
    parts = [encryptor.header()]
    parts += [encryptor.update(plaintext[i : i + piece]) for i in range(0, len(plaintext), piece)]
    parts.append(encryptor.finalize())
    assert b"".join(parts) == encrypt_bytes(KEY, FILE_ID, KEY_ID, plaintext, SMALL)


def test_update_holds_back_a_full_chunk() -> None:
    encryptor = FileEncryptor(KEY, FILE_ID, KEY_ID, SMALL)
    assert encryptor.update(bytes(SMALL)) == b""  # might be the final chunk
    assert len(encryptor.update(b"x")) == SMALL + TAG_SIZE
    assert len(encryptor.finalize()) == 1 + TAG_SIZE
    with pytest.raises(ValueError):
        encryptor.update(b"more")
    with pytest.raises(ValueError):
        encryptor.finalize()


def test_header_fields_and_layout() -> None:
    encryptor = FileEncryptor(KEY, FILE_ID, KEY_ID, 1024)
    raw = encryptor.header()
    assert raw == b"CLDV\x01" + FILE_ID.bytes + bytes([len(KEY_ID)]) + KEY_ID.encode() + (
        b"\x00\x00\x04\x00"
    )
    header = read_header(io.BytesIO(raw + b"rest"))
    assert header == FileHeader(1, FILE_ID, KEY_ID, 1024, len(raw))
    assert header.to_bytes() == raw


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data_key": bytes(16)},
        {"key_id": ""},
        {"key_id": "has space"},
        {"key_id": "é"},
        {"key_id": "k" * 256},
        {"chunk_size": 63},
        {"chunk_size": 16 * 1024 * 1024 + 1},
    ],
)
def test_bad_arguments_are_value_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "data_key": KEY,
        "file_id": FILE_ID,
        "key_id": KEY_ID,
        "chunk_size": 1024,
    } | kwargs
    with pytest.raises(ValueError):
        FileEncryptor(**args)  # type: ignore[arg-type]


def test_fresh_keys_give_unrelated_files() -> None:
    a = encrypt_bytes(os.urandom(32), FILE_ID, KEY_ID, bytes(100))
    b = encrypt_bytes(os.urandom(32), FILE_ID, KEY_ID, bytes(100))
    header_size = read_header(io.BytesIO(a)).size
    assert a[:header_size] == b[:header_size]
    assert a[header_size:] != b[header_size:]


# --- range reads ------------------------------------------------------------

RANGE_PLAIN = os.urandom(4 * SMALL + 10)
RANGE_STORED = encrypt_bytes(KEY, FILE_ID, KEY_ID, RANGE_PLAIN, SMALL)
EDGES = [
    0,
    1,
    SMALL - 1,
    SMALL,
    SMALL + 1,
    2 * SMALL,
    4 * SMALL,
    len(RANGE_PLAIN) - 1,
    len(RANGE_PLAIN),
]


@pytest.mark.parametrize("start", EDGES)
@pytest.mark.parametrize("end", [*EDGES, None, len(RANGE_PLAIN) + 100])
def test_range_reads_match_slices(start: int, end: int | None) -> None:
    pieces = list(reader_for(RANGE_STORED).iter_plaintext(start, end))
    assert b"".join(pieces) == RANGE_PLAIN[start:end]
    assert all(pieces) and all(len(p) <= SMALL for p in pieces)


def test_range_read_decrypts_only_covering_chunks() -> None:
    # Chunk 0 and the last chunk are corrupted; a range inside chunks 1..2 still reads.
    damaged = bytearray(RANGE_STORED)
    header_size = read_header(io.BytesIO(RANGE_STORED)).size
    damaged[header_size] ^= 1
    damaged[-1] ^= 1
    reader = reader_for(bytes(damaged))
    assert b"".join(reader.iter_plaintext(SMALL, 3 * SMALL)) == RANGE_PLAIN[SMALL : 3 * SMALL]
    with pytest.raises(TamperedContent):
        list(reader.iter_plaintext(SMALL - 1, SMALL + 1))
    with pytest.raises(TamperedContent):
        list(reader.iter_plaintext(3 * SMALL, None))


def test_range_touching_end_detects_truncation_at_boundary() -> None:
    header_size = read_header(io.BytesIO(RANGE_STORED)).size
    truncated = RANGE_STORED[: header_size + 4 * (SMALL + TAG_SIZE)]
    reader = reader_for(truncated)
    assert reader.plaintext_size == 4 * SMALL  # the size alone cannot tell
    assert b"".join(reader.iter_plaintext(0, SMALL)) == RANGE_PLAIN[:SMALL]
    with pytest.raises(TamperedContent):
        list(reader.iter_plaintext(4 * SMALL - 1))
    with pytest.raises(TamperedContent):
        reader.verify_all()


def test_negative_range_is_value_error() -> None:
    reader = reader_for(RANGE_STORED)
    with pytest.raises(ValueError):
        reader.iter_plaintext(-1)
    with pytest.raises(ValueError):
        reader.iter_plaintext(0, -5)


def test_empty_file_full_read_verifies_its_chunk() -> None:
    stored = encrypt_bytes(KEY, FILE_ID, KEY_ID, b"", SMALL)
    assert list(reader_for(stored).iter_plaintext()) == []
    with pytest.raises(TamperedContent):
        list(reader_for(stored, bytes(32)).iter_plaintext())


def test_data_appended_after_stat_is_detected() -> None:
    f = io.BytesIO(RANGE_STORED + b"x")
    reader = EncryptedFileReader(f, KEY, read_header(f), len(RANGE_STORED))
    with pytest.raises(TamperedContent, match="after the final chunk"):
        reader.verify_all()


# --- tampering: only TamperedContent escapes -------------------------------

TAMPER_PLAIN = os.urandom(2 * SMALL + 5)
TAMPER_STORED = encrypt_bytes(KEY, FILE_ID, KEY_ID, TAMPER_PLAIN, SMALL)


def full_decrypt(stored: bytes, key: bytes = KEY) -> bytes:
    return decrypt_bytes(key, stored)


def test_every_single_bit_flip_is_rejected() -> None:
    for offset in range(len(TAMPER_STORED)):
        for bit in range(8):
            damaged = bytearray(TAMPER_STORED)
            damaged[offset] ^= 1 << bit
            with pytest.raises(TamperedContent):
                full_decrypt(bytes(damaged))


def test_every_truncation_is_rejected() -> None:
    for length in range(len(TAMPER_STORED)):
        with pytest.raises(TamperedContent):
            full_decrypt(TAMPER_STORED[:length])


def test_wrong_data_key_is_rejected() -> None:
    with pytest.raises(TamperedContent) as caught:
        full_decrypt(TAMPER_STORED, os.urandom(32))
    assert caught.value.code == "content-authentication-failed"
    assert caught.value.status == 500
    assert isinstance(caught.value, ClindavError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("stored", [b"CL\x00", b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", b"CLDV\x00"])
def test_foreign_bytes_are_unknown_format(stored: bytes) -> None:
    with pytest.raises(UnknownFormat) as caught:
        full_decrypt(stored)
    assert caught.value.code == "unknown-file-format"


@pytest.mark.parametrize("stored", [b"", b"CL", b"CLDV", b"CLDV\x01", b"CLDV\x01" + bytes(16)])
def test_truncated_header_is_tampered(stored: bytes) -> None:
    with pytest.raises(TamperedContent) as caught:
        read_header(io.BytesIO(stored))
    assert not isinstance(caught.value, UnknownFormat)


def test_header_with_empty_key_id_or_huge_chunk_is_rejected() -> None:
    base = b"CLDV\x01" + FILE_ID.bytes
    for raw in (
        base + b"\x00" + b"\x00\x00\x04\x00",
        base + b"\x01k" + b"\xff\xff\xff\xff",
        base + b"\x02k\n" + b"\x00\x00\x04\x00",
    ):
        with pytest.raises(TamperedContent, match="invalid header"):
            read_header(io.BytesIO(raw))


# --- shipped vectors --------------------------------------------------------

INDEX = json.loads((VECTORS / "index.json").read_text())


def test_vectors_regenerate_exactly() -> None:
    built = load_make_vectors().build_vectors()
    shipped = {p.name for p in VECTORS.iterdir() if p.is_file() and p.suffix != ".py"}
    assert shipped == set(built)
    for name, data in built.items():
        assert (VECTORS / name).read_bytes() == data, name
    assert sum(map(len, built.values())) < 100_000


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_vector(entry: dict[str, str]) -> None:
    stored = (VECTORS / entry["file"]).read_bytes()
    key = bytes.fromhex(entry["key"])
    if entry["expect"] == "reject":
        with pytest.raises(TamperedContent) as caught:
            reader_for(stored, key).verify_all()
        assert caught.value.code == entry["error"]
        return
    plaintext = (VECTORS / entry["expect"]).read_bytes()
    assert decrypt_bytes(key, stored) == plaintext
    # Our encryptor, given the same key and file id, writes the very same bytes.
    file_id = uuid.UUID(entry["file_id"])
    assert (
        encrypt_bytes(key, file_id, entry["key_id"], plaintext, int(entry["chunk_size"])) == stored
    )
