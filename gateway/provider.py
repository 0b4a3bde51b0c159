"""clindav's DAV provider: one per share, over its backing folder.

Unlike WsgiDAV's filesystem provider, nothing touches the target before the
body is complete and has passed the pipeline:

* ``create_empty_resource`` returns a resource that exists only in memory
  (PUT and LOCK on an unmapped URL create nothing on disk);
* ``begin_write`` returns a bounded in-memory :class:`Spool` (never
  plaintext on disk) that checks the declared length;
* ``end_write`` runs the share's pipeline, writes the stored form to a temp
  file, fsyncs it, and under the path's lock renames it into place inside the
  database transaction that records the object and its audit event.

A cut-off body, a refusal or a crash therefore leaves the previous version.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
import os
import re
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from wsgidav import util
from wsgidav.dav_error import HTTP_METHOD_NOT_ALLOWED, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from gateway.db import DataKey, StoredObject, utcnow
from gateway.errors import (
    ClindavError,
    DatabaseUnavailable,
    IncompleteBody,
    NotFound,
    PayloadTooLarge,
)
from gateway.pipeline import ObjectContext, Pipeline, PutContext, RequestInfo
from gateway.policy import Check
from gateway.root import PRINCIPAL
from gateway.services import Services, ShareRuntime
from gateway.storage import fsync_dir, replace_into, split_path, write_temp

REQUEST = "clindav.request"
DECISION = "clindav.decision"
AUDITED = "clindav.audited"
ERROR = "clindav.error"
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
        self.environ[ERROR] = error
        raise DAVError(error.status, src_exception=error)

    return cast(_Method, wrapper)


class ShareProvider(DAVProvider):
    def __init__(self, services: Services, share: ShareRuntime) -> None:
        super().__init__()
        self.services = services
        self.share = share

    def __repr__(self) -> str:
        return f"ShareProvider({self.share.name})"

    def is_readonly(self) -> bool:
        return False

    def commit_object(self, ctx: PutContext, target: Path, *, audit: Any) -> None:
        commit_object(self.services, self.share, ctx, target, audit=audit)

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
        if stat.S_ISDIR(st.st_mode):
            return Folder(logical, environ, self, target, st)
        if stat.S_ISREG(st.st_mode) and (not check_visible or self._visible(logical, environ)):
            return StoredFile(logical, environ, self, target, st)
        return None

    def _visible(self, logical: str, environ: dict[str, Any]) -> bool:
        """Held images and Explorer's placeholders show only to their uploader and admins."""
        return logical.rsplit("/", 1)[-1] not in self.private_names(
            logical.rsplit("/", 1)[0] or "/", environ, only=logical
        )

    def private_names(
        self, folder: str, environ: dict[str, Any], *, only: str | None = None
    ) -> set[str]:
        """Names in ``folder`` this user may not see (one indexed query)."""
        principal = environ.get(PRINCIPAL)
        if principal is not None and self.services.policy.doc.admin_group in principal.groups:
            return set()
        uid = principal.uid if principal is not None else ""
        prefix = folder.rstrip("/") + "/"
        where = [
            StoredObject.share == self.share.name,
            StoredObject.placeholder | StoredObject.held_until.is_not(None),
            StoredObject.uploader != uid,
        ]
        where.append(
            StoredObject.logical_path == only
            if only
            else StoredObject.logical_path.startswith(prefix, autoescape=True)
        )
        with self.services.sessions() as session:
            paths = session.scalars(select(StoredObject.logical_path).where(*where)).all()
        return {p[len(prefix) :] for p in paths if "/" not in p[len(prefix) :]}


