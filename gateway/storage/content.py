"""Encrypted content and names on the backing share (the at-rest side of a share).

:class:`EncryptedContent` seals a body into the CLDV format
(:mod:`gateway.crypto.fileformat`) under a fresh data key and opens stored
files for reading: small files (up to :data:`VERIFY_WHOLE_LIMIT`) are
decrypted and verified completely before the first byte is served; larger
ones stream chunk by chunk, each chunk verified before release, and a failing
chunk aborts the response.  :class:`EncryptedNames` stores every path
segment under the share's deterministic name cipher.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.crypto.fileformat import (
    DEFAULT_CHUNK_SIZE,
    MAX_HEADER_SIZE,
    EncryptedFileReader,
    FileEncryptor,
    FileHeader,
    TamperedContent,
    ciphertext_size_for,
    decrypt_chunks,
    plaintext_size_for,
    read_header,
)
from gateway.crypto.names import NameCipher, NameDecryptError
from gateway.db import DataKey, StoredObject
from gateway.storage.backing import INTERNAL_PREFIX
from gateway.storage.keystore import KEY_ID_LENGTH, KeyStore

VERIFY_WHOLE_LIMIT = 16 * 1024 * 1024
# Every file clindav writes has this header layout (see KEY_ID_LENGTH).
_STANDARD_HEADER = FileHeader.create(uuid.UUID(int=0), "x" * KEY_ID_LENGTH, DEFAULT_CHUNK_SIZE)
# Header and tags of a VERIFY_WHOLE_LIMIT body: stored files up to that plus
# this are read whole.
_MAX_OVERHEAD = (
    ciphertext_size_for(VERIFY_WHOLE_LIMIT, _STANDARD_HEADER.size, DEFAULT_CHUNK_SIZE)
    - VERIFY_WHOLE_LIMIT
)


@dataclass(frozen=True)
class Sealed:
    """What to write for one body, and the key row to commit before it is visible."""

    chunks: Iterable[bytes]
    key_row: DataKey


class EncryptedContent:
    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    def seal(self, file_id: uuid.UUID, body: bytes) -> Sealed:
        encryptor, row = self.encryptor(file_id)
        return Sealed((encryptor.header(), encryptor.update(body), encryptor.finalize()), row)

    def encryptor(self, file_id: uuid.UUID) -> tuple[FileEncryptor, DataKey]:
        """A streaming CLDV writer under a fresh data key, and that key's row (not committed)."""
        data_key, row = self._keys.new_file_key(file_id)
        return FileEncryptor(data_key, file_id, row.key_id), row

    def plaintext_size(self, stored_size: int) -> int:
        return plaintext_size_for(stored_size, _STANDARD_HEADER)

    def open(self, path: Path, file_id: str | None) -> BinaryIO:
        """A seekable plaintext reader (see the module docstring for verification).

        ``file_id`` is the one the registry row for this path names (None: no
        row does).  A stored file whose header names another (files swapped
        or copied on the share) is :class:`TamperedContent`, never served as
        this path's content; the header's key row must belong to the header's
        file id (:meth:`KeyStore.data_key`).  A purged key is checked first:
        a file put back from a backup after its purge stays ``KeyMissing``.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        stored = os.fdopen(fd, "rb")
        try:
            size = os.fstat(fd).st_size
            if size <= VERIFY_WHOLE_LIMIT + _MAX_OVERHEAD:
                # One read, decryption from memory (see decrypt_chunks), no join.
                whole = bytearray(size)
                got = stored.readinto(whole)
                stored.close()
                if got != size:
                    raise TamperedContent(f"stored file shrank while read ({got} of {size})")
                header = read_header(io.BytesIO(whole[:MAX_HEADER_SIZE]))
                data_key = self._keys.data_key(header.key_id, header.file_id)
                _check_bound(header, file_id)
                return cast(BinaryIO, _PlaintextChunks(decrypt_chunks(data_key, whole)))
            header = read_header(stored)
            data_key = self._keys.data_key(header.key_id, header.file_id)
            _check_bound(header, file_id)
            reader = EncryptedFileReader(stored, data_key, header, size)
        except BaseException:
            stored.close()
            raise
        return cast(BinaryIO, _StreamingPlaintext(reader, stored))

    def file_id_of(self, path: Path) -> uuid.UUID:
        with open(path, "rb") as stored:
            return read_header(stored).file_id


def _check_bound(header: FileHeader, file_id: str | None) -> None:
    # A file no row names is not served either: a crash's leftover (``clindav
    # fsck --repair`` registers it) or something put on the share.
    if str(header.file_id) != file_id:
        raise TamperedContent(f"stored file is {header.file_id}, its registry row names {file_id}")


def registered_file_id(
    sessions: sessionmaker[Session], share: str, logical_path: str
) -> str | None:
    """The file id the registry row of a path names (None: no row)."""
    with sessions() as session:
        return session.scalar(
            select(StoredObject.file_id).where(
                StoredObject.share == share, StoredObject.logical_path == logical_path
            )
        )


class _SeekablePlaintext(io.RawIOBase):
    """Position keeping shared by the plaintext readers; ``_size`` is the plaintext size."""

    _size: int
    _pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}
        self._pos = max(0, base[whence] + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class _PlaintextChunks(_SeekablePlaintext):
    """Seekable reader over verified plaintext chunks, never joined as a whole.

    ``read(n)`` hands out the whole chunks that fit in ``n`` (WsgiDAV reads
    ``server.block_size`` at a time), or part of one chunk: a short read, as
    a raw file may give.
    """

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self._starts = list(itertools.accumulate((len(c) for c in chunks), initial=0))
        self._size = self._starts[-1]

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while piece := self.read(self._size):
                parts.append(piece)
            return b"".join(parts)
        if size == 0 or self._pos >= self._size:
            return b""
        index = bisect.bisect_right(self._starts, self._pos) - 1
        chunk, offset = self._chunks[index], self._pos - self._starts[index]
        if offset == 0 and size >= 2 * len(chunk):
            # Whole chunks up to ``size``, joined: one copy costs less than a
            # socket write (and a trip through WsgiDAV and cheroot) per chunk.
            last = bisect.bisect_right(self._starts, self._pos + size) - 1
            piece = b"".join(self._chunks[index:last])
        else:
            piece = chunk if offset == 0 and size >= len(chunk) else chunk[offset : offset + size]
        self._pos += len(piece)
        return piece


class _StreamingPlaintext(_SeekablePlaintext):
    """Seekable plaintext view of a large stored file; decrypts only what is read."""

    def __init__(self, reader: EncryptedFileReader, stored: BinaryIO) -> None:
        self._reader = reader
        self._stored = stored
        self._size = reader.plaintext_size

    def read(self, size: int = -1) -> bytes:
        end = self._size if size < 0 else self._pos + size
        data = b"".join(self._reader.iter_plaintext(self._pos, end))
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._stored.close()
        super().close()


class EncryptedNames:
    """Path segments stored as lower-case base32 AES-SIV ciphertext."""

    def __init__(self, cipher: NameCipher) -> None:
        self._cipher = cipher
        # Listings look every member up again by name: deterministic, so cacheable.
        self._encrypt = functools.lru_cache(maxsize=16384)(cipher.encrypt)

    def encode(self, segment: str) -> str:
        return self._encrypt(segment)

    def decode(self, stored: str) -> str | None:
        if stored.startswith(INTERNAL_PREFIX):
            return None
        try:
            return self._cipher.decrypt(stored)
        except NameDecryptError:
            return None

    def decode_many(self, stored: list[str]) -> list[str | None]:
        # The cipher's bulk path: no exception per foreign name, one cache lookup each.
        decoded = self._cipher.decrypt_many(stored)
        return [
            None if s.startswith(INTERNAL_PREFIX) else d
            for s, d in zip(stored, decoded, strict=True)
        ]
