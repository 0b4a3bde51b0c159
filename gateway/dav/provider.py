"""clindav's DAV provider: one per share, over its backing folder.

Unlike WsgiDAV's filesystem provider, nothing touches the target before the
body is complete and has passed the pipeline:

* ``create_empty_resource`` returns a resource that exists only in memory
  (PUT and LOCK on an unmapped URL create nothing on disk);
* ``begin_write`` returns a :class:`Spool` (never plaintext on disk) that
  checks the declared length.  It holds a body of up to
  ``limits.max_upload_bytes`` in memory; a larger one is streamed: judged by
  the stages from its head, then sealed chunk by chunk into a hidden temp file
  (:class:`SealingWriter`) as it arrives, up to ``limits.max_stream_bytes``;
* ``end_write`` runs the share's pipeline (for an in-memory body), writes the
  stored form to a temp file, fsyncs it, and renames it into place inside the
  database transaction that records the object and its audit event, which
  first takes the audit chain's lock, serialising every commit
  (:func:`commit_object`, the same for both kinds of body).

A cut-off body, a refusal or a crash therefore leaves the previous version.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import mimetypes
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from wsgidav import util
from wsgidav.dav_error import HTTP_METHOD_NOT_ALLOWED, HTTP_NOT_FOUND, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from gateway.auth.base import Principal
from gateway.change import make_dir, on_failure, replace
from gateway.crypto.fileformat import TamperedContent
from gateway.dav.held import HELD_PROPERTY, STORED_HELD, held_in, held_text
from gateway.dav.root import PRINCIPAL
from gateway.db import DataKey, StoredObject, starts_with, utcnow
from gateway.errors import (
    ClindavError,
    Conflict,
    DatabaseUnavailable,
    IncompleteBody,
    NotFound,
    PayloadTooLarge,
    from_os_error,
)
from gateway.pipeline import HEAD_BYTES, ObjectContext, Pipeline, PutContext, RequestInfo
from gateway.policy import Policy
from gateway.records.fileids import follow_move
from gateway.records.patientpaths import check_patient_folder, folder_patient
from gateway.records.trash import Actor
from gateway.services import ContentCodec, Services, ShareRuntime
from gateway.stages import shown_inline
from gateway.storage.backing import TempFile, split_path
from gateway.storage.content import registered_file_id

REQUEST = "clindav.request"
DECISION = "clindav.decision"
AUDITED = "clindav.audited"
ERROR = "clindav.error"
# Destination path -> the PutContext a COPY/MOVE within a share was judged with
# (gateway/dav/placement.py), for what the provider records at each destination.
PLACEMENTS = "clindav.placements"
_Method = TypeVar("_Method", bound=Callable[..., Any])


def keeps_error(method: _Method) -> _Method:
    """For methods WsgiDAV calls inside its own catch-all (DELETE, COPY, MOVE).

    WsgiDAV turns any exception there into a bare 500; this records our error
    in the environ, where the middleware finds it and answers its status and
    code (a database failure becomes 503 database-unavailable).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except SQLAlchemyError as exc:
            error: ClindavError = DatabaseUnavailable(f"database: {type(exc).__name__}: {exc}")
        except ClindavError as exc:
            error = exc
        except OSError as exc:
            mapped = from_os_error(exc)
            if mapped is None:
                raise
            error = mapped
        self.environ[ERROR] = error
        raise DAVError(error.status, src_exception=error)

    return cast(_Method, wrapper)


class NameOccupied(Conflict):
    code = "name-occupied"
    message = (
        "Another user's file (awaiting consent, or an upload in progress) already has this "
        "name; use another name."
    )


def hidden_from(policy: Policy, principal: Principal | None) -> ColumnElement[bool] | None:
    """Registry rows ``principal`` may not see: held images and upload placeholders of
    other users (None: an admin sees every row).  Listings, reads and the console use it."""
    if principal is not None and policy.doc.admin_group in principal.groups:
        return None
    uid = principal.uid if principal is not None else ""
    return and_(
        StoredObject.placeholder | StoredObject.held_until.is_not(None),
        StoredObject.uploader != uid,
    )


