"""What a running gateway is made of, built once at start-up.

:class:`Services` is shared by all request threads and holds no per-request
state.  :class:`ContentCodec` is the seam between the DAV provider and the
at-rest format (:mod:`gateway.storage.content`): the provider hands it plaintext and
gets back what to store, and asks it for a reader of a stored file.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from gateway.auth.apppasswords import AppPasswords
from gateway.auth.base import Authenticator
from gateway.change import ChangeSessions
from gateway.clock import Clock
from gateway.crypto.fileformat import FileEncryptor
from gateway.db import DataKey
from gateway.nextcloud.chunks import SEED as CHUNK_SEED
from gateway.nextcloud.chunks import ChunkStore
from gateway.policy import Policy
from gateway.records.audit import AuditLog
from gateway.records.trash import Trash
from gateway.server.forwarding import ProxyTrust
from gateway.settings import Settings
from gateway.storage.backing import BackingStore
from gateway.storage.content import Sealed
from gateway.storage.keystore import KeyStore

if TYPE_CHECKING:
    from gateway.storage.marker import MarkerWatch


class ContentCodec(Protocol):
    def seal(self, file_id: uuid.UUID, body: bytes) -> Sealed:
        """The ciphertext to store for ``body`` and its key row."""
        ...

    def encryptor(self, file_id: uuid.UUID) -> tuple[FileEncryptor, DataKey]:
        """A streaming writer of the stored form under a fresh data key, and its key row."""
        ...

    def plaintext_size(self, stored_size: int) -> int: ...

    def open(self, path: Path, file_id: str | None) -> BinaryIO:
        """A seekable reader of the verified plaintext of a stored file, which must
        be ``file_id`` (the one its registry row names; None: no row does)."""
        ...


@dataclass(frozen=True)
class ShareRuntime:
    name: str
    url: str
    store: BackingStore
    content: ContentCodec


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: ChangeSessions
    policy: Policy
    audit: AuditLog
    authenticator: Authenticator
    keys: KeyStore
    shares: dict[str, ShareRuntime]
    clock: Clock
    # Each share's marker, checked per request (gateway/storage/marker.py); none in
    # services that only read (e.g. `clindav migrate --dry-run`).
    markers: dict[str, MarkerWatch] = field(default_factory=dict)

    @cached_property
    def proxies(self) -> ProxyTrust:
        """Whose forwarding headers count (``server.trusted_proxies``), for every door."""
        return ProxyTrust(self.settings.server.trusted_proxies)

    @cached_property
    def app_passwords(self) -> AppPasswords:
        """The Nextcloud apps' devices, for every door; their use noted by this clock."""
        return AppPasswords(self.sessions, self.clock)

    @cached_property
    def chunks(self) -> ChunkStore:
        """The Nextcloud apps' chunked uploads in progress, for their door and the sweeper."""
        conf = self.settings.nextcloud
        return ChunkStore(
            self.settings.resolve(conf.upload_dir),  # made by the first upload
            self.keys.seed(CHUNK_SEED),
            conf.upload_expiry.total_seconds(),
            self.settings.limits.max_stream_bytes,
        )

    @cached_property
    def trash(self) -> Trash:
        """Deletion, restore, purge and holds, for every door (WebDAV, CLI, sweeper)."""
        return Trash(self)
