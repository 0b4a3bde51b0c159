"""Deletion, trash, retention and purge: recoverable for a window, then gone for good.

Contract:

* :meth:`Trash.trash` (DELETE, and a COPY/MOVE that overwrites) moves a file
  or folder into the share's hidden trash folder and its registry rows under
  ``@trash/<id>/``, in one transaction with its audit event.  Retained files
  (policy ``retention``) can be deleted only by the policy's admin group and
  with a reason (``X-Clindav-Reason``); held paths (legal hold) not at all.
  A hold stops only what removes or destroys content: deletion, purge, a MOVE
  out of the held path (:meth:`Trash.check_move`).  What replaces held content
  (``replacing=True``, and a PUT through :meth:`Trash.keep_replaced`) sends
  the old version to the trash, where the hold keeps it from being purged.
* :meth:`Trash.restore` moves an item back (refusing to overwrite unless told).
* :meth:`Trash.purge` first deletes the item's data keys and registry rows and
  records the purge, in one transaction (crypto-shred: every copy of the
  ciphertext, backups included, is unreadable from then on), then unlinks the
  ciphertext.  A purge killed between the two is completed by the next
  :meth:`purge_due`, which also purges every item whose window and retention
  have ended; the running server calls it at start and on a schedule.

Every refusal is a :class:`~gateway.errors.ClindavError` with a specific code.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from gateway.change import replace
from gateway.clock import aware
from gateway.db import DataKey, LegalHold, StoredObject, TrashItem, starts_with
from gateway.errors import BadRequest, ClindavError, Conflict, Forbidden, NotFound
from gateway.pipeline import PutContext, RequestInfo
from gateway.records.fileids import retire
from gateway.records.patientpaths import patient_of
from gateway.storage.backing import INTERNAL_PREFIX, fsync_dir, split_path

if TYPE_CHECKING:
    # Services holds the one Trash (Services.trash): this module only names its type.
    from gateway.services import Services, ShareRuntime

TRASH_FOLDER = INTERNAL_PREFIX + "trash"
TRASH_PREFIX = "@trash/"
IMAGE_TYPES = ("image/", "video/")


class RetentionProtected(Forbidden):
    code = "retention-protected"
    message = "This file is part of the medical record and must be retained."


class ReasonRequired(BadRequest):
    code = "reason-required"
    message = "Deleting a retained file needs a reason (X-Clindav-Reason header)."


class LegalHoldActive(Forbidden):
    code = "legal-hold"
    message = "This path is under a legal hold and cannot be deleted."


class TrashNotFound(NotFound):
    code = "trash-item-not-found"
    message = "No such item in the trash."


class AmbiguousTrashId(BadRequest):
    code = "ambiguous-trash-id"
    message = "More than one item in the trash starts with that id; give more of it."


class RestoreRefused(Forbidden):
    code = "restore-refused"
    message = "The item cannot be restored: its destination's checks refuse it."


class RestoreConflict(Conflict):
    code = "restore-target-exists"
    message = "Something already exists where the item would be restored."


@dataclass(frozen=True)
class SetAside:
    """A held file's replaced version on its way into the trash, inside the replacing commit."""

    source: Path
    dest: Path


@dataclass(frozen=True)
class Actor:
    """Who acts, for the audit trail: a signed-in user or an admin at the CLI."""

    request: RequestInfo
    is_admin: bool


def _at_or_below(share: str, path: str) -> Any:
    return (StoredObject.share == share) & (
        (StoredObject.logical_path == path)
        | starts_with(StoredObject.logical_path, path.rstrip("/") + "/")
    )