class ShareProvider(DAVProvider):
    def __init__(self, services: Services, share: ShareRuntime) -> None:
        super().__init__()
        self.services = services
        self.share = share

    def __repr__(self) -> str:
        return f"ShareProvider({self.share.name})"

    def is_readonly(self) -> bool:
        return False

    def commit_object(
        self, ctx: PutContext, target: Path, *, audit: Any, sealed: SealedTemp | None = None
    ) -> None:
        commit_object(self.services, self.share, ctx, target, audit=audit, sealed=sealed)

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        return self.resource(path, environ, check_visible=True)

    def resource(self, path: str, environ: dict[str, Any], *, check_visible: bool) -> Any:
        """The resource at ``path``; a listing that already filtered skips the visibility query."""
        segments = split_path(path)
        target = self.share.store.locate(segments)
        st = self.share.store.lstat(target)
        if st is None:
            return None
        logical = "/" + "/".join(segments)
        if stat.S_ISREG(st.st_mode) and check_visible and not self._visible(logical, environ):
            return None
        return self.from_stat(logical, environ, target, st)

    def from_stat(
        self, logical: str, environ: dict[str, Any], target: Path, st: os.stat_result
    ) -> Folder | StoredFile | None:
        """The resource for an entry already found and checked (a folder, a file, or nothing)."""
        if stat.S_ISDIR(st.st_mode):
            return Folder(logical, environ, self, target, st)
        if stat.S_ISREG(st.st_mode):
            return StoredFile(logical, environ, self, target, st)
        return None

    def _visible(self, logical: str, environ: dict[str, Any]) -> bool:
        """Held images and Explorer's placeholders show only to their uploader and admins."""
        return logical.rsplit("/", 1)[-1] not in self.private_names(
            logical.rsplit("/", 1)[0] or "/", environ, only=logical
        )

    def check_name_free(self, logical: str, environ: dict[str, Any]) -> None:
        """NameOccupied when a file this user may not see holds ``logical``.

        Another user's held image or placeholder is invisible to this user,
        which makes its name look free: a PUT, LOCK, COPY or MOVE onto it
        would replace it with no trash copy.
        """
        segments = split_path(logical)
        st = self.share.store.lstat(self.share.store.locate(segments))
        if st is None or stat.S_ISDIR(st.st_mode):
            return  # folders are nobody's private objects
        path = "/" + "/".join(segments)
        if not stat.S_ISREG(st.st_mode) or not self._visible(path, environ):
            raise NameOccupied(f"{self.share.name}:{path} is another user's private object")

    def private_names(
        self, folder: str, environ: dict[str, Any], *, only: str | None = None
    ) -> set[str]:
        """Names in ``folder`` this user may not see (one indexed query)."""
        hidden = hidden_from(self.services.policy, environ.get(PRINCIPAL))
        if hidden is None:
            return set()
        prefix = folder.rstrip("/") + "/"
        where = [StoredObject.share == self.share.name, hidden]
        where.append(
            StoredObject.logical_path == only
            if only
            else starts_with(StoredObject.logical_path, prefix)
        )
        with self.services.sessions() as session:
            paths = session.scalars(select(StoredObject.logical_path).where(*where)).all()
        return {p[len(prefix) :] for p in paths if "/" not in p[len(prefix) :]}

    def visible_entries(
        self, folder: str, target: Path, environ: dict[str, Any]
    ) -> list[tuple[str, os.DirEntry[str]]]:
        """(name, entry) of the members of a folder this user may read, sorted by name.

        The one listing filter (WsgiDAV's listings and gateway/dav/propfind.py):
        names that do not decode are not ours (legacy, foreign), held images
        and placeholders of others are private, and the policy decides each
        member as a PROPFIND of it.
        """
        entries = [(n, e) for n, e in self.share.store.list_entries(target) if self._ours(e)]
        principal = environ.get(PRINCIPAL)
        if principal is not None:
            decide = self.services.policy.decider(principal, self.share.name, "PROPFIND", "read")
            base = folder.rstrip("/")
            private = self.private_names(folder, environ)
            entries = [
                (n, e) for n, e in entries if n not in private and decide(f"{base}/{n}").allowed
            ]
        return sorted(entries, key=itemgetter(0))

    def _ours(self, entry: os.DirEntry[str]) -> bool:
        """A folder, or a file whose size a stored file can have (a file put on the
        share by something else would otherwise fail the whole listing)."""
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return stat.S_ISDIR(st.st_mode)
        try:
            self.share.content.plaintext_size(st.st_size)
        except TamperedContent:
            return False
        return True


@dataclass(frozen=True)
class SealedTemp:
    """A body already in its stored form, in a hidden temp file beside its target."""

    path: Path
    key_row: DataKey  # not committed yet: commit_object does, just before the rename
    file_id: uuid.UUID
    size: int  # of the plaintext
    sha256: str  # of the plaintext


