"""Deterministic generator of the CLDV v1 test vectors in this directory.

It implements the format from docs/FORMAT.md on its own, with nothing but the
``cryptography`` AEAD primitive (it does not import ``gateway.crypto``), so the
vectors check the code against the spec rather than against itself.  Keys,
file ids and plaintexts are fixed; AES-GCM is deterministic for a given key and
nonce, so every run writes the same bytes.

    python tests/vectors/make_vectors.py          # (re)write the vectors
    python tests/vectors/make_vectors.py --check  # exit 1 if they differ

``index.json`` lists every vector: ``file``, ``key`` (data key, hex),
``key_id``, ``file_id``, ``chunk_size``, ``expect`` (the plaintext file, or
``"reject"``), ``error`` (the expected error code when rejected) and
``description``.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VECTOR_DIR = Path(__file__).resolve().parent
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
FILE_A = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
FILE_B = uuid.UUID("ffeeddcc-bbaa-9988-7766-554433221100")
KEY_ID = "test-master-1"
CHUNK = 512
TAMPERED = "content-authentication-failed"
UNKNOWN = "unknown-file-format"


def header(
    file_id: uuid.UUID,
    key_id: str = KEY_ID,
    chunk_size: int = CHUNK,
    *,
    magic: bytes = b"CLDV",
    version: int = 1,
) -> bytes:
    """The header bytes, field by field as in the spec."""
    key = key_id.encode("ascii")
    return (
        magic
        + bytes([version])
        + file_id.bytes
        + bytes([len(key)])
        + key
        + struct.pack(">I", chunk_size)
    )


def seal(key: bytes, head: bytes, counter: int, last: bool, plaintext: bytes) -> bytes:
    """One sealed chunk: nonce = 11-byte counter + flag, associated data = header."""
    nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
    return AESGCM(key).encrypt(nonce, plaintext, head)


def split(plaintext: bytes, chunk_size: int) -> list[bytes]:
    """Plaintext chunks: full chunks, then a final one of 1..C bytes (or one empty)."""
    return [plaintext[i : i + chunk_size] for i in range(0, len(plaintext), chunk_size)] or [b""]


def sealed_chunks(
    key: bytes,
    head: bytes,
    plaintext: bytes,
    chunk_size: int = CHUNK,
    flags: list[bool] | None = None,
) -> list[bytes]:
    """Sealed chunks of ``plaintext``; ``flags`` overrides the last-chunk flags."""
    pieces = split(plaintext, chunk_size)
    flags = flags if flags is not None else [i == len(pieces) - 1 for i in range(len(pieces))]
    return [
        seal(key, head, i, flag, piece)
        for i, (piece, flag) in enumerate(zip(pieces, flags, strict=True))
    ]


def encrypt(key: bytes, file_id: uuid.UUID, plaintext: bytes, chunk_size: int = CHUNK) -> bytes:
    head = header(file_id, chunk_size=chunk_size)
    return head + b"".join(sealed_chunks(key, head, plaintext, chunk_size))


def pseudo_random(length: int, seed: str) -> bytes:
    return hashlib.shake_256(seed.encode("ascii")).digest(length)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1 :]


MULTI = pseudo_random(3 * CHUNK + 200, "multi-chunk")
HEAD_A = header(FILE_A)
SEALED = CHUNK + 16
VALID: dict[str, tuple[bytes, int, str]] = {
    "empty": (b"", CHUNK, "empty plaintext: one empty final chunk"),
    "small": (b"Hello, clinic!\n" * 4, CHUNK, "60 bytes: one short final chunk"),
    "one-chunk": (pseudo_random(CHUNK, "one-chunk"), CHUNK, "exactly one full chunk"),
    "multi-chunk": (MULTI, CHUNK, "three full chunks and a 200-byte final chunk"),
    "default-chunk": (pseudo_random(300, "default"), 65536, "300 bytes, default chunk size"),
}


def _header_vectors(multi: bytes) -> dict[str, tuple[bytes, str, str]]:
    body = multi[len(HEAD_A) :]
    return {
        "bad-magic": (b"CLDW" + multi[4:], UNKNOWN, "magic CLDW"),
        "bad-version": (multi[:4] + b"\x02" + multi[5:], UNKNOWN, "version 2"),
        "header-truncated": (multi[:20], TAMPERED, "file ends inside the header"),
        "header-bitflip": (flip(multi, 10), TAMPERED, "one bit flipped in the file id"),
        "chunk-size-changed": (
            header(FILE_A, chunk_size=2 * CHUNK) + body,
            TAMPERED,
            "header says chunks of twice the size",
        ),
        "wrong-key-id": (
            header(FILE_A, "test-master-2") + body,
            TAMPERED,
            "header names another master key",
        ),
        "header-only": (HEAD_A, TAMPERED, "no chunks at all"),
    }


def _chunk_vectors(multi: bytes) -> dict[str, tuple[bytes, str, str]]:
    chunks = sealed_chunks(KEY_A, HEAD_A, MULTI)
    rest = b"".join(chunks[2:])
    other_file = sealed_chunks(KEY_A, header(FILE_B), MULTI)
    other_key = sealed_chunks(KEY_B, HEAD_A, MULTI)
    start = len(HEAD_A)
    return {
        "body-bitflip": (
            flip(multi, start + SEALED + 100, 3),
            TAMPERED,
            "bit flipped in chunk 1 data",
        ),
        "tag-bitflip": (
            flip(multi, start + 2 * SEALED - 1, 7),
            TAMPERED,
            "bit flipped in chunk 1 tag",
        ),
        "chunks-swapped": (HEAD_A + chunks[1] + chunks[0] + rest, TAMPERED, "chunks 0, 1 swapped"),
        "chunk-duplicated": (HEAD_A + chunks[0] + chunks[0] + rest, TAMPERED, "chunk 0 repeated"),
        "chunk-spliced-other-file": (
            HEAD_A + chunks[0] + other_file[1] + rest,
            TAMPERED,
            "chunk 1 from a file with another file id (same data key)",
        ),
        "chunk-spliced-other-key": (
            HEAD_A + chunks[0] + other_key[1] + rest,
            TAMPERED,
            "chunk 1 sealed under another data key",
        ),
        "last-flag-early": (
            HEAD_A
            + b"".join(sealed_chunks(KEY_A, HEAD_A, MULTI, flags=[True, False, False, True])),
            TAMPERED,
            "chunk 0 sealed with the final flag",
        ),
    }


def _end_vectors(multi: bytes) -> dict[str, tuple[bytes, str, str]]:
    start = len(HEAD_A)
    one_chunk = VALID["one-chunk"][0]
    return {
        "truncated-chunk-boundary": (multi[: start + 3 * SEALED], TAMPERED, "final chunk removed"),
        "truncated-mid-chunk": (multi[: start + 2 * SEALED + 300], TAMPERED, "cut inside chunk 2"),
        "truncated-in-tag": (multi[:-10], TAMPERED, "cut inside the final tag"),
        "last-flag-missing": (
            HEAD_A + b"".join(sealed_chunks(KEY_A, HEAD_A, MULTI, flags=[False] * 4)),
            TAMPERED,
            "final chunk sealed with flag 0",
        ),
        "empty-flag-missing": (
            HEAD_A + seal(KEY_A, HEAD_A, 0, False, b""),
            TAMPERED,
            "empty file, chunk flag 0",
        ),
        "empty-final-after-full": (
            HEAD_A + seal(KEY_A, HEAD_A, 0, False, one_chunk) + seal(KEY_A, HEAD_A, 1, True, b""),
            TAMPERED,
            "non-canonical: a full chunk then an empty final chunk",
        ),
        "trailing-garbage": (multi + b"garbage", TAMPERED, "7 bytes after the final chunk"),
        "trailing-after-full": (
            encrypt(KEY_A, FILE_A, one_chunk) + bytes(40),
            TAMPERED,
            "40 bytes after a full final chunk",
        ),
        "trailing-chunk": (
            multi + seal(KEY_A, HEAD_A, 4, True, b"more"),
            TAMPERED,
            "a validly sealed extra chunk after the final chunk",
        ),
    }


def invalid_vectors() -> dict[str, tuple[bytes, str, str]]:
    """name -> (stored bytes, expected error code, description); data key KEY_A.

    All but ``trailing-after-full`` and ``empty-*`` are damaged copies of the
    valid ``multi-chunk`` vector.
    """
    multi = encrypt(KEY_A, FILE_A, MULTI)
    return _header_vectors(multi) | _chunk_vectors(multi) | _end_vectors(multi)


def _entry(
    name: str,
    key: bytes,
    chunk_size: int,
    expect: str,
    error: str | None,
    description: str,
    file_id: uuid.UUID = FILE_A,
) -> dict[str, object]:
    return {
        "file": f"{name}.cldv",
        "key": key.hex(),
        "key_id": KEY_ID,
        "file_id": str(file_id),
        "chunk_size": chunk_size,
        "expect": expect,
        "error": error,
        "description": description,
    }


def build_vectors() -> dict[str, bytes]:
    """Every file of the vector set (``index.json`` included), by file name."""
    files: dict[str, bytes] = {}
    index: list[dict[str, object]] = []
    for name, (plaintext, chunk_size, description) in VALID.items():
        files[f"{name}.cldv"] = encrypt(KEY_A, FILE_A, plaintext, chunk_size)
        files[f"{name}.plain"] = plaintext
        index.append(_entry(name, KEY_A, chunk_size, f"{name}.plain", None, description))
    for name, (stored, error, description) in invalid_vectors().items():
        files[f"{name}.cldv"] = stored
        index.append(_entry(name, KEY_A, CHUNK, "reject", error, description))
    files["index.json"] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("ascii")
    return files


def main(argv: list[str]) -> int:
    files = build_vectors()
    if "--check" in argv:
        stale = [
            n
            for n, data in files.items()
            if not (VECTOR_DIR / n).is_file() or (VECTOR_DIR / n).read_bytes() != data
        ]
        print("stale: " + ", ".join(stale) if stale else "vectors up to date")
        return 1 if stale else 0
    for name, data in files.items():
        (VECTOR_DIR / name).write_bytes(data)
    print(f"wrote {len(files)} files, {sum(map(len, files.values()))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