class Trash:
    """The trash of every share; one per gateway, ``Services.trash``."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.clock = services.clock

    # --- delete ------------------------------------------------------------

    def trash(
        self,
        share: ShareRuntime,
        path: str,
        *,
        is_folder: bool,
        actor: Actor,
        reason: str = "",
        audited: bool = True,
        details: dict[str, Any] | None = None,
        still: Any = None,
        replacing: bool = False,
    ) -> str:
        """Move ``path`` into the trash; returns the trash item id.

        ``details`` go on its event (e.g. which method replaced it).
        ``still``: a condition the file's registry row must still meet under the
        chain's lock (the server's clean-ups: an upload that replaced a stale
        placeholder or held image since it was found is not theirs to remove).
        ``replacing``: what is at ``path`` is being replaced (a COPY or MOVE
        onto it, a restore over it), so a legal hold does not refuse it: the
        item is kept in the trash, and the hold on its path stops its purge.
        """
        now = self.clock.now()
        item_id = uuid.uuid4().hex
        source = share.store.locate([s for s in path.split("/") if s])
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            if still is not None and not self._row_still(session, share.name, path, still):
                raise TrashNotFound(f"{share.name}:{path} changed since it was found")
            if not replacing:  # a replaced file's number stays with its path
                self._check_holds(session, share.name, path)
                retire(session, share.name, path)
            retained = self._retained_until(session, share.name, path, now)
            if retained is not None and retained > now:
                self._allow_retained(actor, retained, reason)
            count = self._record(
                session, share.name, path, item_id, is_folder, actor, reason, retained, now
            )
            if audited:
                self._audit(
                    session,
                    actor,
                    "DELETE",
                    share.name,
                    path,
                    204,
                    "trashed",
                    reason,
                    {"trash_id": item_id, "files": count, **(details or {})},
                )
            session.flush()
            replace(session, source, self._folder(share) / item_id)  # put back if the commit fails
        fsync_dir(source.parent)
        return item_id

    def _row_still(self, session: Session, share: str, path: str, condition: Any) -> bool:
        row = session.scalar(
            select(StoredObject.id).where(
                StoredObject.share == share, StoredObject.logical_path == path, condition
            )
        )
        return row is not None

    def _folder(self, share: ShareRuntime) -> Path:
        folder = share.store.root / TRASH_FOLDER
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def _record(
        self,
        session: Session,
        share: str,
        path: str,
        item_id: str,
        is_folder: bool,
        actor: Actor,
        reason: str,
        retained: dt.datetime | None,
        now: dt.datetime,
    ) -> int:
        """The trash item and its registry rows under ``@trash/``; returns its file count."""
        count = session.scalar(select(func.count()).where(_at_or_below(share, path))) or 0
        window = self.services.policy.share(share).trash_window
        session.add(
            TrashItem(
                id=item_id,
                share=share,
                logical_path=path,
                is_folder=is_folder,
                files=count,
                trashed_at=now,
                trashed_by=_uid(actor),
                reason=reason,
                purge_after=max(now + window, retained or now),
                retained_until=retained,
            )
        )
        self._move_rows(session, share, path, TRASH_PREFIX + item_id + path)
        return count

    def keep_replaced(
        self, session: Session, share: ShareRuntime, path: str, request: RequestInfo
    ) -> SetAside | None:
        """In the transaction of an upload to ``path``: if a hold covers it, its current
        version goes to the trash (kept) instead of losing its key.

        Records the item and its event in ``session``; the caller renames with
        the returned :class:`SetAside` just before its own rename.  None when
        no hold covers ``path`` or nothing is stored there.
        """
        if not self._holds_over(session, share.name, path):
            return None
        stored = select(StoredObject.id).where(
            StoredObject.share == share.name, StoredObject.logical_path == path
        )
        if session.scalar(stored) is None:
            return None
        now, item_id = self.clock.now(), uuid.uuid4().hex
        actor, reason = Actor(request, is_admin=False), "replaced under a legal hold"
        retained = self._retained_until(session, share.name, path, now)
        self._record(session, share.name, path, item_id, False, actor, reason, retained, now)
        self._audit(
            session,
            actor,
            request.method,
            share.name,
            path,
            204,
            "trashed",
            reason,
            {"trash_id": item_id, "files": 1},
        )
        source = share.store.locate([s for s in path.split("/") if s])
        return SetAside(source, self._folder(share) / item_id)

    def check_move(self, share: str, path: str, dest_share: str, dest: str) -> None:
        """LegalHoldActive when a MOVE would take held content out of its held path.

        A MOVE within the held path (a rename in a held patient folder) keeps
        the content held and is allowed.
        """
        with self.services.sessions() as session:
            for hold in self._holds_over(session, share, path):
                held = hold.logical_path.rstrip("/")
                stays = _at_or_under(path, held) and _at_or_under(dest, held)
                if dest_share != share or not stays:
                    raise LegalHoldActive(
                        f"MOVE {path} to {dest_share}:{dest} leaves the hold on {held or '/'}",
                        public="This path is under a legal hold: nothing can be moved out of it.",
                    )

    def _holds_over(self, session: Session, share: str, path: str) -> list[LegalHold]:
        """Holds on ``path``, on a folder above it, or on something below it."""
        holds = session.scalars(select(LegalHold).where(LegalHold.share == share)).all()
        return [hold for hold in holds if hold_covers(hold.logical_path, path)]

    def _check_holds(self, session: Session, share: str, path: str) -> None:
        for hold in self._holds_over(session, share, path):
            raise LegalHoldActive(f"legal hold on {hold.logical_path}: {hold.reason}")

    def _retained_until(
        self, session: Session, share: str, path: str, now: dt.datetime
    ) -> dt.datetime | None:
        retention = self.services.policy.share(share).retention
        if retention is None:
            return None
        # The youngest retained file decides how long the whole item is kept.
        # A 0-byte placeholder is not part of the record: it is never retained.
        query = select(func.max(StoredObject.created_at)).where(
            _at_or_below(share, path), StoredObject.placeholder.is_(False)
        )
        if retention.applies_to == "images":
            query = query.where(
                StoredObject.content_type.startswith(IMAGE_TYPES[0])
                | StoredObject.content_type.startswith(IMAGE_TYPES[1])
            )
        youngest = session.scalar(query)
        return None if youngest is None else aware(youngest) + retention.keep_for

    def _allow_retained(self, actor: Actor, until: dt.datetime, reason: str) -> None:
        day = until.date().isoformat()
        if not actor.is_admin:
            raise RetentionProtected(
                f"retained until {day}",
                public=f"This file is part of the medical record "
                f"and is retained until {day}; an administrator can delete it with a reason.",
            )
        if not reason.strip():
            raise ReasonRequired("admin delete of a retained file without a reason")

    def _move_rows(self, session: Session, share: str, old: str, new: str) -> None:
        rows = session.scalars(select(StoredObject).where(_at_or_below(share, old))).all()
        for row in rows:
            row.logical_path = new + row.logical_path[len(old) :]

    def _audit(
        self,
        session: Session,
        actor: Actor,
        action: str,
        share: str,
        path: str,
        status: int,
        code: str,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        # The patient: for a copy named by case label, from its registry row, at
        # ``path`` or still in the trash (so a purge records before it deletes rows).
        trashed = [TRASH_PREFIX + details["trash_id"] + path] if "trash_id" in details else []
        event = self.services.audit.event(
            actor.request,
            action=action,
            share=share,
            path=path,
            status=status,
            code=code,
            reason=reason,
            details=details,
            patient_id=patient_of(self.services, share, path, session, rows_at=trashed),
        )
        self.services.audit.append(session, event)

    # --- restore -----------------------------------------------------------

    def restore(
        self, item_id: str, actor: Actor, *, to: str | None = None, overwrite: bool = False
    ) -> str:
        with self.services.sessions() as session:
            item = session.get(TrashItem, item_id)
        if item is None or item.state != "trashed":
            raise TrashNotFound(f"no trashed item {item_id}")
        share = self.services.shares[item.share]
        segments = split_path(to or item.logical_path)
        target_path = "/" + "/".join(segments)
        target = share.store.locate(segments)
        self._check_restorable(share, item, target_path, actor)
        if share.store.lstat(target) is not None:
            if not overwrite:
                raise RestoreConflict(f"{target_path} exists")
            self.trash(
                share,
                target_path,
                is_folder=target.is_dir(),
                actor=actor,
                reason=f"replaced by restore of {item_id}",
                replacing=True,
            )
        self._make_parents(share, segments[:-1])
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            row = session.get(TrashItem, item_id, with_for_update=True)
            if row is None or row.state != "trashed":
                raise TrashNotFound(f"item {item_id} was purged or restored meanwhile")
            self._move_rows(
                session, share.name, TRASH_PREFIX + item_id + item.logical_path, target_path
            )
            row.state, row.ended_at, row.ended_by = "restored", self.clock.now(), _uid(actor)
            self._audit(
                session,
                actor,
                "RESTORE",
                share.name,
                target_path,
                200,
                "restored",
                "",
                {"trash_id": item_id, "from": item.logical_path},
            )
            session.flush()
            os.rename(share.store.root / TRASH_FOLDER / item_id, target)
        fsync_dir(target.parent)
        return target_path

    def _check_restorable(
        self, share: ShareRuntime, item: TrashItem, target_path: str, actor: Actor
    ) -> None:
        """Every file of the item must pass its destination's restore checks (the consent
        the share requires now: a withdrawn teaching or referral consent keeps its
        copies in the trash).  A refusal is audited and names the file."""
        pipeline = self.services.policy.pipeline(share.name)
        for path, row in self.restored_files(item, target_path):
            patient = row.patient_id
            ctx = PutContext(
                request=actor.request,
                share=share.name,
                path=path,
                body=b"",
                content_type=row.content_type,
                placeholder=row.placeholder,
                source_patient_id=patient,
            )
            try:
                pipeline.run_restore(ctx)
            except ClindavError as exc:
                public = f"Cannot restore {share.name}:{path}: {exc.public_message}"
                self.services.audit.record(
                    actor.request,
                    action="RESTORE",
                    share=share.name,
                    path=path,
                    status=RestoreRefused.status,
                    code=RestoreRefused.code,
                    reason=public,
                    details={"trash_id": item.id, "refused_by": exc.code},
                    patient_id=patient,
                )
                raise RestoreRefused(f"{path}: {exc.code}: {exc}", public=public) from exc

    def restored_files(self, item: TrashItem, target_path: str) -> list[tuple[str, StoredObject]]:
        """Each file of a trashed item, with the path a restore to ``target_path`` gives it."""
        trashed = TRASH_PREFIX + item.id + item.logical_path
        with self.services.sessions() as session:
            rows = session.scalars(select(StoredObject).where(_at_or_below(item.share, trashed)))
            found = list(rows)
        return [(target_path.rstrip("/") + r.logical_path[len(trashed) :] or "/", r) for r in found]

    def _make_parents(self, share: ShareRuntime, segments: list[str]) -> None:
        for depth in range(1, len(segments) + 1):
            folder = share.store.locate(segments[:depth])
            if share.store.lstat(folder) is None:
                os.mkdir(folder, 0o700)

    # --- purge -------------------------------------------------------------

    def purge(self, item_id: str, actor: Actor, *, reason: str = "") -> None:
        """Crypto-shred, record, then unlink one item (see the module contract)."""
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            item = session.get(TrashItem, item_id, with_for_update=True)
            if item is None or item.state == "restored":
                raise TrashNotFound(f"no trashed item {item_id}")
            if item.state == "trashed":
                self._check_purgeable(session, item)
                self._audit(
                    session,
                    actor,
                    "PURGE",
                    item.share,
                    item.logical_path,
                    200,
                    "purged",
                    reason,
                    {"trash_id": item_id, "files": item.files},
                )
                rows = _at_or_below(item.share, TRASH_PREFIX + item_id + item.logical_path)
                file_ids = select(StoredObject.file_id).where(rows).scalar_subquery()
                session.execute(delete(DataKey).where(DataKey.file_id.in_(file_ids)))
                session.execute(delete(StoredObject).where(rows))
                item.state, item.ended_at, item.ended_by = "purged", self.clock.now(), _uid(actor)
        crash_point("purge-after-commit")
        self._unlink(item_id, item.share)
        self._checkpoint()

    def _check_purgeable(self, session: Session, item: TrashItem) -> None:
        self._check_holds(session, item.share, item.logical_path)
        if item.retained_until is not None and aware(item.retained_until) > self.clock.now():
            day = aware(item.retained_until).date().isoformat()
            raise RetentionProtected(
                f"retained until {day}",
                public=f"Retained until {day}; it can be purged after that.",
            )

    def _unlink(self, item_id: str, share_name: str) -> None:
        entry = self.services.shares[share_name].store.root / TRASH_FOLDER / item_id
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)

    def _checkpoint(self) -> None:
        """SQLite: fold the WAL into the database so deleted key rows leave no copy there."""
        engine = self.services.sessions.kw["bind"]
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))

    def purge_due(self, actor: Actor) -> list[str]:
        """Purge every item whose window (and retention) ended; finish interrupted purges."""
        now = self.clock.now()
        with self.services.sessions() as session:
            due = session.scalars(
                select(TrashItem.id).where(
                    TrashItem.state == "trashed", TrashItem.purge_after <= now
                )
            ).all()
            finished = session.execute(
                select(TrashItem.id, TrashItem.share).where(TrashItem.state == "purged")
            ).all()
        for item_id, share_name in finished:
            if share_name in self.services.shares:
                self._unlink(item_id, share_name)  # a purge killed before its unlink
        purged = []
        for item_id in due:
            try:
                self.purge(item_id, actor, reason="trash window ended")
                purged.append(item_id)
            except (RetentionProtected, LegalHoldActive, TrashNotFound):
                continue
        return purged

    def discard(
        self, share: ShareRuntime, path: str, actor: Actor, reason: str, *, still: Any
    ) -> str:
        """Trash a file that still meets ``still`` and purge it at once (the server's
        own clean-ups); returns the trash id."""
        item_id = self.trash(share, path, is_folder=False, actor=actor, reason=reason, still=still)
        self.purge(item_id, actor, reason=reason)
        return item_id

    def resolve(self, prefix: str) -> str:
        """The id of the one trashed item whose id starts with ``prefix`` (ids are long)."""
        if not prefix:
            raise TrashNotFound("no trash item id given")
        with self.services.sessions() as session:
            ids = session.scalars(
                select(TrashItem.id)
                .where(TrashItem.state == "trashed", starts_with(TrashItem.id, prefix.lower()))
                .limit(2)
            ).all()
        if not ids:
            raise TrashNotFound(f"no trashed item {prefix!r}")
        if len(ids) > 1:
            raise AmbiguousTrashId(
                f"{prefix!r} starts several items",
                public=f"More than one item in the trash starts with {prefix!r}; "
                "give more of its id (clindav trash list).",
            )
        return ids[0]

    def items(
        self, *, share: str | None = None, patient: str | None = None, state: str = "trashed"
    ) -> list[TrashItem]:
        query = select(TrashItem).where(TrashItem.state == state).order_by(TrashItem.trashed_at)
        if share:
            query = query.where(TrashItem.share == share)
        if patient:
            query = query.where(
                starts_with(TrashItem.logical_path, f"/{patient}/")
                | (TrashItem.logical_path == f"/{patient}")
            )
        with self.services.sessions() as session:
            return list(session.scalars(query))


def _at_or_under(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or below it (``folder`` without its trailing slash)."""
    return path == folder or path.startswith(folder + "/")


def hold_covers(held: str, path: str) -> bool:
    """A hold on ``held`` keeps ``path`` from removal: it is at, above or below it."""
    return _at_or_under(path, held.rstrip("/")) or _at_or_under(held, path.rstrip("/"))


def _uid(actor: Actor) -> str:
    return actor.request.principal.uid if actor.request.principal else "-"


def crash_point(name: str) -> None:
    """Fault injection for crash tests: ``CLINDAV_CRASH_AT=<name>`` kills the process here.

    It lets the test suite kill a purge exactly between its commit and its
    unlink (tests/integration/test_trash.py); unset, it does nothing.
    """
    if os.environ.get("CLINDAV_CRASH_AT") == name:
        os.kill(os.getpid(), 9)