class SealingWriter:
    """Seals plaintext straight into a new temp file in ``folder``, as it arrives.

    A fresh data key (as ``seal`` takes), the CLDV format written chunk by
    chunk, the SHA-256 and size of the plaintext counted on the way: no
    plaintext reaches the disk and memory stays at about one chunk.  Nothing
    is in the database until :func:`commit_object`, so :meth:`discard` leaves
    nothing behind.
    """

    def __init__(self, content: ContentCodec, folder: Path) -> None:
        self.file_id = uuid.uuid4()
        self._encryptor, self._key_row = content.encryptor(self.file_id)
        self._hash = hashlib.sha256()
        self._size = 0
        self._temp = TempFile(folder)
        try:
            self._temp.write(self._encryptor.header())
        except BaseException:
            self._temp.discard()
            raise

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)
        self._temp.write(self._encryptor.update(data))

    def finish(self) -> SealedTemp:
        """The sealed, fsynced temp file; from here on it is the caller's to commit or delete."""
        try:
            self._temp.write(self._encryptor.finalize())
            path = self._temp.finish()
        except BaseException:
            self._temp.discard()
            raise
        return SealedTemp(path, self._key_row, self.file_id, self._size, self._hash.hexdigest())

    def discard(self) -> None:
        self._temp.discard()


# Pieces an in-memory body is sealed in: the ciphertext is never held whole.
_SEAL_PIECE = 1024 * 1024


def seal_bytes(content: ContentCodec, folder: Path, body: bytes) -> SealedTemp:
    writer = SealingWriter(content, folder)
    try:
        for start in range(0, len(body), _SEAL_PIECE):
            writer.write(body[start : start + _SEAL_PIECE])
        return writer.finish()
    except BaseException:
        writer.discard()
        raise


class StreamedBody:
    """A streamed upload on its way into its sealed temp file: the entry point for every
    door that receives a body in pieces (WebDAV's :class:`Spool`; assembled chunked uploads).

    :meth:`open` runs the pipeline on the upload's head (``ctx.body`` is its
    first :data:`HEAD_BYTES` of plaintext, ``ctx.streamed_size`` its size as
    far as known) and opens a :class:`SealingWriter` beside the target;
    then every piece of plaintext, the head included, goes to
    :meth:`write`: through the stages' filters (``ctx.filters``: structure
    check, scrub) into the sealer.  :meth:`finish` ends the filters (a
    refusal raises, nothing is left) and returns the sealed temp file for
    :func:`commit_object`; :meth:`discard` drops it.  Memory: a filter's
    head and one piece; no plaintext reaches the disk.
    """

    def __init__(self, ctx: PutContext, writer: SealingWriter) -> None:
        self.ctx = ctx
        self._writer = writer

    @classmethod
    def open(
        cls, pipeline: Pipeline, ctx: PutContext, content: ContentCodec, folder: Path
    ) -> StreamedBody:
        """Judge the head (the stages may refuse here), then open the sealed temp file."""
        pipeline.run_put(ctx)
        ctx.details["streamed"] = True  # the audit event says the stages saw a stream
        return cls(ctx, SealingWriter(content, folder))

    @property
    def changed(self) -> bool:
        """Whether a filter changed the bytes (then no ETag is given); known after finish."""
        return any(f.changed for f in self.ctx.filters)

    def write(self, data: bytes) -> None:
        for body_filter in self.ctx.filters:
            data = body_filter.feed(data)
        if data:
            self._writer.write(data)

    def finish(self) -> SealedTemp:
        try:
            pending = b""
            for body_filter in self.ctx.filters:
                pending = (body_filter.feed(pending) if pending else b"") + body_filter.finish()
            if pending:
                self._writer.write(pending)
        except BaseException:
            self._writer.discard()
            raise
        return self._writer.finish()

    def pour(self, pieces: Iterable[bytes]) -> SealedTemp:
        """Write every piece, then finish; discarded on any failure."""
        try:
            for piece in pieces:
                self.write(piece)
        except BaseException:
            self.discard()
            raise
        return self.finish()

    def discard(self) -> None:
        self._writer.discard()


