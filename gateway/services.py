"""What a running gateway is made of, built once at start-up.

:class:`Services` is shared by all request threads and holds no per-request
state.  :class:`ContentCodec` is the seam between the DAV provider and the
at-rest format: the provider hands it plaintext and gets back what to store,
and asks it for a reader of a stored file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy.orm import sessionmaker

from gateway.auth import Authenticator
from gateway.policy import Policy
from gateway.settings import Settings
from gateway.storage import BackingStore
from plugins.audit import AuditLog


class ContentCodec(Protocol):
    def seal(self, file_id: uuid.UUID, body: bytes) -> Iterable[bytes]:
        """The bytes to store for ``body`` (ciphertext when encryption is on)."""
        ...

    def plaintext_size(self, path: Path, stored_size: int) -> int: ...

    def open(self, path: Path) -> BinaryIO:
        """A seekable reader of the plaintext of a stored file."""
        ...


class PlainContent:
    """Content stored as it is (only for shares whose policy allows it)."""

    def seal(self, file_id: uuid.UUID, body: bytes) -> Iterable[bytes]:
        return (body,)

    def plaintext_size(self, path: Path, stored_size: int) -> int:
        return stored_size

    def open(self, path: Path) -> BinaryIO:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        return os.fdopen(fd, "rb")


@dataclass(frozen=True)
class ShareRuntime:
    name: str
    url: str
    store: BackingStore
    content: ContentCodec


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: sessionmaker
    policy: Policy
    audit: AuditLog
    authenticator: Authenticator
    shares: dict[str, ShareRuntime]
