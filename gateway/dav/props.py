"""Dead properties (PROPPATCH) kept in clindav's database.

Implements the interface WsgiDAV expects of a property manager.  WsgiDAV
hands values over as serialised XML (bytes) and parses what it gets back.
Keys are resource URLs (share URL plus logical path).  Values can carry
patient data, so they are stored encrypted (:class:`PropertyCipher`,
AES-256-GCM under a key from the ``@dead-properties`` seed, the property name
bound as associated data so a value cannot be moved onto another property).
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from gateway.crypto.fileformat import TamperedContent
from gateway.dav.held import protect
from gateway.db import DeadProperty, starts_with

PROPERTY_SEED = "@dead-properties"
_CACHE = "clindav.dead-properties"
_SEAL_OVERHEAD = 12 + 16  # AES-GCM nonce and tag


def _forget(environ: Any) -> None:
    """A change to dead properties drops the request's read cache."""
    if environ is not None:
        environ.pop(_CACHE, None)


class PropertyCipher:
    def __init__(self, seed: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"clindav-props-v1")
        self._aead = AESGCM(key.derive(seed))

    def seal(self, name: str, value: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, value, name.encode("utf-8"))

    def open(self, name: str, stored: bytes) -> bytes:
        try:
            return self._aead.decrypt(stored[:12], stored[12:], name.encode("utf-8"))
        except InvalidTag:
            raise TamperedContent(f"dead property {name!r} failed authentication") from None


class DatabasePropertyManager:
    def __init__(self, sessions: sessionmaker, cipher: PropertyCipher) -> None:
        self._sessions = sessions
        self._cipher = cipher

    def __repr__(self) -> str:
        return "DatabasePropertyManager()"

    def _folder_props(self, norm_url: str, environ: Any) -> dict[str, dict[str, bytes]]:
        """Every dead property below the URL's folder, read once per request.

        A PROPFIND of a folder asks for each member's properties in turn; one
        query for the folder instead of one per member (the cache lives in the
        request's environ, so nothing outlives the request or crosses users).
        """
        return self.read_below(norm_url.rstrip("/").rsplit("/", 1)[0] + "/", environ, url=norm_url)

    def read_below(
        self, folder: str, environ: Any, *, url: str | None = None
    ) -> dict[str, dict[str, bytes]]:
        """URL -> name -> stored (sealed) value, for ``folder`` (ending in /) and below.

        One query per request: a read of a folder above ``url`` (default:
        ``folder``) holds its properties too, so a listing's members and the
        folder itself come from one read.
        """
        cache: dict[str, dict[str, dict[str, bytes]]] = (
            environ.setdefault(_CACHE, {}) if environ is not None else {}
        )
        for read, found in cache.items():
            if (url or folder).startswith(read):
                return found
        props: dict[str, dict[str, bytes]] = {}
        with self._sessions() as session:
            rows = session.execute(
                select(DeadProperty.url, DeadProperty.name, DeadProperty.value).where(
                    starts_with(DeadProperty.url, folder)
                )
            )
            for row_url, name, value in rows:
                props.setdefault(row_url, {})[name] = value
        cache[folder] = props
        return props

    def get_properties(self, norm_url: str, environ: Any = None) -> list[str]:
        return list(self._folder_props(norm_url, environ).get(norm_url, {}))

    def get_property(self, norm_url: str, name: str, environ: Any = None) -> bytes | None:
        stored = self._folder_props(norm_url, environ).get(norm_url, {}).get(name)
        return None if stored is None else self._cipher.open(name, stored)

    def usage(self, norm_url: str, environ: Any = None) -> dict[str, int]:
        """Name -> plaintext size of each dead property of a resource (for the caps)."""
        stored = self._folder_props(norm_url, environ).get(norm_url, {})
        return {name: len(value) - _SEAL_OVERHEAD for name, value in stored.items()}

    def write_property(
        self, norm_url: str, name: str, value: bytes, dry_run: bool = False, environ: Any = None
    ) -> None:
        protect(name)  # clindav's own properties are live, never a client's
        _forget(environ)
        if dry_run:
            return
        value = self._cipher.seal(name, value)
        with self._sessions.begin() as session:
            row = session.scalar(
                select(DeadProperty).where(DeadProperty.url == norm_url, DeadProperty.name == name)
            )
            if row is None:
                session.add(DeadProperty(url=norm_url, name=name, value=value))
            else:
                row.value = value

    def remove_property(
        self, norm_url: str, name: str, dry_run: bool = False, environ: Any = None
    ) -> None:
        protect(name)
        _forget(environ)
        if dry_run:
            return
        with self._sessions.begin() as session:
            session.execute(
                delete(DeadProperty).where(DeadProperty.url == norm_url, DeadProperty.name == name)
            )

    def remove_properties(self, norm_url: str, environ: Any = None) -> None:
        _forget(environ)
        with self._sessions.begin() as session:
            session.execute(delete(DeadProperty).where(_url_or_child(norm_url)))

    def copy_properties(self, src_url: str, dest_url: str, environ: Any = None) -> None:
        _forget(environ)
        with self._sessions.begin() as session:
            rows = session.scalars(select(DeadProperty).where(DeadProperty.url == src_url)).all()
            session.execute(delete(DeadProperty).where(DeadProperty.url == dest_url))
            for row in rows:
                session.add(DeadProperty(url=dest_url, name=row.name, value=row.value))

    def move_properties(
        self, src_url: str, dest_url: str, with_children: bool, environ: Any = None
    ) -> None:
        _forget(environ)
        with self._sessions.begin() as session:
            where = _url_or_child(src_url) if with_children else DeadProperty.url == src_url
            for row in session.scalars(select(DeadProperty).where(where)).all():
                row.url = dest_url + row.url[len(src_url) :]


def _url_or_child(url: str) -> Any:
    base = url.rstrip("/")
    return (DeadProperty.url == url) | starts_with(DeadProperty.url, base + "/")