def commit_object(
    services: Services,
    share: ShareRuntime,
    ctx: PutContext,
    target: Path,
    *,
    audit: Any,
    sealed: SealedTemp | None = None,
    also: Callable[[Session], None] | None = None,
) -> None:
    """Make ``ctx``'s upload the version at ``target``, atomically.

    The body is either ``ctx.body``, sealed here, or (a streamed upload)
    ``sealed``, already in its temp file, which this function then owns.
    Order (see docs/ARCHITECTURE.md): ciphertext in a temp file, fsynced;
    commit its key row; then one transaction, which first takes the audit
    chain's lock (serialising commits, also across gateway processes),
    records the object (and its audit event) and renames the temp file into
    place before committing.  If that commit fails the rename is undone
    (gateway/change.py): an error means nothing was stored.  A crash before
    the rename leaves the old version; after it, the new file is not served
    (the registry names the old one: 500 content-authentication-failed) until
    ``clindav fsck --repair`` re-registers it.  Inside a request's change (a
    COPY, a LOCK's placeholder) both transactions are that change's.  ``also``
    writes its own rows in the object's transaction (a patient upload notes the
    photo filed), so they are committed exactly when the object is.
    """
    if sealed is None:
        sealed = seal_bytes(share.content, target.parent, ctx.body)
    sessions = services.sessions
    key_committed = False
    try:
        with sessions.begin() as session:
            session.add(sealed.key_row)
        key_committed = True
        with sessions.begin() as session:
            services.audit.lock_head(session)
            # Under a legal hold the replaced version goes to the trash, key kept.
            kept = services.trash.keep_replaced(
                session, share, _registry_path(ctx.path), ctx.request
            )
            old_file_id = _upsert(session, ctx, sealed)
            if old_file_id:
                session.execute(delete(DataKey).where(DataKey.file_id == old_file_id))
            if audit is not None:
                services.audit.append(session, audit)
            if also is not None:
                also(session)
            session.flush()
            # Undone newest first: the renames are undone, then the temp file goes.
            on_failure(session, lambda: sealed.path.unlink(missing_ok=True))
            if kept is not None:  # the held old version into the trash, put back on failure
                replace(session, kept.source, kept.dest)
            replace(session, sealed.path, target)
    except BaseException:
        sealed.path.unlink(missing_ok=True)  # still there, or put back by the undo
        if key_committed:
            _discard_key(sessions, sealed.key_row.key_id)
        raise


def _registry_path(path: str) -> str:
    # One leading slash, none trailing, no doubled ones (WsgiDAV joins a folder
    # copy's members as "/dest/" + "/name").
    return "/" + re.sub("/+", "/", path).strip("/")


class Folder(DAVCollection):
    def __init__(
        self,
        path: str,
        environ: dict[str, Any],
        provider: ShareProvider,
        target: Path,
        st: os.stat_result,
    ) -> None:
        super().__init__(path, environ)
        self.provider: ShareProvider = provider
        self.target = target
        self.st = st

    def get_creation_date(self) -> float:
        return self.st.st_ctime

    def get_last_modified(self) -> float:
        return self.st.st_mtime

    def get_display_name(self) -> str:
        return self.name

    def get_member_names(self) -> list[str]:
        """Members this user may read (ShareProvider.visible_entries)."""
        entries = self.provider.visible_entries(self.path, self.target, self.environ)
        return [name for name, _entry in entries]

    def get_member(self, name: str) -> Any:
        # Names come from get_member_names, which already left out private objects.
        path = util.join_uri(self.path, name)
        return self.provider.resource(path, self.environ, check_visible=False)

    def create_empty_resource(self, name: str) -> StoredFile:
        """For PUT, a resource that exists only in memory until its body commits.

        For LOCK on an unmapped URL (RFC 4918 9.10.4), a 0-byte placeholder
        committed through the pipeline like any upload, so the lock has a
        resource to hang on.
        """
        path = util.join_uri(self.path, name)
        # WsgiDAV asks only for names it could not resolve: one that exists
        # is another user's private object, never to be replaced unseen.
        self.provider.check_name_free(path, self.environ)
        segments = split_path(path)
        target = self.provider.share.store.locate(segments)
        resource = StoredFile(path, self.environ, self.provider, target, None)
        if self.environ.get("REQUEST_METHOD") == "LOCK":
            # WsgiDAV checks the parent's locks only after this returns: a
            # placeholder in a folder someone else locked must not be stored.
            if self.provider.lock_manager:
                self.provider.lock_manager.check_write_permission(
                    url=resource.get_ref_url(),
                    depth="0",
                    token_list=self.environ.get("wsgidav.ifLockTokenList", []),
                    principal=self.environ.get("wsgidav.user_name"),
                )
            resource.store_body(b"")
        return resource

    @keeps_error
    def create_collection(self, name: str) -> None:
        path = util.join_uri(self.path, name)
        check_patient_folder(self.provider.services.policy, self.provider.share.name, path)
        segments = split_path(path)
        # In the request's change: the folder stays only if its audit event commits.
        with self.provider.services.sessions.begin() as session:
            try:
                make_dir(session, self.provider.share.store.locate(segments))
            except FileExistsError:
                # Another request made it between WsgiDAV's check and ours (rclone
                # creates parent folders from several transfers at once): 405, as
                # for any MKCOL on an existing URL.
                raise DAVError(HTTP_METHOD_NOT_ALLOWED) from None

    @keeps_error
    def handle_delete(self) -> bool:
        delete_tree(self, is_folder=True)
        return True

    @keeps_error
    def delete(self) -> None:
        delete_tree(self, is_folder=True, replaced=True)

    @keeps_error
    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        dest = self.provider.share.store.locate(split_path(_registry_path(dest_path)))
        check_patient_folder(self.provider.services.policy, self.provider.share.name, dest_path)
        if not dest.exists():
            with self.provider.services.sessions.begin() as session:
                make_dir(session, dest)
        props = self.provider.prop_manager
        dest_url = self.provider.share.url + _registry_path(dest_path)
        if props and is_move:
            props.move_properties(self.get_ref_url(), dest_url, with_children=False)
        elif props:
            props.copy_properties(self.get_ref_url(), dest_url)

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    @keeps_error
    def move_recursive(self, dest_path: str) -> None:
        dest = self.provider.share.store.locate(split_path(_registry_path(dest_path)))
        check_patient_folder(self.provider.services.policy, self.provider.share.name, dest_path)
        src_prefix, dest_prefix = _registry_path(self.path), _registry_path(dest_path)
        with self.provider.services.sessions.begin() as session:
            rows = session.scalars(
                select(StoredObject).where(
                    StoredObject.share == self.provider.share.name,
                    starts_with(StoredObject.logical_path, src_prefix + "/"),
                )
            )
            for row in rows:
                row.logical_path = dest_prefix + row.logical_path[len(src_prefix) :]
                for column, value in _placed(placement(self.environ, row.logical_path)).items():
                    setattr(row, column, value)
            name = self.provider.share.name
            follow_move(session, name, src_prefix, name, dest_prefix)
            session.flush()
            replace(session, self.target, dest)
        if self.provider.prop_manager:
            self.provider.prop_manager.move_properties(
                self.get_ref_url(), self.provider.share.url + dest_prefix, with_children=True
            )


