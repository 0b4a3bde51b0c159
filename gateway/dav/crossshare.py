"""COPY and MOVE of a file from one share to another (clinical -> referrals, teaching).

WsgiDAV refuses copies between providers; this is clindav's own handler, and
it applies the same rules as a PUT at the destination: the destination
share's whole pipeline runs on the copy (file type, the consent scope that
share requires, its scrubbing, e.g. no capture date in teaching), the copy
gets its own file id and data key, and it remembers whose image it is even
when its path must not say so.  An intimate image stays intimate: the
destination judges the copy as intimate wherever it goes (it needs intimate
consent, and a place only the intimate group may read).  A MOVE is a copy
followed by sending the source to the trash; the file keeps its number
(``oc:fileid``, gateway/records/fileids.py).  Folders are copied between shares one file at a time
by the client (a folder answers 409 ``cross-share-folder``).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from wsgidav import util

from gateway.dav.limits import CopyTooLarge
from gateway.dav.provider import AUDITED, ShareProvider, commit_object
from gateway.dav.root import PRINCIPAL
from gateway.db import StoredObject
from gateway.errors import ClindavError, Conflict, NotFound
from gateway.pipeline import PutContext, RequestInfo
from gateway.records.fileids import follow_move
from gateway.records.trash import Actor
from gateway.services import Services, ShareRuntime
from gateway.storage.backing import split_path

StartResponse = Callable[..., Any]


class CrossShareFolder(Conflict):
    code = "cross-share-folder"
    message = "Folders are copied between shares file by file."


class DestinationExists(ClindavError):
    status = 412
    code = "destination-exists"
    message = "The destination exists and Overwrite is F."


class DestinationLocked(ClindavError):
    status = 423
    code = "destination-locked"
    message = "The destination is locked."


@dataclass(frozen=True)
class CopyOrder:
    """One file to copy into another share, and on whose behalf."""

    request: RequestInfo
    source: tuple[str, str]  # share, path
    destination: tuple[str, str]
    action: str = "COPY"  # or MOVE: the event's action and code
    overwrite: bool = True
    reason: str = ""  # why a replaced destination goes to the trash
    lock_tokens: tuple[str, ...] = ()  # tokens the client holds (its If header)


def copy_across(
    environ: dict[str, Any],
    start_response: StartResponse,
    services: Services,
    source: tuple[str, str],
    destination: tuple[str, str],
) -> Iterator[bytes]:
    """Handle a COPY/MOVE whose Destination lies in another share."""
    request: RequestInfo = environ["clindav.request"]
    lock_manager = environ["wsgidav.app"].lock_manager
    if lock_manager is not None:
        util.parse_if_header_dict(environ)
    order = CopyOrder(
        request,
        source,
        destination,
        action=request.method,
        overwrite=environ.get("HTTP_OVERWRITE", "T").upper() != "F",
        reason=environ.get("HTTP_X_CLINDAV_REASON", "")[:500],
        lock_tokens=tuple(environ.get("wsgidav.ifLockTokenList", ())),
    )
    existed = copy_file(services, order, lock_manager)
    environ[AUDITED] = True
    if order.action == "MOVE":  # the MOVE's own event says where it went
        src_share, src_path = services.shares[source[0]], "/" + "/".join(split_path(source[1]))
        dest_path = "/" + "/".join(split_path(destination[1]))
        with services.sessions.begin() as session:  # the file keeps its number where it went
            follow_move(session, src_share.name, src_path, destination[0], dest_path)
        reason = "moved to another share"
        _trash(services, src_share, src_path, request, reason=reason, audited=False)
    start_response(
        f"{204 if existed else 201} {'No Content' if existed else 'Created'}",
        [("Content-Length", "0")],
    )
    return iter([b""])


def copy_file(services: Services, order: CopyOrder, lock_manager: Any) -> bool:
    """Copy one file into another share as a PUT there would store it; True: it replaced one.

    The destination share's whole pipeline runs on the copy; a file it
    replaces goes to the trash only once the copy passed.  The copy and its
    event (``copied``, or ``moved`` for a MOVE) are committed together.  The
    caller has judged the request (policy, mounted shares) as for any COPY.
    """
    request, is_move = order.request, order.action == "MOVE"
    src_share, src_path = (
        services.shares[order.source[0]],
        "/" + "/".join(split_path(order.source[1])),
    )
    dest_share, dest_path = (
        services.shares[order.destination[0]],
        "/" + "/".join(split_path(order.destination[1])),
    )
    body, patient = _read_source(services, src_share, src_path)
    dest_target = dest_share.store.locate(split_path(dest_path))
    existed = _check_destination(order, services, dest_share, dest_path, lock_manager)
    source_pipeline = services.policy.pipeline(src_share.name)
    ctx = PutContext(
        request=request,
        share=dest_share.name,
        path=dest_path,
        body=body,
        content_type=mimetypes.guess_type(dest_path)[0] or "application/octet-stream",
        source_patient_id=patient,
        intimate=source_pipeline.carries_intimate(src_share.name, src_path),
    )
    services.policy.pipeline(dest_share.name).run_put(ctx)
    if existed:  # only once the copy passed: a refused copy leaves the target alone
        _trash(
            services,
            dest_share,
            dest_path,
            request,
            reason=order.reason,
            details={"replaced_by": order.action},
            replacing=True,
        )
    event = services.audit.event(
        request,
        action=order.action,
        share=dest_share.name,
        path=dest_path,
        status=204 if existed else 201,
        code="moved" if is_move else "copied",
        patient_id=ctx.patient_id,
        details={
            **ctx.details,
            "from": f"{src_share.name}:{src_path}",
            "to": f"{dest_share.name}:{dest_path}",
        },
    )
    commit_object(services, dest_share, ctx, dest_target, audit=event)
    return existed


def _read_source(services: Services, share: ShareRuntime, path: str) -> tuple[bytes, str | None]:
    target = share.store.locate(split_path(path))
    st = share.store.lstat(target)
    if st is None:
        raise NotFound(f"{share.name}:{path}")
    if target.is_dir():
        raise CrossShareFolder(f"{share.name}:{path} is a folder")
    with services.sessions() as session:
        row = session.execute(
            select(StoredObject.patient_id, StoredObject.held_until, StoredObject.file_id).where(
                StoredObject.share == share.name, StoredObject.logical_path == path
            )
        ).first()
    # A held image stays in its share, except in an inbox (the hold stage), whose
    # images wait precisely to be filed elsewhere, under the destination's checks.
    inbox = services.policy.pipeline(share.name).find("hold") is not None
    if row is not None and row.held_until is not None and not inbox:
        raise NotFound(f"{share.name}:{path} awaits consent")
    size, limit = (
        share.content.plaintext_size(st.st_size),
        services.settings.limits.max_upload_bytes,
    )
    if size > limit:
        # The destination's stages judge the whole body, in memory, as for an upload.
        raise CopyTooLarge(
            f"{share.name}:{path} holds {size} bytes, over limits.max_upload_bytes",
            public="Files this large cannot be copied between shares; download and upload it.",
        )
    with share.content.open(target, row.file_id if row else None) as plain:
        return plain.read(), row.patient_id if row else None


def _check_destination(
    order: CopyOrder, services: Services, share: ShareRuntime, path: str, lock_manager: Any
) -> bool:
    """Check parent, locks, Overwrite and the name; True when a file is to be replaced."""
    parent = share.store.locate(split_path(path)[:-1])
    if share.store.lstat(parent) is None or not parent.is_dir():
        raise Conflict(f"{share.name}:{path}: parent folder missing")
    principal = order.request.principal
    if lock_manager is not None:
        try:
            lock_manager.check_write_permission(
                url=share.url + path,
                depth="0",
                token_list=list(order.lock_tokens),
                principal=principal.uid if principal is not None else "",
            )
        except Exception:  # WsgiDAV signals a conflicting lock with DAVError(423)
            raise DestinationLocked(f"{share.name}:{path}") from None
    exists = share.store.lstat(share.store.locate(split_path(path))) is not None
    if exists:
        ShareProvider(services, share).check_name_free(path, {PRINCIPAL: principal})
    if exists and not order.overwrite:
        raise DestinationExists(f"{share.name}:{path}")
    return exists


def _trash(
    services: Services,
    share: ShareRuntime,
    path: str,
    request: RequestInfo,
    *,
    reason: str,
    audited: bool = True,
    details: dict[str, Any] | None = None,
    replacing: bool = False,
) -> None:
    principal = request.principal
    admin = principal is not None and services.policy.doc.admin_group in principal.groups
    services.trash.trash(
        share,
        path,
        is_folder=False,
        actor=Actor(request, admin),
        reason=reason,
        audited=audited,
        details=details,
        replacing=replacing,
    )
