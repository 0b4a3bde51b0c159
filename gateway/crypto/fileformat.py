"""CLDV version 1: the at-rest format of every stored file (spec; see docs/FORMAT.md).

A stored file is a header followed by a body of sealed chunks.  All integers
are big-endian.

Header (``26 + L`` bytes, at offset 0 of the stored file)::

    offset  size  field
    0       4     magic  b"CLDV"
    4       1     version  0x01
    5       16    file id  (UUID, raw 16 bytes; the registry row's file id)
    21      1     L = key id length, 1..255
    22      L     key id  (printable ASCII 0x21..0x7E: the id of this file's
                  data-key row, table ``data_key``, which holds the data key
                  wrapped by a master key; not a master key id, so rotation
                  re-wraps rows and never rewrites files)
    22+L    4     chunk size C (uint32, 64..16 MiB; default 65536)

The parser is strict, so the header encoding is canonical: a parsed header
re-serializes to exactly the bytes read.  Bad magic or an unknown version is
:class:`UnknownFormat`; anything else wrong with the header is
:class:`TamperedContent`.

Body: the plaintext is split into chunks of ``C`` bytes; chunk ``i`` (from 0) is
sealed with AES-256-GCM under the file's random 32-byte data key, with nonce
``i`` as an 11-byte big-endian counter followed by a flag byte (0x01 on the
final chunk, 0x00 on every other one), and with the *whole header bytes* as
associated data.  A sealed chunk is ciphertext followed by its 16-byte tag.
Every chunk but the last holds exactly ``C`` plaintext bytes; the last holds
1..C bytes, or 0 bytes only when the whole plaintext is empty.  There is always
exactly one final chunk and nothing after it.  So for plaintext size ``P`` the
chunk count is ``N = max(1, ceil(P / C))`` and the file size is
``26 + L + P + 16 * N``; the inverse (:func:`plaintext_size_for`) rejects sizes
no valid file can have (e.g. a last sealed chunk of 16 bytes or less after
another chunk).

What this detects (STREAM construction, as in age and Tink): a flipped bit
anywhere (the header is in every chunk's associated data); a chunk moved,
swapped or repeated (counter in the nonce); truncation at a chunk boundary (the
new last chunk was sealed with flag 0); truncation inside a chunk or trailing
data (the last chunk read has the wrong length or flag, or the size is
impossible); a chunk spliced from another file (another file id in the
associated data, and in practice another data key); a header naming another key
id or chunk size.  A full read (:meth:`EncryptedFileReader.iter_plaintext` with
no range, or :meth:`EncryptedFileReader.verify_all`) detects all of these; a
range read authenticates only the chunks it touches, so it detects truncation
and trailing data whenever the range touches the end of the file.  The caller
must still check that ``header.file_id`` and ``header.key_id`` match the
registry row it unwrapped the data key for (this format cannot know them).

Contract and errors: for bad stored bytes, only :class:`TamperedContent` (and
its subclass :class:`UnknownFormat`) leaves this module; a short read is
``TamperedContent``, never ``struct.error`` or ``IndexError``, and no plaintext
byte of a chunk is released before that chunk's tag is verified.  Bad arguments
from the program (a key of the wrong length, an invalid key id, an out-of-range
chunk size, use after ``finalize``) raise ``ValueError``.  I/O errors
(``OSError``) from the file object pass through unchanged.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ClindavError

MAGIC = b"CLDV"
VERSION = 1
DEFAULT_CHUNK_SIZE = 65536
MIN_CHUNK_SIZE = 64
# Bounds the memory one chunk can take when a header comes from disk.
MAX_CHUNK_SIZE = 16 * 1024 * 1024
DATA_KEY_SIZE = 32
TAG_SIZE = 16
MAX_KEY_ID_LENGTH = 255
_FIXED = struct.Struct(">4sB16sB")  # magic, version, file id, key id length
_CHUNK_SIZE = struct.Struct(">I")
# The largest header: a key id of 255 bytes (its length is one byte).
MAX_HEADER_SIZE = _FIXED.size + 255 + _CHUNK_SIZE.size
_MAX_CHUNKS = 1 << 88  # the 11-byte counter


class TamperedContent(ClindavError):
    """A stored file (or its key) failed authentication or is malformed."""

    status = 500
    code = "content-authentication-failed"
    message = "The stored file failed its integrity check."


class UnknownFormat(TamperedContent):
    """The stored bytes are not CLDV, or a CLDV version this gateway cannot read."""

    code = "unknown-file-format"
    message = "The stored file is not in a format this gateway can read."


def key_id_problem(key_id: str) -> str | None:
    """Return why ``key_id`` is not a valid key id, or None if it is."""
    if not 1 <= len(key_id) <= MAX_KEY_ID_LENGTH:
        return f"key id length {len(key_id)} is not 1..{MAX_KEY_ID_LENGTH}"
    if not all("\x21" <= ch <= "\x7e" for ch in key_id):
        return "key id is not printable ASCII without spaces"
    return None


def _chunk_size_problem(chunk_size: int) -> str | None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        return f"chunk size {chunk_size} is not {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
    return None


def _check_data_key(data_key: bytes) -> None:
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError(f"data key must be {DATA_KEY_SIZE} bytes, not {len(data_key)}")


@dataclass(frozen=True)
class FileHeader:
    """A parsed (or to-be-written) CLDV header; ``size`` is its length in bytes.

    Construct with :meth:`create` or :func:`read_header`; the constructor
    raises ``ValueError`` for fields no valid header can have.
    """

    version: int
    file_id: uuid.UUID
    key_id: str
    chunk_size: int
    size: int

    def __post_init__(self) -> None:
        problem = key_id_problem(self.key_id) or _chunk_size_problem(self.chunk_size)
        if self.version != VERSION:
            problem = f"version {self.version} is not {VERSION}"
        if problem is None and self.size != _FIXED.size + len(self.key_id) + _CHUNK_SIZE.size:
            problem = f"header size {self.size} does not match the key id"
        if problem:
            raise ValueError(problem)

    @classmethod
    def create(cls, file_id: uuid.UUID, key_id: str, chunk_size: int) -> FileHeader:
        """Header of a new version-1 file; ``ValueError`` for invalid fields."""
        size = _FIXED.size + len(key_id) + _CHUNK_SIZE.size
        return cls(VERSION, file_id, key_id, chunk_size, size)

    def to_bytes(self) -> bytes:
        """The exact header bytes (also the associated data of every chunk)."""
        key_id = self.key_id.encode("ascii")
        fixed = _FIXED.pack(MAGIC, self.version, self.file_id.bytes, len(key_id))
        return fixed + key_id + _CHUNK_SIZE.pack(self.chunk_size)


def _nonce(counter: int, last: bool) -> bytes:
    if counter >= _MAX_CHUNKS:
        raise ValueError("chunk counter overflow")
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _read_exact(f: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads; shorter only at EOF."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        piece = f.read(remaining)
        if not piece:
            break
        parts.append(piece)
        remaining -= len(piece)
    return b"".join(parts)


def read_header(f: BinaryIO) -> FileHeader:
    """Parse the header at the current position of ``f`` (normally offset 0).

    Leaves ``f`` just after the header.  Raises :class:`UnknownFormat` for bad
    magic or version and :class:`TamperedContent` for a truncated or invalid
    header.  The header is authenticated only when a chunk is decrypted.
    """
    fixed = _read_exact(f, _FIXED.size)
    if fixed[:4] != MAGIC[: len(fixed[:4])] or (len(fixed) > 4 and fixed[4] != VERSION):
        raise UnknownFormat(f"magic/version {fixed[:5]!r} is not CLDV v{VERSION}")
    if len(fixed) < _FIXED.size:
        raise TamperedContent(f"header truncated at {len(fixed)} bytes")
    _, version, file_id, key_id_length = _FIXED.unpack(fixed)
    rest = _read_exact(f, key_id_length + _CHUNK_SIZE.size)
    if len(rest) < key_id_length + _CHUNK_SIZE.size:
        raise TamperedContent("header truncated in key id or chunk size")
    key_id = rest[:key_id_length].decode("latin-1")  # checked to be ASCII below
    (chunk_size,) = _CHUNK_SIZE.unpack(rest[key_id_length:])
    problem = key_id_problem(key_id) or _chunk_size_problem(chunk_size)
    if problem:
        raise TamperedContent(f"invalid header: {problem}")
    size = _FIXED.size + len(rest)
    return FileHeader(version, uuid.UUID(bytes=file_id), key_id, chunk_size, size)


def ciphertext_size_for(plaintext_size: int, header_size: int, chunk_size: int) -> int:
    """Stored size of a file holding ``plaintext_size`` bytes (``ValueError`` if < 0)."""
    if plaintext_size < 0:
        raise ValueError("plaintext size must not be negative")
    chunks = max(1, -(-plaintext_size // chunk_size))
    return header_size + plaintext_size + chunks * TAG_SIZE


def plaintext_size_for(ciphertext_size: int, header: FileHeader) -> int:
    """Plaintext size of a stored file of ``ciphertext_size`` bytes (header included).

    Raises :class:`TamperedContent` when no valid file has that size.
    """
    body = ciphertext_size - header.size
    if body == TAG_SIZE:
        return 0  # the lone empty final chunk of an empty file
    sealed = header.chunk_size + TAG_SIZE
    chunks = -(-body // sealed)
    # A last chunk of <= 16 bytes would hold no plaintext: only allowed alone.
    if body < TAG_SIZE or body - (chunks - 1) * sealed <= TAG_SIZE:
        raise TamperedContent(f"impossible stored size {ciphertext_size}")
    return body - chunks * TAG_SIZE


class FileEncryptor:
    """Streaming writer of one CLDV file: ``header()``, then ``update()``s, then ``finalize()``.

    The output of ``header() + update(...) + ... + finalize()`` is the stored
    file.  ``update`` seals only chunks known not to be the last, so it holds
    back up to one full chunk.  Raises ``ValueError`` for a bad key, key id or
    chunk size, and for ``update``/``finalize`` after ``finalize``.
    """

    def __init__(
        self,
        data_key: bytes,
        file_id: uuid.UUID,
        key_id: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        _check_data_key(data_key)
        self.file_header = FileHeader.create(file_id, key_id, chunk_size)
        self._header_bytes = self.file_header.to_bytes()
        self._aead = AESGCM(data_key)
        self._pending = b""
        self._counter = 0
        self._finished = False

    def header(self) -> bytes:
        """The header bytes that start the stored file."""
        return self._header_bytes

    def _seal(self, chunk: bytes | memoryview, last: bool) -> bytes:
        nonce = _nonce(self._counter, last)
        self._counter += 1
        return self._aead.encrypt(nonce, chunk, self._header_bytes)

    def update(self, data: bytes) -> bytes:
        """Add plaintext; return the chunks sealed so far (possibly ``b""``)."""
        if self._finished:
            raise ValueError("update() after finalize()")
        buffer = self._pending + data if self._pending else bytes(data)
        size = self.file_header.chunk_size
        # Keep the last 1..size bytes: they may turn out to be the final chunk.
        full = (len(buffer) - 1) // size if buffer else 0
        view = memoryview(buffer)  # slices of bytes: no copy per chunk
        sealed = [self._seal(view[i * size : (i + 1) * size], False) for i in range(full)]
        self._pending = buffer[full * size :]
        return b"".join(sealed)

    def finalize(self) -> bytes:
        """Seal and return the final chunk; the encryptor is then finished."""
        if self._finished:
            raise ValueError("finalize() called twice")
        self._finished = True
        last, self._pending = self._pending, b""
        return self._seal(last, True)


def encrypt_bytes(
    data_key: bytes,
    file_id: uuid.UUID,
    key_id: str,
    plaintext: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """The whole stored file for ``plaintext`` (errors as :class:`FileEncryptor`)."""
    encryptor = FileEncryptor(data_key, file_id, key_id, chunk_size)
    return b"".join((encryptor.header(), encryptor.update(plaintext), encryptor.finalize()))


class EncryptedFileReader:
    """Authenticated random-access reader of one stored file.

    ``f`` is the seekable stored file with the header at offset 0,
    ``ciphertext_size`` its total size (from ``stat``), ``header`` what
    :func:`read_header` returned.  The constructor raises
    :class:`TamperedContent` when the size is impossible, ``ValueError`` for a
    data key of the wrong length.  Chunks are located by arithmetic, not scanned.
    """

    def __init__(
        self, f: BinaryIO, data_key: bytes, header: FileHeader, ciphertext_size: int
    ) -> None:
        _check_data_key(data_key)
        self._f = f
        self._header = header
        self._associated_data = header.to_bytes()
        self._aead = AESGCM(data_key)
        self._ciphertext_size = ciphertext_size
        self._plaintext_size = plaintext_size_for(ciphertext_size, header)
        self._chunk_count = max(1, -(-self._plaintext_size // header.chunk_size))

    @property
    def plaintext_size(self) -> int:
        """Size in bytes of the plaintext (what GET serves as Content-Length)."""
        return self._plaintext_size

    def _read_chunk(self, index: int) -> bytes:
        """Read, authenticate and return the plaintext of chunk ``index``."""
        sealed_size = self._header.chunk_size + TAG_SIZE
        offset = self._header.size + index * sealed_size
        last = index == self._chunk_count - 1
        length = self._ciphertext_size - offset if last else sealed_size
        self._f.seek(offset)
        sealed = _read_exact(self._f, length)
        if len(sealed) != length:
            raise TamperedContent(f"chunk {index} is short: {len(sealed)} of {length} bytes")
        # The size came from stat; the file itself must also end here.
        if last and self._f.read(1):
            raise TamperedContent("data after the final chunk")
        return _open_chunk(self._aead, self._associated_data, index, last, sealed)

    def iter_plaintext(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the plaintext of ``[start, end)`` chunk by chunk, each authenticated first.

        Slice semantics: ``end`` None or past the end means the end of the file;
        an empty range reads nothing.  Negative bounds raise ``ValueError`` (at
        the call).  A full read (``start == 0`` and ``end`` None or >= size)
        reads every chunk, so it detects truncation; a range read touches only
        the chunks that cover it.  Raises :class:`TamperedContent` while
        iterating, before yielding any byte of a bad chunk.
        """
        if start < 0 or (end is not None and end < 0):
            raise ValueError("range bounds must not be negative")
        stop = self._plaintext_size if end is None else min(end, self._plaintext_size)
        if start == 0 and stop == self._plaintext_size:
            chunks = range(self._chunk_count)  # includes the empty file's one chunk
        elif start >= stop:
            chunks = range(0)
        else:
            size = self._header.chunk_size
            chunks = range(start // size, (stop - 1) // size + 1)
        return self._iter_chunks(chunks, start, stop)

    def _iter_chunks(self, chunks: range, start: int, stop: int) -> Iterator[bytes]:
        size = self._header.chunk_size
        for index in chunks:
            plaintext = self._read_chunk(index)
            base = index * size
            piece = plaintext[max(start - base, 0) : stop - base]
            if piece:
                yield piece

    def verify_all(self) -> None:
        """Authenticate the whole file; raise :class:`TamperedContent` if any part fails."""
        for _ in self.iter_plaintext():
            pass


def _open_chunk(
    aead: AESGCM, associated_data: bytes, index: int, last: bool, sealed: bytes | memoryview
) -> bytes:
    try:
        return aead.decrypt(_nonce(index, last), sealed, associated_data)
    except InvalidTag:
        raise TamperedContent(f"chunk {index} failed authentication") from None


def decrypt_bytes(data_key: bytes, stored: bytes) -> bytes:
    """Plaintext of a whole stored file held in memory (errors as the reader)."""
    return b"".join(decrypt_chunks(data_key, stored))


def decrypt_chunks(data_key: bytes, stored: bytes | bytearray) -> list[bytes]:
    """Every chunk's plaintext, each authenticated, of a whole stored file in memory.

    Chunks are decrypted from slices of ``stored`` and not joined: no read,
    seek or copy per chunk, which is most of what a small GET costs otherwise.
    """
    view = memoryview(stored)
    header = read_header(io.BytesIO(view[:MAX_HEADER_SIZE]))  # copies only the header
    _check_data_key(data_key)
    plaintext_size_for(len(stored), header)  # refuses impossible sizes
    aead, associated_data = AESGCM(data_key), header.to_bytes()
    sealed_size = header.chunk_size + TAG_SIZE
    count = max(1, -(-(len(stored) - header.size) // sealed_size))
    parts = []
    for index in range(count):
        offset = header.size + index * sealed_size
        sealed = view[offset : offset + sealed_size]
        parts.append(_open_chunk(aead, associated_data, index, index == count - 1, sealed))
    return parts