def _check_not_locked(resource: Folder | StoredFile) -> None:
    """Raise 423 when the resource or anything below it is locked by someone else.

    WsgiDAV checks only the parent before handing DELETE to ``handle_delete``.
    """
    lock_manager = resource.provider.lock_manager
    environ = resource.environ
    if lock_manager is None:
        return
    if "wsgidav.conditions.if" not in environ:
        util.parse_if_header_dict(environ)
    lock_manager.check_write_permission(
        url=resource.get_ref_url(),
        depth="infinity",
        token_list=environ["wsgidav.ifLockTokenList"],
        principal=environ["wsgidav.user_name"],
    )


def delete_tree(resource: Folder | StoredFile, *, is_folder: bool, replaced: bool = False) -> None:
    """DELETE of a file or folder: into the share's trash (gateway/records/trash.py).

    ``replaced`` for the deletion WsgiDAV does before a COPY/MOVE that
    overwrites: the old target goes to the trash with its own event, and the
    request still gets its own.  Dead properties and locks of the path are
    dropped.
    """
    services = resource.provider.services
    _check_not_locked(resource)
    request: RequestInfo = resource.environ[REQUEST]
    principal = request.principal
    admin = principal is not None and services.policy.doc.admin_group in principal.groups
    reason = resource.environ.get("HTTP_X_CLINDAV_REASON", "")[:500]
    services.trash.trash(
        resource.provider.share,
        _registry_path(resource.path),
        is_folder=is_folder,
        actor=Actor(request, admin),
        reason=reason,
        details={"replaced_by": request.method} if replaced else None,
        replacing=replaced,
    )
    resource.environ[AUDITED] = resource.environ.get(AUDITED) or not replaced
    resource.remove_all_properties(recursive=True)
    resource.remove_all_locks(recursive=True)


def file_etag(st: os.stat_result) -> str:
    """A stored file's ETag: it changes with every new version (inode, mtime, size)."""
    raw = f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


