"""``clindav fsck``: do the backing share, the registry and the key table agree?

Findings, by kind:

* ``orphan-ciphertext``: a stored file no registry row names (e.g. a crash
  between rename and commit, or a file put back from a backup);
* ``missing-ciphertext``: a registry row whose file is gone;
* ``key-purged``: a stored file whose key row no longer exists (purged:
  unreadable for good);
* ``authentication-failed``: a stored file that fails its integrity check;
* ``misplaced-ciphertext``: a stored file whose registry row names another
  path (files swapped or copied on the share: the gateway refuses to serve
  it, 500 content-authentication-failed);
* ``orphan-key``: a key row with neither a file nor a registry row;
* ``legacy-file``: a file clindav did not write (no CLDV header).

``--repair`` never deletes a file.  A readable orphan (the usual trace of a
crash between rename and commit: the new version is in place, the registry
still names the old one) is registered again at its path; files that cannot
be read are moved into the share's ``.clindav-quarantine/`` folder (hidden
from clients); orphan key rows older than an hour are deleted (younger ones
may belong to a write in progress).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import mimetypes
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select

from gateway.admin.progress import Progress
from gateway.crypto.fileformat import (
    EncryptedFileReader,
    TamperedContent,
    UnknownFormat,
    read_header,
)
from gateway.db import DataKey, StoredObject, utcnow
from gateway.records.trash import TRASH_FOLDER
from gateway.services import Services, ShareRuntime
from gateway.storage.backing import INTERNAL_PREFIX
from gateway.storage.keystore import KeyMissing, KeyStore

QUARANTINE = INTERNAL_PREFIX + "quarantine"
_QUARANTINED_KINDS = {"key-purged", "authentication-failed"}


@dataclass(frozen=True)
class Finding:
    kind: str
    share: str
    location: str  # backing path relative to the share folder, or a key id
    logical_path: str | None
    detail: str = ""


def stored_files(share: ShareRuntime) -> Iterator[tuple[Path, str | None]]:
    """Every regular file of a share with its logical path (None if a name is not ours)."""
    root = share.store.root
    for folder, dirs, files in os.walk(root):
        # The trash holds registered ciphertext too; temp and quarantine do not.
        dirs[:] = [d for d in dirs if not d.startswith(INTERNAL_PREFIX) or d == TRASH_FOLDER]
        logical_dir = _logical(share, Path(folder).relative_to(root))
        in_trash = TRASH_FOLDER in Path(folder).relative_to(root).parts
        for name in files:
            if name.startswith(INTERNAL_PREFIX) and not in_trash:
                continue
            leaf = share.store.names.decode(name)
            logical = None if logical_dir is None or leaf is None else f"{logical_dir}/{leaf}"
            yield Path(folder) / name, logical


def _logical(share: ShareRuntime, relative: Path) -> str | None:
    parts = []
    for stored in relative.parts:
        name = share.store.names.decode(stored)
        if name is None:
            return None
        parts.append(name)
    return "/" + "/".join(parts) if parts else ""


def check_file(keys: KeyStore, path: Path) -> tuple[str | None, str]:
    """(file id, problem kind or "") for one stored file."""
    with open(path, "rb") as stored:
        try:
            header = read_header(stored)
        except UnknownFormat:
            return None, "legacy-file"
        except TamperedContent:
            return None, "authentication-failed"
        try:
            data_key = keys.data_key(header.key_id, header.file_id)
            EncryptedFileReader(
                stored, data_key, header, os.fstat(stored.fileno()).st_size
            ).verify_all()
        except KeyMissing:
            return str(header.file_id), "key-purged"
        except TamperedContent:
            return str(header.file_id), "authentication-failed"
    return str(header.file_id), ""


def fsck(services: Services, *, repair: bool = False) -> list[Finding]:
    findings: list[Finding] = []
    seen_files: set[str] = set()
    for share in services.shares.values():
        findings += _check_share(services, share, seen_files)
    findings += _check_registry(services, seen_files)
    findings += _check_keys(services, seen_files, repair=repair)
    if repair:
        for finding in findings:
            if finding.kind in _QUARANTINED_KINDS:
                _quarantine(services.shares[finding.share], finding.location)
            elif finding.kind == "orphan-ciphertext" and finding.logical_path:
                _register(services, finding)
            elif finding.kind == "orphan-ciphertext":
                _quarantine(services.shares[finding.share], finding.location)
    return findings


def _register(services: Services, finding: Finding) -> None:
    """Make a readable orphan the registered version at its logical path."""
    share = services.shares[finding.share]
    path = share.store.root / finding.location
    with open(path, "rb") as stored:
        file_id = str(read_header(stored).file_id)
    # An orphan has no registry row yet: it is read as the file its header names.
    with share.content.open(path, file_id) as plain:
        body = plain.read()
    assert finding.logical_path is not None
    with services.sessions.begin() as session:
        services.audit.lock_head(session)
        session.execute(
            delete(StoredObject).where(
                StoredObject.share == share.name, StoredObject.logical_path == finding.logical_path
            )
        )
        session.add(
            StoredObject(
                share=share.name,
                logical_path=finding.logical_path,
                file_id=file_id,
                size=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                content_type=mimetypes.guess_type(finding.logical_path)[0]
                or "application/octet-stream",
                uploader="fsck",
            )
        )


def _check_share(services: Services, share: ShareRuntime, seen: set[str]) -> list[Finding]:
    files = list(stored_files(share))
    progress = Progress(f"checking share {share.name}", len(files))
    with services.sessions() as session:
        rows = session.execute(
            select(StoredObject.file_id, StoredObject.logical_path).where(
                StoredObject.share == share.name
            )
        )
        registered = {file_id: path for file_id, path in rows}
    findings = []
    for path, logical in files:
        file_id, problem = check_file(services.keys, path)
        location = str(path.relative_to(share.store.root))
        if file_id is not None:
            seen.add(file_id)
            if not problem and file_id not in registered:
                problem = "orphan-ciphertext"
            elif not problem and logical is not None and registered[file_id] != logical:
                problem = "misplaced-ciphertext"
        if problem:
            findings.append(Finding(problem, share.name, location, logical))
        progress.advance()
    progress.finish()
    return findings


def _check_registry(services: Services, seen: set[str]) -> list[Finding]:
    with services.sessions() as session:
        rows = session.execute(
            select(StoredObject.share, StoredObject.logical_path, StoredObject.file_id)
        ).all()
    return [
        Finding("missing-ciphertext", share, file_id, path)
        for share, path, file_id in rows
        if file_id not in seen
    ]


def _check_keys(services: Services, seen: set[str], *, repair: bool) -> list[Finding]:
    cutoff = utcnow() - dt.timedelta(hours=1)
    findings = []
    with services.sessions.begin() as session:
        registered = set(session.scalars(select(StoredObject.file_id)))
        for key in session.scalars(select(DataKey)):
            if key.file_id in seen or key.file_id in registered:
                continue
            findings.append(Finding("orphan-key", "-", key.key_id, None, f"file {key.file_id}"))
            created = (
                key.created_at if key.created_at.tzinfo else key.created_at.replace(tzinfo=dt.UTC)
            )
            if repair and created < cutoff:
                session.execute(delete(DataKey).where(DataKey.key_id == key.key_id))
    return findings


def _quarantine(share: ShareRuntime, location: str) -> None:
    source = share.store.root / location
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    target = share.store.root / QUARANTINE / stamp / f"{uuid.uuid4().hex}-{source.name}"
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(source, target)
