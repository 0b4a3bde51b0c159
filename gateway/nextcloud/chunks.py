"""Chunked upload v2 staging: chunks encrypted as they arrive, read back as one stream.

A transfer is a folder ``<nextcloud.upload_dir>/<user>/<transfer>/`` (the
user part a hash of the uid, the transfer part a hash of the app's folder
name), each chunk one file in the at-rest format (gateway/crypto/fileformat.py)
named by its number.  A chunk's body is encrypted block by block while it
arrives, into a temp file (0600, never an existing file or a link) renamed
into place once complete: no plaintext touches the disk, and chunks of one
transfer may arrive in parallel.

Keys: each chunk file has its own random file id (in its header); its data
key is derived from the instance's upload seed (in the key table, wrapped by
the master key) and the user, transfer, chunk name and that id.  Every
gateway process can therefore read every chunk, after a restart too, and no
key row is needed for what is thrown away after assembly.

:meth:`ChunkStore.assembled` reads the chunks back in order as one stream of
plaintext, a block at a time (never the whole file in memory); the final MOVE
feeds it to the ordinary PUT (gateway/nextcloud/uploads.py).  Transfers whose
folder has not changed for ``nextcloud.upload_expiry`` are removed by
:meth:`ChunkStore.sweep`.

A chunk may be as large as the largest upload, and a transfer may have any
number of them, so each user's staged chunks (every open transfer together)
are bounded by that largest upload (``limits.max_stream_bytes``, what one
assembled file may be): a chunk that would take them over is refused, 507
``upload-staging-full``, before any byte of it is read.  Without that one
account could fill the staging disk (and every other account's uploads with it).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.crypto.fileformat import (
    DEFAULT_CHUNK_SIZE,
    EncryptedFileReader,
    FileEncryptor,
    FileHeader,
    plaintext_size_for,
    read_header,
)
from gateway.errors import BadRequest, ClindavError, IncompleteBody, NotFound
from gateway.storage.backing import TempFile, replace_into

SEED = "@nextcloud-uploads"
_KEY_ID = "nextcloud-chunk"
# Android 000001.., nextcloudcmd 0000000000000000.., iOS 1, 2, ...
_CHUNK_NAME = re.compile(r"^[0-9]{1,20}$")
_TRANSFER = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
BLOCK = 1024 * 1024
# Every chunk file's header has this size (one key id, one chunk size): what the
# staged bytes are counted with, from file sizes alone.
_HEADER = FileHeader.create(uuid.UUID(int=0), _KEY_ID, DEFAULT_CHUNK_SIZE)


class InvalidChunkName(BadRequest):
    code = "invalid-chunk-name"
    message = "Chunk names are numbers and transfer names letters, digits, '.', '_' or '-'."


class TransferSizeMismatch(BadRequest):
    code = "upload-size-mismatch"
    message = "The chunks received do not add up to the announced size; nothing was stored."


class StagingFull(ClindavError):
    status = 507
    code = "upload-staging-full"
    message = (
        "Your unfinished uploads already hold as much as one upload may; "
        "let them finish or cancel one, then try again."
    )


@dataclass(frozen=True)
class Chunk:
    name: str
    size: int  # plaintext bytes


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ChunkStore:
    def __init__(self, root: Path, seed: bytes, expiry: float, room: int) -> None:
        """``room``: the most plaintext bytes one user's chunks may hold, all transfers together."""
        self.root = root
        self._seed = seed
        self._expiry = expiry
        self._room = room

    def folder(self, uid: str, transfer: str) -> Path:
        if not _TRANSFER.match(transfer):
            raise InvalidChunkName(f"transfer name {transfer[:64]!r}")
        return self.root / _hex(uid) / _hex(transfer)

    def exists(self, uid: str, transfer: str) -> bool:
        return self.folder(uid, transfer).is_dir()

    def create(self, uid: str, transfer: str) -> bool:
        """Make the transfer's folder; False if it was there already."""
        folder = self.folder(uid, transfer)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            return False
        return True

    def _key(self, uid: str, transfer: str, name: str, file_id: uuid.UUID) -> bytes:
        message = "\0".join((uid, transfer, name, file_id.hex)).encode()
        return hmac.new(self._seed, message, hashlib.sha256).digest()

    def write(self, uid: str, transfer: str, name: str, body: BinaryIO, length: int) -> int:
        """Store chunk ``name`` from ``length`` bytes of ``body``, encrypted as it arrives."""
        if not _CHUNK_NAME.match(name):
            raise InvalidChunkName(f"chunk name {name[:64]!r}")
        folder = self.folder(uid, transfer)
        if not folder.is_dir():
            raise NotFound(f"no transfer {transfer!r} of {uid}")
        staged = self.staged(uid, but=folder / name)
        if staged + length > self._room:
            raise StagingFull(
                f"{uid}: {staged} bytes staged, a chunk of {length}, {self._room} room"
            )
        file_id = uuid.uuid4()
        encryptor = FileEncryptor(self._key(uid, transfer, name, file_id), file_id, _KEY_ID)
        temp = TempFile(folder)
        try:
            temp.write(encryptor.header())
            left = length
            while left > 0:
                block = body.read(min(BLOCK, left))
                if not block:
                    raise IncompleteBody(f"chunk {name}: {length - left} of {length} bytes")
                left -= len(block)
                temp.write(encryptor.update(block))
            temp.write(encryptor.finalize())
            replace_into(temp.finish(), folder / name)
        except BaseException:
            temp.discard()
            raise
        os.utime(folder)  # the transfer is alive: not swept
        return length

    def staged(self, uid: str, but: Path) -> int:
        """Plaintext bytes of ``uid``'s complete chunks in every transfer, but the file ``but``
        (the chunk a resend replaces).  Chunks still arriving (temp files) are not counted."""
        user = self.root / _hex(uid)
        if not user.is_dir():
            return 0
        total = 0
        for transfer in os.scandir(user):
            if not transfer.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(transfer.path):
                if _CHUNK_NAME.match(entry.name) and entry.path != str(but):
                    size = entry.stat(follow_symlinks=False).st_size
                    total += plaintext_size_for(size, _HEADER)
        return total

    def chunks(self, uid: str, transfer: str) -> list[Chunk]:
        """The transfer's complete chunks in assembly order (numerically)."""
        folder = self.folder(uid, transfer)
        if not folder.is_dir():
            raise NotFound(f"no transfer {transfer!r} of {uid}")
        found = []
        for entry in os.scandir(folder):
            if _CHUNK_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                with open(entry.path, "rb") as stored:
                    reader = self._reader(uid, transfer, entry.name, stored)
                    found.append(Chunk(entry.name, reader.plaintext_size))
        return sorted(found, key=lambda chunk: int(chunk.name))

    def _reader(self, uid: str, transfer: str, name: str, stored: BinaryIO) -> EncryptedFileReader:
        header = read_header(stored)
        key = self._key(uid, transfer, name, header.file_id)
        return EncryptedFileReader(stored, key, header, os.fstat(stored.fileno()).st_size)

    def assembled(self, uid: str, transfer: str, expected: int | None) -> AssembledBody:
        """The transfer's plaintext as one readable stream, after checking its size."""
        chunks = self.chunks(uid, transfer)
        total = sum(chunk.size for chunk in chunks)
        if expected is not None and expected != total:
            raise TransferSizeMismatch(f"{transfer}: {total} bytes received, {expected} announced")
        pieces = self._pieces(uid, transfer, [chunk.name for chunk in chunks])
        return AssembledBody(pieces, total)

    def _pieces(self, uid: str, transfer: str, names: list[str]) -> Iterator[bytes]:
        folder = self.folder(uid, transfer)
        for name in names:
            with open(folder / name, "rb") as stored:
                yield from self._reader(uid, transfer, name, stored).iter_plaintext()

    def remove(self, uid: str, transfer: str) -> bool:
        folder = self.folder(uid, transfer)
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        return True

    def sweep(self) -> int:
        """Remove transfers untouched for the expiry; how many went."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - self._expiry
        removed = 0
        for user in os.scandir(self.root):
            if not user.is_dir(follow_symlinks=False):
                continue
            for transfer in os.scandir(user.path):
                if transfer.is_dir(follow_symlinks=False) and transfer.stat().st_mtime < cutoff:
                    shutil.rmtree(transfer.path, ignore_errors=True)
                    removed += 1
        return removed


class AssembledBody:
    """A file-like ``read(n)`` over the chunks' plaintext: what the PUT reads as its body."""

    def __init__(self, pieces: Iterator[bytes], size: int) -> None:
        self._pieces = pieces
        self._buffer = b""
        self.size = size

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