class StoredFile(DAVNonCollection):
    """A stored file, or (``st is None``) one that a PUT or LOCK is creating."""

    def __init__(
        self,
        path: str,
        environ: dict[str, Any],
        provider: ShareProvider,
        target: Path,
        st: os.stat_result | None,
    ) -> None:
        super().__init__(path, environ)
        self.provider: ShareProvider = provider
        self.target = target
        self.st = st
        self._spool: Spool | None = None
        self._etag_withheld = False
        self._moved_away = False

    # --- live properties -------------------------------------------------

    def get_content_length(self) -> int:
        if self.st is None:
            return 0
        return self.provider.share.content.plaintext_size(self.st.st_size)

    def get_content_type(self) -> str:
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"

    def get_creation_date(self) -> float | None:
        return self.st.st_ctime if self.st else None

    def get_last_modified(self) -> float | None:
        return self.st.st_mtime if self.st else None

    def get_display_name(self) -> str:
        return self.name

    def get_etag(self) -> str | None:
        if self.st is None or self._etag_withheld:
            return None
        return file_etag(self.st)

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names: list[str] = super().get_property_names(is_allprop=is_allprop)
        return [*names, HELD_PROPERTY] if self._held_until() is not None else names

    def get_property_value(self, name: str) -> Any:
        if name != HELD_PROPERTY:
            return super().get_property_value(name)
        when = self._held_until()
        if when is None:
            raise DAVError(HTTP_NOT_FOUND)
        return held_text(when)

    def _held_until(self) -> dt.datetime | None:
        """When this file is purged unless consent comes (gateway/dav/held.py); None: not held."""
        folder, _, name = _registry_path(self.path).rpartition("/")
        services, share = self.provider.services, self.provider.share.name
        return held_in(services, share, folder or "/", self.environ).get(name)

    def finalize_headers(self, environ: dict[str, Any], response_headers: list[Any]) -> None:
        # A browser must never render what a user uploaded (HTML, SVG, PDF with
        # script): only known image and video types may be shown inline.
        if not shown_inline(self.get_content_type()):
            response_headers.append(("Content-Disposition", "attachment"))

    # --- content ---------------------------------------------------------

    def get_content(self) -> BinaryIO:
        if self.st is None:
            raise NotFound("no content yet")
        return self._open_content()

    def _open_content(self) -> BinaryIO:
        """The plaintext, only if the stored file is the one this path's registry row names."""
        share = self.provider.share
        sessions = self.provider.services.sessions
        file_id = registered_file_id(sessions, share.name, _registry_path(self.path))
        return share.content.open(self.target, file_id)

    def begin_write(self, *, content_type: str | None = None) -> Spool:
        limits = self.provider.services.settings.limits
        self._spool = Spool(
            limits.max_upload_bytes,
            _declared_length(self.environ),
            judge=self._judge_streamed,
            streams=self.environ[DECISION].pipeline.streams_body,
            stream_limit=limits.max_stream_bytes,
        )
        return self._spool

    def end_write(self, *, with_errors: bool) -> None:
        spool, self._spool = self._spool, None
        if spool is None:
            return
        if with_errors:
            spool.discard()  # a streamed upload's temp file goes; its key was never committed
        elif spool.streamed is None:
            self.store_body(spool.getvalue())
        else:
            streamed = spool.streamed
            sealed = streamed.finish()
            self._etag_withheld = streamed.changed
            self._commit(streamed.ctx, sealed)

    def store_body(self, body: bytes) -> None:
        """Run the pipeline on a complete body and commit what it yields."""
        ctx = self._context(body)
        pipeline: Pipeline = self.environ[DECISION].pipeline
        pipeline.run_put(ctx)
        self._etag_withheld = ctx.body != body
        self._commit(ctx)

    def _judge_streamed(self, head: bytes, size: int) -> StreamedBody:
        """Run the pipeline on a streamed upload's head; if it passes, open its sealed temp file."""
        return StreamedBody.open(
            self.environ[DECISION].pipeline,
            self._context(head, streamed_size=size),
            self.provider.share.content,
            self.target.parent,
        )

    def _context(self, body: bytes, streamed_size: int | None = None) -> PutContext:
        return PutContext(
            request=self.environ[REQUEST],
            share=self.provider.share.name,
            path=self.path,
            body=body,
            content_type=self.get_content_type(),
            streamed_size=streamed_size,
        )

    def _commit(self, ctx: PutContext, sealed: SealedTemp | None = None) -> None:
        """Store the pipeline's result atomically, with its registry row and audit event."""
        self.provider.commit_object(
            ctx,
            self.target,
            audit=_audit_put(self.provider, ctx, created=self.st is None),
            sealed=sealed,
        )
        self.environ[AUDITED] = True
        if ctx.held_until is not None:  # the answer says so (gateway/dav/held.py)
            self.environ[STORED_HELD] = ctx.held_until
        self.st = os.lstat(self.target)

    # --- namespace operations -------------------------------------------

    def support_recursive_move(self, dest_path: str) -> bool:
        return False

    @keeps_error
    def handle_delete(self) -> bool:
        delete_tree(self, is_folder=False)
        return True

    @keeps_error
    def delete(self) -> None:
        if self._moved_away:
            # WsgiDAV deletes a MOVE source after copy_move_single(is_move=True);
            # our move was a rename, so only the locks are left to drop.
            self.remove_all_locks(recursive=True)
            return
        delete_tree(self, is_folder=False, replaced=True)

    @keeps_error
    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        share = self.provider.share
        dest = share.store.locate(split_path(_registry_path(dest_path)))
        src_key, dest_key = _registry_path(self.path), _registry_path(dest_path)
        props = self.provider.prop_manager
        # The destination's stages see every copy and move (consent scope, ...).
        hooks = ObjectContext(
            request=self.environ[REQUEST],
            share=share.name,
            path=src_key,
            destination_share=share.name,
            destination_path=dest_key,
        )
        self.provider.services.policy.pipeline(share.name).run_copy(hooks, is_move=is_move)
        judged = placement(self.environ, dest_key)
        if is_move:
            with self.provider.services.sessions.begin() as session:
                self.provider.services.audit.lock_head(session)
                session.execute(_delete_row(share.name, dest_key))
                session.execute(
                    update(StoredObject)
                    .where(StoredObject.share == share.name, StoredObject.logical_path == src_key)
                    .values(logical_path=dest_key, **_placed(judged))
                )
                follow_move(session, share.name, src_key, share.name, dest_key)
                session.flush()
                replace(session, self.target, dest)
            self._moved_away = True
            if props:
                props.move_properties(self.get_ref_url(), share.url + dest_key, with_children=False)
            return
        self._copy_to(dest, judged)
        if props:
            props.copy_properties(self.get_ref_url(), share.url + dest_key)

    def _copy_to(self, dest: Path, judged: PutContext) -> None:
        """A copy is a new object with its own file id and its own data key.

        It is recorded as judged at its destination (gateway/dav/placement.py):
        the source's patient, the consent record that covers it there, and
        held (private to its uploader) while the original is.
        """
        sealed = self._seal_copy(dest.parent)
        self.provider.commit_object(judged, dest, audit=None, sealed=sealed)

    def _seal_copy(self, folder: Path) -> SealedTemp:
        """The content re-sealed under a new key, a block at a time (any size, flat memory)."""
        writer = SealingWriter(self.provider.share.content, folder)
        try:
            with self._open_content() as src:
                while block := src.read(_SEAL_PIECE):
                    writer.write(block)
            return writer.finish()
        except BaseException:
            writer.discard()
            raise


