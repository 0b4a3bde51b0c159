"""Deterministic encryption of path segments on the backing share.

Each path segment is encrypted on its own (the backing tree mirrors the logical
tree), so renaming or moving a folder re-encrypts only the moved segment.

- Key: a 64-byte AES-SIV key per share, HKDF-SHA256 of the share's random
  32-byte name seed (kept wrapped by the master key in the key table, so a
  master-key rotation re-wraps the seed and renames nothing), no salt,
  ``info = b"clindav-names-v1:" + share name (UTF-8)``; different shares thus
  store the same name differently.
- Plaintext: the segment in Unicode NFC, UTF-8 encoded (so an NFD name from a
  Mac and the NFC name from Windows are the same file); no associated data
  (binding the parent path would force re-encrypting a whole subtree on MOVE).
- Ciphertext: AES-SIV (RFC 5297) output, 16-byte synthetic IV + ciphertext,
  encoded as lower-case RFC 4648 base32 without padding.  Every stored name is
  therefore 28..255 characters of ``[a-z2-7]``: it survives case-insensitive
  SMB/NTFS shares, never collides with reserved DOS names and has no dots.
- Length: a stored name must fit in 255 bytes, so a segment may be at most
  :data:`MAX_PLAIN_LENGTH` = 255 * 5 // 8 - 16 = 143 UTF-8 bytes; longer
  segments raise :class:`NameTooLong` (414).  An empty segment raises
  ``InvalidPath``.
- Decoding accepts upper or mixed case (a case-insensitive share may change the
  case) but only the canonical encoding otherwise: no padding, no non-zero
  trailing bits.

Determinism is the point (a path lookup must find the stored name without a
listing); it reveals which stored names are equal and the segment's length,
nothing else.  :meth:`NameCipher.decrypt` raises :class:`NameDecryptError` for
any name not produced by :meth:`NameCipher.encrypt` under the same key;
:meth:`NameCipher.decrypt_many` returns ``None`` for those instead (listings of
folders that hold legacy or foreign files).  Decryptions are cached in a
bounded per-instance LRU (thread-safe: ``functools.lru_cache``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import unicodedata
from collections.abc import Iterable
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import ClindavError, InvalidPath

NAME_KEY_SIZE = 64
MASTER_KEY_SIZE = 32
MAX_STORED_LENGTH = 255
SIV_SIZE = 16
# base32 writes 5 bits per character: 255 characters carry 159 whole bytes.
MAX_PLAIN_LENGTH = MAX_STORED_LENGTH * 5 // 8 - SIV_SIZE
DEFAULT_CACHE_SIZE = 8192
_INFO_PREFIX = b"clindav-names-v1:"
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class NameTooLong(ClindavError):
    """A path segment is too long to be stored encrypted."""

    status = 414
    code = "name-too-long"
    message = "A file or folder name is too long."


class NameDecryptError(ClindavError):
    """A stored name was not produced by this share's name cipher."""

    status = 500
    code = "name-decrypt-failed"
    message = "A stored name could not be read."


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _decode(stored: str) -> bytes | None:
    """Bytes of a canonical lower-case unpadded base32 string, or None."""
    if not stored or len(stored) > MAX_STORED_LENGTH or not _ALPHABET.issuperset(stored):
        return None
    try:
        raw = base64.b32decode(stored.upper() + "=" * (-len(stored) % 8))
    except (binascii.Error, ValueError):
        return None  # impossible length
    # b32decode ignores non-zero trailing bits; only our own encoding is valid.
    return raw if _encode(raw) == stored else None


class NameCipher:
    """Encrypts and decrypts the path segments of one share (see module docstring).

    ``name_key`` is the 64-byte AES-SIV key (``ValueError`` otherwise); use
    :meth:`for_share` to derive it from the share's name seed.
    """

    max_plain_length: ClassVar[int] = MAX_PLAIN_LENGTH

    def __init__(self, name_key: bytes, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if len(name_key) != NAME_KEY_SIZE:
            raise ValueError(f"name key must be {NAME_KEY_SIZE} bytes, not {len(name_key)}")
        self._siv = AESSIV(name_key)
        # Per instance, so each share's cache is bounded and dies with its cipher.
        self._lookup = functools.lru_cache(maxsize=cache_size)(self._decrypt_uncached)

    @classmethod
    def for_share(cls, seed: bytes, share: str) -> NameCipher:
        """The name cipher of ``share`` from its 32-byte name seed (else ``ValueError``)."""
        if len(seed) != MASTER_KEY_SIZE:
            raise ValueError(f"name seed must be {MASTER_KEY_SIZE} bytes, not {len(seed)}")
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=NAME_KEY_SIZE,
            salt=None,
            info=_INFO_PREFIX + share.encode("utf-8"),
        )
        return cls(hkdf.derive(seed))

    def encrypt(self, segment: str) -> str:
        """Stored name of ``segment``; the same segment always gives the same name.

        Raises :class:`NameTooLong` above :data:`MAX_PLAIN_LENGTH` UTF-8 bytes
        (after NFC) and ``InvalidPath`` for an empty segment.
        """
        plaintext = unicodedata.normalize("NFC", segment).encode("utf-8")
        if not plaintext:
            raise InvalidPath("empty path segment")
        if len(plaintext) > MAX_PLAIN_LENGTH:
            # The detail names only the length: the segment may be a patient id.
            raise NameTooLong(f"segment of {len(plaintext)} UTF-8 bytes > {MAX_PLAIN_LENGTH}")
        return _encode(self._siv.encrypt(plaintext, None))

    def decrypt(self, stored: str) -> str:
        """The segment (NFC) behind ``stored``, in any letter case.

        Raises :class:`NameDecryptError` if ``stored`` was not produced by
        :meth:`encrypt` under this cipher's key.
        """
        segment = self._lookup(stored.lower())
        if segment is None:
            raise NameDecryptError(f"stored name of {len(stored)} characters is not ours")
        return segment

    def decrypt_many(self, stored: Iterable[str]) -> list[str | None]:
        """Decrypt each name of a listing; ``None`` for names that are not ours."""
        return [self._lookup(name.lower()) for name in stored]

    def _decrypt_uncached(self, stored: str) -> str | None:
        raw = _decode(stored)
        if raw is None or len(raw) <= SIV_SIZE:
            return None
        try:
            return self._siv.decrypt(raw, None).decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            return None
