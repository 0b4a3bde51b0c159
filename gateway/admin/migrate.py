"""``clindav migrate``: bring a share's legacy plaintext files under protection.

A *legacy* entry is one clindav did not write: a name the share's name cipher
did not produce (and everything below such a folder), or, in a ``names:
plain`` share, a file without the CLDV header (gateway/storage/legacy.py).
The gateway neither lists nor serves them (policy ``legacy.access: hidden``);
start-up and ``check-config`` report how many there are.

For each legacy file (:class:`Migration`):

1. client junk (``Thumbs.db``, ``.DS_Store``, ``._*``, ``desktop.ini``, office
   lock files) is destroyed: an audit event first, then the file is renamed
   into ``.clindav-migrate/shred/``, overwritten with zeros (if it has no
   other hard link), fsynced and unlinked;
2. otherwise the file runs through the destination share's pipeline as a PUT
   of its logical path (the legacy relative path, NFC) with
   ``PutContext.legacy``: sniffed, decoded, scrubbed; the consent stage takes
   the patient from the first segment (``--patient-folders auto``) and never
   claims consent (``legacy.consent``: ``legacy-unverified`` or ``hold``);
3. :func:`gateway.dav.provider.commit_object` stores it encrypted at its encrypted
   location with its registry row and a ``MIGRATE`` audit event whose details
   carry the SHA-256 of the original and of the stored plaintext;
4. the stored file is read back, decrypted and compared with what the
   pipeline produced; a mismatch rolls the stored copy back;
5. only then is the original destroyed as in 1; legacy folders left empty are
   removed at the end (their encrypted counterparts exist).

Files that cannot be migrated stay untouched and are reported with the
refusal's code and public message.

Crash safety (SIGKILL anywhere): before step 3's transaction the original is
untouched and a rerun starts over (a leftover temp file is ciphertext; a
leftover key row is an ``orphan-key`` for ``clindav fsck --repair``).  After
it, the registry row and the audit event name the original's hash: a rerun
that finds the original still in place, a row at its logical path and a
``MIGRATE`` event whose hashes match both, re-verifies the stored copy and
finishes step 5.  A row that does not match is someone else's file: the
legacy file is left and reported (``migrate-target-exists``).  Nothing but
legacy originals is ever plaintext on disk: the shred folder holds originals
under random names while they are destroyed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import mimetypes
import multiprocessing
import os
import signal
import stat
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from gateway.admin.progress import Progress
from gateway.app import readonly_services
from gateway.auth.base import Principal
from gateway.dav.junk import is_junk
from gateway.dav.provider import commit_object
from gateway.db import AuditEvent, DataKey, StoredObject
from gateway.errors import (
    BadRequest,
    ClindavError,
    Conflict,
    DatabaseUnavailable,
    PayloadTooLarge,
    UnprocessableContent,
)
from gateway.pipeline import PutContext, RequestInfo
from gateway.records.consent import ConsentService
from gateway.services import Services, ShareRuntime
from gateway.settings import Settings
from gateway.storage.backing import INTERNAL_PREFIX, PlainNames, fsync_dir, split_path
from gateway.storage.content import registered_file_id
from gateway.storage.legacy import LegacyEntry, count_legacy, walk_legacy

log = logging.getLogger("clindav.migrate")

MIGRATE_FOLDER = INTERNAL_PREFIX + "migrate"
SHRED_FOLDER = "shred"
# The registry's uploader of a migrated file: its real uploader is unknown.
LEGACY_UPLOADER = "@legacy-import"
ACTION = "MIGRATE"
_BLOCK = 1 << 20
_CHUNK = 8  # files per task sent to a worker process


class MigrateTargetExists(Conflict):
    code = "migrate-target-exists"
    message = "Another file already holds this name in the share; the legacy file was left."


class LegacyNotAFile(UnprocessableContent):
    code = "legacy-not-a-file"
    message = "Not a regular file (a link or a device); it was left in place."


class MigrateVerifyFailed(ClindavError):
    status = 500
    code = "migrate-verify-failed"
    message = "The protected copy did not read back intact; it was removed and the original kept."


class MigrateFailed(ClindavError):
    status = 500
    code = "migrate-failed"
    message = "The file could not be migrated; it was left in place."


class MigrationBusy(Conflict):
    code = "migrate-in-progress"
    message = "Another clindav migrate is running on this share."


class MigrationNotPossible(BadRequest):
    code = "migrate-not-possible"
    message = "This share cannot be migrated with these options."


def unmigrated_report(settings: Settings, out: TextIO) -> None:
    """``check-config``: the unmigrated count per share (never fails the check)."""
    try:
        services = readonly_services(settings)
        for share in services.shares.values():
            count = count_legacy(share.store)
            out.write(
                f"share {share.name}: {count.files} unmigrated legacy files "
                f"({count.bytes / 1e6:.1f} MB)"
                + (f"; run `clindav migrate {share.name}`" if count.files else "")
                + "\n"
            )
    except (ClindavError, SQLAlchemyError, OSError) as exc:
        out.write(f"unmigrated legacy files: not counted ({type(exc).__name__}: {exc})\n")


def legacy_unverified(services: Services) -> list[StoredObject]:
    """Migrated images with no recorded consent, for ``clindav consent pending``.

    Every migrated file of a share with a consent stage that is not held,
    unless its patient now has a consent record covering the share's scope.
    The registry row keeps ``consent_id`` empty either way: no consent was
    recorded when it was kept.
    """
    scopes = {
        name: scope
        for name in services.shares
        if (scope := services.policy.required_scope(name)) is not None
    }
    if not scopes:
        return []
    with services.sessions() as session:
        rows = session.scalars(
            select(StoredObject)
            .where(
                StoredObject.uploader == LEGACY_UPLOADER,
                StoredObject.consent_id.is_(None),
                StoredObject.held_until.is_(None),
                StoredObject.share.in_(list(scopes)),
                ~StoredObject.logical_path.startswith("@trash/"),
            )
            .order_by(StoredObject.share, StoredObject.logical_path)
        ).all()
    consent = ConsentService(services)
    covered: dict[tuple[str, str], bool] = {}
    found = []
    for row in rows:
        if row.patient_id is not None:
            key = (row.patient_id, scopes[row.share])
            if key not in covered:
                covered[key] = consent.covering(*key) is not None
            if covered[key]:
                continue
        found.append(row)
    return found


# --- migrating -------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "migrated", "junk" or "left"
    path: str
    size: int
    stored_size: int = 0
    code: str = ""
    status: int = 0
    message: str = ""
    patient: str | None = None
    consent: str | None = None
    resumed: bool = False


@dataclass
class MigrateOptions:
    dry_run: bool = False
    workers: int = 1
    patient_folders: bool = True
    actor: str = "-"
    progress_stream: TextIO | None = None
    progress_interval: float = 5.0


@dataclass
class MigrationReport:
    share: str
    dry_run: bool
    workers: int
    started_at: str
    seconds: float = 0.0
    interrupted: bool = False
    migrated: list[Outcome] = field(default_factory=list)
    junk: list[Outcome] = field(default_factory=list)
    left: list[Outcome] = field(default_factory=list)
    folders_removed: int = 0
    folders_left: list[str] = field(default_factory=list)

    @property
    def bytes_read(self) -> int:
        return sum(o.size for o in self.migrated + self.junk)

    def as_dict(self) -> dict[str, Any]:
        seconds = max(self.seconds, 1e-9)
        files = len(self.migrated) + len(self.junk)
        return {
            "share": self.share,
            "dry_run": self.dry_run,
            "workers": self.workers,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "counts": {
                "migrated": len(self.migrated),
                "resumed": sum(1 for o in self.migrated if o.resumed),
                "junk_destroyed": len(self.junk),
                "left": len(self.left),
                "folders_removed": self.folders_removed,
            },
            "bytes": {
                "read": self.bytes_read,
                "stored": sum(o.stored_size for o in self.migrated),
            },
            "rate": {
                "files_per_second": round(files / seconds, 1),
                "mb_per_second": round(self.bytes_read / 1e6 / seconds, 2),
            },
            "left": [
                _public(o, "path", "code", "status", "message", "size") for o in _sorted(self.left)
            ],
            "migrated": [
                _public(o, "path", "size", "stored_size", "patient", "consent", "resumed")
                for o in _sorted(self.migrated)
            ],
            "junk": [_public(o, "path", "size") for o in _sorted(self.junk)],
            "folders_left": [display(p) for p in self.folders_left],
        }

    def summary(self) -> str:
        verb = "would " if self.dry_run else ""
        seconds = max(self.seconds, 1e-9)
        files = len(self.migrated) + len(self.junk)
        resumed = sum(1 for o in self.migrated if o.resumed)
        lines = [
            f"share {self.share}: {verb}migrate {_n(len(self.migrated), 'file')}"
            + (f" ({resumed} finishing an interrupted run)" if resumed else "")
            + f", {verb}destroy {_n(len(self.junk), 'junk file')}, {verb}leave "
            f"{_n(len(self.left), 'file')} in place"
            + (
                ""
                if self.dry_run
                else f", removed {_n(self.folders_removed, 'empty legacy folder')}"
            ),
            f"{files / seconds:.1f} files/s, {self.bytes_read / 1e6 / seconds:.2f} MB/s "
            f"in {self.seconds:.1f} s with {_n(self.workers, 'worker')}"
            + (" (interrupted)" if self.interrupted else ""),
        ]
        left = _sorted(self.left)
        lines += [f"  left: {display(o.path)}: {o.code}: {o.message}" for o in left[:50]]
        if len(self.left) > 50:
            lines.append(f"  ... and {len(self.left) - 50} more (see the report)")
        return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _sorted(outcomes: list[Outcome]) -> list[Outcome]:
    return sorted(outcomes, key=lambda o: o.path)


def _public(outcome: Outcome, *names: str) -> dict[str, Any]:
    data = asdict(outcome)
    return {n: display(data[n]) if n == "path" else data[n] for n in names}


def display(path: str) -> str:
    """A path for reports: undecodable bytes shown as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Migration:
    """One run of ``clindav migrate`` over one share (see the module docstring)."""

    def __init__(self, services: Services, share: ShareRuntime, options: MigrateOptions) -> None:
        self.services = services
        self.share = share
        self.options = options
        self.pipeline = services.policy.pipeline(share.name)
        self.run_id = uuid.uuid4().hex[:16]
        self._check_possible()
        uploader = Principal(LEGACY_UPLOADER, frozenset({services.policy.doc.admin_group}))
        actor = Principal(options.actor, frozenset({services.policy.doc.admin_group}))
        self.import_request = RequestInfo(self.run_id, uploader, "cli", "clindav-migrate", ACTION)
        self.actor_request = RequestInfo(self.run_id, actor, "cli", "clindav-migrate", ACTION)
        self.workdir = share.store.root / MIGRATE_FOLDER
        self.shred = self.workdir / SHRED_FOLDER

    def _check_possible(self) -> None:
        name = self.share.name
        if isinstance(self.share.store.names, PlainNames):
            raise MigrationNotPossible(
                f"share {name} stores plain names",
                public=f"Share {name} stores names in plain (policy names: plain); clindav "
                "migrate protects shares with encrypted names (the default).",
            )
        consent = self.pipeline.find("consent")
        legacy = self.services.policy.share(name).legacy
        has_patients = consent is not None and getattr(consent.options, "patients", None)
        if (
            consent is not None
            and legacy.consent == "hold"
            and not (has_patients and self.options.patient_folders)
        ):
            raise MigrationNotPossible(
                f"share {name}: legacy hold without patient folders",
                public=f"Share {name} holds migrated images until consent is recorded "
                "(legacy.consent: hold), which needs the patient folder: use "
                "--patient-folders auto on a share whose consent stage names patients.",
            )

    # --- the run -------------------------------------------------------------

    def run(self) -> MigrationReport:
        started = time.monotonic()
        report = MigrationReport(
            self.share.name,
            self.options.dry_run,
            self.options.workers,
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        with self._lock():
            if not self.options.dry_run:
                self._finish_shredding()
            entries = list(walk_legacy(self.share.store))
            files, folders = self._plan(entries, report)
            total_bytes = sum(e.size for e in files)
            verb = "would process" if self.options.dry_run else "to process"
            skipped = f", {len(report.left)} links or duplicates left" if report.left else ""
            print(
                f"clindav migrate: share {self.share.name}: {len(files)} legacy files "
                f"({total_bytes / 1e6:.1f} MB) {verb}{skipped}",
                flush=True,
            )
            progress = Progress(
                f"migrate {self.share.name}",
                len(files),
                total_bytes=total_bytes,
                stream=self.options.progress_stream,
                interval=self.options.progress_interval,
            )
            try:
                for outcome in self._process(files):
                    getattr(report, outcome.kind).append(outcome)
                    progress.advance(1, outcome.size)
                if not self.options.dry_run:
                    self._remove_empty_folders(folders, report)
            except KeyboardInterrupt:
                report.interrupted = True
            progress.finish()
            report.seconds = time.monotonic() - started
            if not self.options.dry_run:
                self._audit_run(report)
        return report

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One migration per share at a time (a dry run takes no lock: it writes nothing)."""
        if self.options.dry_run:
            yield
            return
        self.shred.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.workdir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            # A killed run's workers may take a moment to die (they hold the lock too).
            deadline = time.monotonic() + 10
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise MigrationBusy(f"{self.workdir}/lock is held") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def _plan(
        self, entries: list[LegacyEntry], report: MigrationReport
    ) -> tuple[list[LegacyEntry], list[LegacyEntry]]:
        """Files to process (one per logical path), folders to tidy; the rest is left."""
        files, folders, seen = [], [], set()
        for entry in entries:
            if entry.kind == "folder":
                folders.append(entry)
            elif entry.kind == "other":
                report.left.append(_left(entry, LegacyNotAFile(entry.logical)))
            elif is_junk(entry.logical) or entry.logical not in seen:
                seen.add(entry.logical)
                files.append(entry)
            else:
                error = MigrateTargetExists(
                    f"{entry.logical}: another legacy file has the same name after NFC",
                    public="Another legacy file has the same name (after Unicode "
                    "normalisation); this one was left.",
                )
                report.left.append(_left(entry, error))
        return files, folders

    def _process(self, files: list[LegacyEntry]) -> Iterator[Outcome]:
        """Outcomes in completion order: in this process, or in ``workers`` forked ones.

        Python threads would not help: the work is mostly Python (the
        database transactions, the pipeline) under the GIL.  Worker processes
        are forked from this one (its services, policy and keys) and die with
        it (``PR_SET_PDEATHSIG``), so an interrupted run leaves no worker
        behind to race the rerun; each file is crash-safe on its own.
        """
        workers = max(1, self.options.workers)
        if workers == 1:
            for entry in files:
                yield self.one(entry)
            return
        global _CURRENT
        _CURRENT = self
        chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
        )
        queue = iter(chunks)
        running: set[Future[list[Outcome]]] = set()
        try:
            while True:
                for chunk in queue:
                    running.add(pool.submit(_run_chunk, chunk))
                    if len(running) >= 2 * workers:
                        break
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
        finally:
            # On Ctrl-C: no new chunk starts, the running ones finish their files.
            pool.shutdown(wait=True, cancel_futures=True)
            _CURRENT = None

    # --- one file --------------------------------------------------------------

    def one(self, entry: LegacyEntry) -> Outcome:
        """Migrate, destroy (junk) or leave one legacy file; never raises a ClindavError."""
        stored: list[bool] = []
        try:
            if is_junk(entry.logical):
                return self._junk(entry)
            return self._migrate(entry, stored)
        except ClindavError as exc:
            error = exc
        except SQLAlchemyError as exc:
            error = DatabaseUnavailable(f"database: {type(exc).__name__}: {exc}")
        except OSError as exc:
            error = MigrateFailed(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # one odd file must not stop the migration of the rest
            log.exception("%s: unexpected failure", display(entry.logical))
            error = MigrateFailed(f"{type(exc).__name__}: {exc}")
        if stored:
            log.error(
                "%s: stored, but the original was not removed (a rerun finishes): %s",
                display(entry.logical),
                error,
            )
        else:
            log.info("%s: left in place: %s %s", display(entry.logical), error.code, error.detail)
        return _left(entry, error)

    def _junk(self, entry: LegacyEntry) -> Outcome:
        if not self.options.dry_run:
            self.services.audit.record(
                self.actor_request,
                action=ACTION,
                share=self.share.name,
                path=entry.logical,
                status=200,
                code="junk-destroyed",
                reason="client junk file found by clindav migrate",
                details={"size": entry.size},
            )
            self._destroy(entry.source)
        return Outcome("junk", entry.logical, entry.size)

    def _migrate(self, entry: LegacyEntry, stored: list[bool]) -> Outcome:
        """``stored`` gets an entry once the protected copy is committed."""
        segments = split_path(entry.logical)
        target = self.share.store.locate(segments)
        body, read_stat = self._read(entry)
        legacy_sha = hashlib.sha256(body).hexdigest()
        resumed = self._resume(entry, target, legacy_sha, read_stat)
        if resumed is not None:
            return resumed
        ctx = PutContext(
            request=self.import_request,
            share=self.share.name,
            path=entry.logical,
            body=body,
            content_type=mimetypes.guess_type(entry.logical)[0] or "application/octet-stream",
            legacy=True,
            legacy_patient_folders=self.options.patient_folders,
        )
        self.pipeline.run_put(ctx)
        if ctx.placeholder:  # a 0-byte legacy file is a file, not Explorer's placeholder
            ctx.placeholder = False
            ctx.details["empty"] = True
        consent = (
            "held"
            if ctx.held_until is not None
            else ("legacy-unverified" if "consent" in ctx.details else None)
        )
        outcome = Outcome(
            "migrated",
            entry.logical,
            len(body),
            len(ctx.body),
            patient=ctx.patient_id,
            consent=consent,
        )
        if self.options.dry_run:
            return outcome
        self._make_parents(segments)
        stored_sha = ctx.sha256()
        event = self.services.audit.event(
            self.actor_request,
            action=ACTION,
            share=self.share.name,
            path=entry.logical,
            status=201,
            code="migrated",
            reason="legacy file protected by clindav migrate",
            details={
                **ctx.details,
                "legacy_sha256": legacy_sha,
                "stored_sha256": stored_sha,
                "legacy_size": len(body),
                "original": "destroyed after read-back verification",
            },
            patient_id=ctx.patient_id,
        )
        commit_object(self.services, self.share, ctx, target, audit=event)
        stored.append(True)
        if not self._verify(entry.logical, target, stored_sha):
            self._roll_back(entry, target)
            stored.clear()
            raise MigrateVerifyFailed(f"{entry.logical}: read-back mismatch")
        self._destroy(entry.source, unchanged_since=read_stat)
        return outcome

    def _read(self, entry: LegacyEntry) -> tuple[bytes, os.stat_result]:
        limit = self.services.settings.limits.max_upload_bytes
        fd = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # never a FIFO
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise LegacyNotAFile(entry.logical)
            if st.st_size > limit:
                raise PayloadTooLarge(f"{st.st_size} bytes > limits.max_upload_bytes {limit}")
            return f.read(), st

    def _resume(
        self, entry: LegacyEntry, target: Path, legacy_sha: str, read_stat: os.stat_result
    ) -> Outcome | None:
        """Finish an interrupted migration of this very file, or refuse a taken name."""
        with self.services.sessions() as session:
            row = session.scalar(
                select(StoredObject).where(
                    StoredObject.share == self.share.name,
                    StoredObject.logical_path == entry.logical,
                )
            )
            if row is None:
                return None
            details = session.scalar(
                select(AuditEvent.details)
                .where(
                    AuditEvent.share == self.share.name,
                    AuditEvent.logical_path == entry.logical,
                    AuditEvent.action == ACTION,
                    AuditEvent.code == "migrated",
                )
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            )
        ours = (
            details is not None
            and details.get("legacy_sha256") == legacy_sha
            and details.get("stored_sha256") == row.sha256
        )
        if not ours or details is None:
            raise MigrateTargetExists(f"{entry.logical}: a registered file holds the name")
        if not self.options.dry_run:
            if not self._verify(entry.logical, target, row.sha256):
                return None  # ours, but broken or gone: migrate it again
            log.info("%s: finishing an interrupted migration", display(entry.logical))
            self._destroy(entry.source, unchanged_since=read_stat)
        held = row.held_until is not None
        return Outcome(
            "migrated",
            entry.logical,
            entry.size,
            row.size,
            patient=row.patient_id,
            consent="held" if held else details.get("consent"),
            resumed=True,
        )

    def _make_parents(self, segments: list[str]) -> None:
        for depth in range(1, len(segments)):
            folder = self.share.store.locate(segments[:depth])
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(folder).st_mode):
                    raise MigrateTargetExists(f"{folder} is not a folder") from None
                continue
            fsync_dir(folder.parent)

    def _verify(self, logical: str, target: Path, sha256: str) -> bool:
        digest = hashlib.sha256()
        try:
            file_id = registered_file_id(self.services.sessions, self.share.name, logical)
            with self.share.content.open(target, file_id) as plain:
                while block := plain.read(_BLOCK):
                    digest.update(block)
        except (ClindavError, OSError, ValueError) as exc:
            log.warning("%s: read-back failed: %s", target.name, exc)
            return False
        return digest.hexdigest() == sha256

    def _roll_back(self, entry: LegacyEntry, target: Path) -> None:
        """Remove a stored copy that did not verify (its key first: crypto-shred)."""
        services = self.services
        with services.sessions.begin() as session:
            services.audit.lock_head(session)
            row = session.scalar(
                select(StoredObject).where(
                    StoredObject.share == self.share.name,
                    StoredObject.logical_path == entry.logical,
                )
            )
            if row is not None:
                session.execute(delete(DataKey).where(DataKey.file_id == row.file_id))
                session.delete(row)
            event = services.audit.event(
                self.actor_request,
                action=ACTION,
                share=self.share.name,
                path=entry.logical,
                status=MigrateVerifyFailed.status,
                code=MigrateVerifyFailed.code,
                reason="the stored copy did not read back intact; original kept",
            )
            services.audit.append(session, event)
            session.flush()
            target.unlink(missing_ok=True)

    # --- destroying originals ------------------------------------------------

    def _destroy(self, source: Path, *, unchanged_since: os.stat_result | None = None) -> None:
        """Rename into the shred folder (atomic), then overwrite and unlink there.

        An original is destroyed only if it is still the file that was read
        (a client writing to the share during the migration keeps its file).
        """
        if unchanged_since is not None:
            now = os.lstat(source)
            before = unchanged_since
            if (now.st_ino, now.st_size, now.st_mtime_ns) != (
                before.st_ino,
                before.st_size,
                before.st_mtime_ns,
            ):
                raise MigrateFailed(
                    f"{source.name}: changed while it was migrated",
                    public="The file changed while it was migrated: the protected copy holds "
                    "the version read, the changed file was left for review.",
                )
        staged = self.shred / uuid.uuid4().hex
        try:
            os.rename(source, staged)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # a legacy folder on another file system
                raise
            source.unlink()
            fsync_dir(source.parent)
            return
        fsync_dir(source.parent)
        _overwrite_and_unlink(staged)

    def _finish_shredding(self) -> None:
        """Originals an interrupted run had already set aside (migrated or junk)."""
        if not self.shred.is_dir():
            return
        for name in os.listdir(self.shred):
            _overwrite_and_unlink(self.shred / name)

    def _remove_empty_folders(self, folders: list[LegacyEntry], report: MigrationReport) -> None:
        """Deepest first: an emptied legacy folder goes, its encrypted counterpart stays."""
        for entry in sorted(folders, key=lambda e: e.logical.count("/"), reverse=True):
            try:
                if any(os.scandir(entry.source)):
                    continue
                segments = split_path(entry.logical)
                self._make_parents([*segments, "-"])
                os.rmdir(entry.source)
                fsync_dir(entry.source.parent)
                report.folders_removed += 1
            except (ClindavError, OSError) as exc:
                log.info("legacy folder %s kept: %s", display(entry.logical), exc)
                report.folders_left.append(entry.logical)

    def _audit_run(self, report: MigrationReport) -> None:
        counts = report.as_dict()["counts"]
        try:
            self.services.audit.record(
                self.actor_request,
                action=ACTION,
                share=self.share.name,
                path=None,
                status=200,
                code="migrate-interrupted" if report.interrupted else "migrate-finished",
                details={**counts, "seconds": round(report.seconds, 1)},
            )
        except ClindavError as exc:
            log.error("the run's summary event was not recorded: %s", exc)


_CURRENT: Migration | None = None  # the run a forked worker serves


def _init_worker(parent: int) -> None:
    """In a forked worker: die with the parent, leave Ctrl-C to it, own DB connections."""
    import ctypes

    # Not on Linux (no prctl), orphans would finish their chunk and find no parent.
    with contextlib.suppress(AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert _CURRENT is not None
    _CURRENT.services.sessions.kw["bind"].dispose(close=False)


def _run_chunk(chunk: list[LegacyEntry]) -> list[Outcome]:
    assert _CURRENT is not None
    return [_CURRENT.one(entry) for entry in chunk]


def _overwrite_and_unlink(path: Path) -> None:
    """Best effort against recovery from the disk (see docs/MIGRATION.md for its limits)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError:
        path.unlink(missing_ok=True)
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            zeros = bytes(min(st.st_size, _BLOCK))
            left = st.st_size
            while left > 0:
                left -= os.write(fd, zeros[: min(left, _BLOCK)])
            os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)


def _left(entry: LegacyEntry, error: ClindavError) -> Outcome:
    return Outcome(
        "left",
        entry.logical,
        entry.size,
        code=error.code,
        status=error.status,
        message=error.public_message,
    )


def write_report(report: MigrationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(report.as_dict(), out, indent=1, ensure_ascii=False)
        out.write("\n")


def default_report_path(settings: Settings, share: str, dry_run: bool) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "dry-run" if dry_run else "run"
    return settings.resolve(Path("migrate-reports") / f"{share}-{stamp}-{kind}.json")


def check_report_path(services: Services, path: Path) -> None:
    """The report names patients' files: never inside a backing share."""
    resolved = path.resolve()
    for share in services.shares.values():
        if resolved.is_relative_to(share.store.root):
            raise MigrationNotPossible(
                f"report {resolved} inside {share.store.root}",
                public="The report names patients and files: write it outside the backing "
                "shares (--report).",
            )