def placement(environ: dict[str, Any], dest_path: str) -> PutContext:
    """How the gate judged the file a COPY/MOVE puts at ``dest_path`` (gateway/dav/placement.py)."""
    key = "/" + "/".join(split_path(_registry_path(dest_path)))
    judged: PutContext | None = environ.get(PLACEMENTS, {}).get(key)
    if judged is None:  # the gate judges every destination: never store an unjudged one
        raise ClindavError(f"{dest_path} was not judged as a destination")
    return judged


def _placed(judged: PutContext) -> dict[str, Any]:
    """The registry columns a moved file takes from its judgement at the destination."""
    return {
        "patient_id": judged.patient_id,
        "consent_id": judged.consent_id,
        "held_until": judged.held_until,
    }


def _delete_row(share: str, logical_path: str) -> Any:
    return delete(StoredObject).where(
        StoredObject.share == share, StoredObject.logical_path == logical_path
    )


def _discard_key(sessions: Any, key_id: str) -> None:
    """Best effort: a key row whose file never became visible (fsck finds leftovers)."""
    try:
        with sessions.begin() as session:
            session.execute(delete(DataKey).where(DataKey.key_id == key_id))
    except Exception:  # the original error matters more than this clean-up
        pass


def _upsert(session: Any, ctx: PutContext, sealed: SealedTemp) -> str | None:
    """Record ``ctx`` as the object at its path; returns the replaced version's file id."""
    key = _registry_path(ctx.path)
    old = session.scalar(
        select(StoredObject.file_id).where(
            StoredObject.share == ctx.share, StoredObject.logical_path == key
        )
    )
    session.execute(_delete_row(ctx.share, key))
    uploader = ctx.request.principal.uid if ctx.request.principal else "-"
    session.add(
        StoredObject(
            share=ctx.share,
            logical_path=key,
            file_id=str(sealed.file_id),
            size=sealed.size,
            sha256=sealed.sha256,
            content_type=ctx.content_type,
            uploader=uploader,
            placeholder=ctx.placeholder,
            modified_at=utcnow(),
            patient_id=ctx.patient_id,
            consent_id=ctx.consent_id,
            held_until=ctx.held_until,
        )
    )
    return old