def commit_object(
    services: Services, share: ShareRuntime, ctx: PutContext, target: Path, *, audit: Any
) -> None:
    """Seal ``ctx.body`` and make it the version at ``target``, atomically.

    Order (see docs/ARCHITECTURE.md): ciphertext to a temp file and fsync;
    commit its key row; then one transaction, which first takes the audit
    chain's lock (serialising commits, also across gateway processes),
    records the object (and its audit event) and renames the temp file into
    place before committing.  A crash before the rename leaves the old
    version; after it, the new file is readable (its key row is committed)
    and ``clindav fsck --repair`` re-registers it.
    """
    file_id = uuid.uuid4()
    sealed = share.content.seal(file_id, ctx.body)
    temp = write_temp(target.parent, sealed.chunks)
    sessions = services.sessions
    replaced = False
    try:
        with sessions.begin() as session:
            session.add(sealed.key_row)
        with sessions.begin() as session:
            services.audit.lock_head(session)
            old_file_id = _upsert(session, ctx, file_id)
            if old_file_id:
                session.execute(delete(DataKey).where(DataKey.file_id == old_file_id))
            if audit is not None:
                services.audit.append(session, audit)
            session.flush()
            replace_into(temp, target)
            replaced = True
    except BaseException:
        if not replaced:
            temp.unlink(missing_ok=True)
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
        """Members this user may read: a folder the policy hides is not listed."""
        names = self.provider.share.store.list_names(self.target)
        principal = self.environ.get(PRINCIPAL)
        if principal is None:
            return sorted(names)
        policy, share = self.provider.services.policy, self.provider.share.name
        base = self.path.rstrip("/")
        private = self.provider.private_names(self.path, self.environ)
        return sorted(
            n
            for n in names
            if n not in private
            and policy.decide(principal, Check(share, f"{base}/{n}", "PROPFIND", "read")).allowed
        )

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
        segments = split_path(path)
        target = self.provider.share.store.locate(segments)
        resource = StoredFile(path, self.environ, self.provider, target, None)
        if self.environ.get("REQUEST_METHOD") == "LOCK":
            resource.store_body(b"")
        return resource

    def create_collection(self, name: str) -> None:
        segments = split_path(util.join_uri(self.path, name))
        try:
            os.mkdir(self.provider.share.store.locate(segments), 0o700)
        except FileExistsError:
            # Another request made it between WsgiDAV's check and ours (rclone
            # creates parent folders from several transfers at once): 405, as
            # for any MKCOL on an existing URL.
            raise DAVError(HTTP_METHOD_NOT_ALLOWED) from None
        fsync_dir(self.target)

    @keeps_error
    def handle_delete(self) -> bool:
        delete_tree(self, is_folder=True, audited=True)
        return True

    @keeps_error
    def delete(self) -> None:
        delete_tree(self, is_folder=True, audited=False)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        dest = self.provider.share.store.locate(split_path(_registry_path(dest_path)))
        if not dest.exists():
            os.mkdir(dest, 0o700)
        props = self.provider.prop_manager
        dest_url = self.provider.share.url + _registry_path(dest_path)
        if props and is_move:
            props.move_properties(self.get_ref_url(), dest_url, with_children=False)
        elif props:
            props.copy_properties(self.get_ref_url(), dest_url)

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> None:
        dest = self.provider.share.store.locate(split_path(_registry_path(dest_path)))
        src_prefix, dest_prefix = _registry_path(self.path), _registry_path(dest_path)
        with self.provider.services.sessions.begin() as session:
            rows = session.scalars(
                select(StoredObject).where(
                    StoredObject.share == self.provider.share.name,
                    StoredObject.logical_path.startswith(src_prefix + "/", autoescape=True),
                )
            )
            for row in rows:
                row.logical_path = dest_prefix + row.logical_path[len(src_prefix) :]
            session.flush()
            os.rename(self.target, dest)
        fsync_dir(dest.parent)
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