def _audit_put(provider: ShareProvider, ctx: PutContext, *, created: bool) -> Any:
    status = 201 if created else 204
    request: RequestInfo = ctx.request
    return provider.services.audit.event(
        request,
        action=request.method,
        share=ctx.share,
        path=_registry_path(ctx.path),
        status=status,
        code="stored",
        details=ctx.details,
        # A placeholder has no patient from the consent stage: its folder's.
        patient_id=ctx.patient_id or folder_patient(provider.services.policy, ctx.share, ctx.path),
    )


def _declared_length(environ: dict[str, Any]) -> int | None:
    """The body length the client announced (Content-Length, or Finder's header)."""
    for key in ("CONTENT_LENGTH", "HTTP_X_EXPECTED_ENTITY_LENGTH"):
        value = environ.get(key, "")
        if value:
            return int(value)
    return None


Judge = Callable[[bytes, int], StreamedBody]


class Spool:
    """The write target of one PUT body: WsgiDAV calls write() per block, then close().

    Once the first :data:`HEAD_BYTES` are in, ``streams`` says whether every
    stage takes a body that starts so as a stream (``Pipeline.streams_body``).
    If so, or if the body is declared or grows larger than ``limit``
    (``limits.max_upload_bytes``), it is streamed: ``judge`` runs the stages
    on the head and opens a :class:`StreamedBody`, and every byte from then
    on goes through the stages' filters straight into the sealed temp file
    (:attr:`streamed`), up to ``stream_limit``.  Otherwise (and for bodies
    shorter than a head) it is held in memory and the stages see it whole
    (:meth:`getvalue`).

    A 413 from the stages' judgement of the head is raised at once: cheroot
    then closes the connection.  Any other failure of a streamed upload (a
    stage's refusal, a filter's, a full disk) is kept and raised by close(),
    the rest of the body being read and dropped: on an error cheroot would
    read the unread rest of a Content-Length body in one piece, into
    memory, to keep the connection alive.
    """

    def __init__(
        self,
        limit: int,
        declared: int | None,
        *,
        judge: Judge,
        streams: Callable[[bytes], bool],
        stream_limit: int,
    ) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._declared = declared
        self._judge = judge
        self._streams = streams
        self._stream_limit = stream_limit
        self._streaming = declared is not None and declared > limit
        self._decided = self._streaming
        self._failure: Exception | None = None
        self.streamed: StreamedBody | None = None

    def write(self, data: bytes) -> None:
        self._size += len(data)
        self._streaming = self._streaming or self._size > self._limit
        if self._streaming and self._size > self._stream_limit:
            raise PayloadTooLarge(f"body over {self._stream_limit} bytes")
        if self._failure is not None:
            return
        if self.streamed is not None:
            try:
                self.streamed.write(data)
            except Exception as exc:
                self._fail(exc)
            return
        self._parts.append(data)
        if self._size >= HEAD_BYTES and not self._decided:
            self._decided = True
            self._streaming = self._streaming or self._streams(self._head())
        if self._streaming and self._size >= HEAD_BYTES:
            self._start_stream()

    def _head(self) -> bytes:
        head = b""
        for part in self._parts:
            head += part[: HEAD_BYTES - len(head)]
            if len(head) == HEAD_BYTES:
                break
        return head

    def _start_stream(self) -> None:
        held, head = self._parts, self._head()
        self._parts = []
        try:
            self.streamed = self._judge(head, max(self._size, self._declared or 0))
        except PayloadTooLarge:
            raise
        except Exception as exc:
            self._fail(exc)
            return
        try:
            for part in held:  # block by block: never a second copy of what was held
                self.streamed.write(part)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self._failure = exc
        self.discard()

    def close(self) -> None:
        if self._declared is not None and self._size != self._declared:
            raise IncompleteBody(f"got {self._size} of {self._declared} bytes")
        if self._streaming and self.streamed is None and self._failure is None:
            self._start_stream()  # the body ended before a whole head (a limit below it)
        if self._failure is not None:
            raise self._failure

    def getvalue(self) -> bytes:
        body, self._parts = b"".join(self._parts), []
        return body

    def discard(self) -> None:
        """Drop whatever was received; a streamed upload's temp file is deleted."""
        self._parts = []
        streamed, self.streamed = self.streamed, None
        if streamed is not None:
            streamed.discard()