def delete_tree(resource: Folder | StoredFile, *, is_folder: bool, audited: bool) -> None:
    """DELETE of a file or folder: into the share's trash (gateway/trash.py).

    ``audited=False`` for the deletion WsgiDAV does before a COPY/MOVE that
    overwrites: the old target goes to the trash too, and that request gets
    its own single event.  Dead properties and locks of the path are dropped.
    """
    from gateway.trash import Actor, Trash

    services = resource.provider.services
    _check_not_locked(resource)
    request: RequestInfo = resource.environ[REQUEST]
    principal = request.principal
    admin = principal is not None and services.policy.doc.admin_group in principal.groups
    reason = resource.environ.get("HTTP_X_CLINDAV_REASON", "")[:500]
    Trash(services, services.clock).trash(
        resource.provider.share,
        _registry_path(resource.path),
        is_folder=is_folder,
        actor=Actor(request, admin),
        reason=reason,
        audited=audited,
    )
    resource.environ[AUDITED] = resource.environ.get(AUDITED) or audited
    resource.remove_all_properties(recursive=True)
    resource.remove_all_locks(recursive=True)


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
        raw = f"{self.st.st_ino}:{self.st.st_mtime_ns}:{self.st.st_size}"
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def finalize_headers(self, environ: dict[str, Any], response_headers: list[Any]) -> None:
        # A browser must never render what a user uploaded (HTML, SVG, PDF with
        # script): only known image and video types may be shown inline.
        if not self.get_content_type().startswith(
            ("image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "video/mp4")
        ):
            response_headers.append(("Content-Disposition", "attachment"))

    # --- content ---------------------------------------------------------

    def get_content(self) -> BinaryIO:
        if self.st is None:
            raise NotFound("no content yet")
        return self.provider.share.content.open(self.target)

    def begin_write(self, *, content_type: str | None = None) -> Spool:
        limit = self.provider.services.settings.limits.max_upload_bytes
        self._spool = Spool(limit, _declared_length(self.environ))
        return self._spool

    def end_write(self, *, with_errors: bool) -> None:
        spool, self._spool = self._spool, None
        if with_errors or spool is None:
            return
        self.store_body(spool.getvalue())

    def store_body(self, body: bytes) -> None:
        """Run the pipeline on a complete body and commit what it yields."""
        ctx = PutContext(
            request=self.environ[REQUEST],
            share=self.provider.share.name,
            path=self.path,
            body=body,
            content_type=self.get_content_type(),
        )
        pipeline: Pipeline = self.environ[DECISION].pipeline
        pipeline.run_put(ctx)
        self._etag_withheld = ctx.body != body
        self._commit(ctx)

    def _commit(self, ctx: PutContext) -> None:
        """Store the pipeline's result atomically, with its registry row and audit event."""
        self.provider.commit_object(
            ctx, self.target, audit=_audit_put(self.provider, ctx, created=self.st is None)
        )
        self.environ[AUDITED] = True
        self.st = os.lstat(self.target)

    # --- namespace operations -------------------------------------------

    def support_recursive_move(self, dest_path: str) -> bool:
        return False

    @keeps_error
    def handle_delete(self) -> bool:
        delete_tree(self, is_folder=False, audited=True)
        return True

    @keeps_error
    def delete(self) -> None:
        if self._moved_away:
            # WsgiDAV deletes a MOVE source after copy_move_single(is_move=True);
            # our move was a rename, so only the locks are left to drop.
            self.remove_all_locks(recursive=True)
            return
        delete_tree(self, is_folder=False, audited=False)

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
        if is_move:
            with self.provider.services.sessions.begin() as session:
                self.provider.services.audit.lock_head(session)
                session.execute(_delete_row(share.name, dest_key))
                session.execute(
                    update(StoredObject)
                    .where(StoredObject.share == share.name, StoredObject.logical_path == src_key)
                    .values(logical_path=dest_key)
                )
                session.flush()
                replace_into(self.target, dest)
            self._moved_away = True
            if props:
                props.move_properties(self.get_ref_url(), share.url + dest_key, with_children=False)
            return
        self._copy_to(dest, dest_key)
        if props:
            props.copy_properties(self.get_ref_url(), share.url + dest_key)

    def _copy_to(self, dest: Path, dest_key: str) -> None:
        """A copy is a new object with its own file id and its own data key."""
        share = self.provider.share
        with share.content.open(self.target) as src:
            body = src.read()
        ctx = PutContext(
            request=self.environ[REQUEST],
            share=share.name,
            path=dest_key,
            body=body,
            content_type=self.get_content_type(),
        )
        # The copy is the same patient's image under the same consent, and stays
        # held (private to its uploader) while the original is.
        with self.provider.services.sessions() as session:
            source = session.scalar(
                select(StoredObject).where(
                    StoredObject.share == share.name,
                    StoredObject.logical_path == _registry_path(self.path),
                )
            )
        if source is not None:
            ctx.patient_id, ctx.consent_id = source.patient_id, source.consent_id
            ctx.held_until, ctx.placeholder = source.held_until, source.placeholder
        self.provider.commit_object(ctx, dest, audit=None)


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


def _upsert(session: Any, ctx: PutContext, file_id: uuid.UUID) -> str | None:
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
            file_id=str(file_id),
            size=len(ctx.body),
            sha256=ctx.sha256(),
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
    )


def _declared_length(environ: dict[str, Any]) -> int | None:
    """The body length the client announced (Content-Length, or Finder's header)."""
    for key in ("CONTENT_LENGTH", "HTTP_X_EXPECTED_ENTITY_LENGTH"):
        value = environ.get(key, "")
        if value:
            return int(value)
    return None


class Spool:
    """An in-memory, bounded write target for one request body."""

    def __init__(self, limit: int, declared: int | None) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._declared = declared

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise PayloadTooLarge(f"body over {self._limit} bytes")
        self._parts.append(data)

    def close(self) -> None:
        if self._declared is not None and self._size != self._declared:
            raise IncompleteBody(f"got {self._size} of {self._declared} bytes")

    def getvalue(self) -> bytes:
        return b"".join(self._parts)
