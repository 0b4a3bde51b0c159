"""Filing one submission: the patient's consent first, then each photo through the share's pipeline.

Order (docs/PATIENT-UPLOADS.md): the link is claimed (one submission), the
consent is recorded as a consent record (``ConsentService.add``: given by the
patient or by the named person with parental responsibility, method
``written``, form reference ``upload-request-<id>/statement-<version>``,
``record`` and ``share`` scopes, ``teaching`` only when that box was ticked,
``intimate`` when the request was), so the photos are covered by it and never
held; then every photo is one PUT into
``/<patient>/[intimate/]<uploads.folder>/<YYYY-MM-DD>/`` of ``uploads.share``:
the share's whole pipeline (file type, consent, scrub), sealed by
``commit_object`` exactly as a WebDAV PUT is, and one audit event each
(``PUT``, stored or refused).  The uploader recorded is the link
(``patient-link-<id>``), whose only group is the intimate group for an
intimate request: the consent stage then accepts intimate images, and only in
the intimate folder.

A photo is refused on its own (too large, a format ``uploads.formats`` does
not take, a file the share's ``filetype`` stage refuses); the others are
stored.  Nothing of a refused photo is kept.

Filing is idempotent per link: when the gateway fails part-way (a full or
unmounted share: 5xx), the link is given back and the patient sends again.
The consent record of the first try is found by its form reference and
reused; each stored photo was noted in the link's results (with the SHA-256
of the bytes received) in the same commit as the photo, so the retry skips
the photos already stored (``upload-already-filed`` in the audit trail).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from gateway.change import make_dir
from gateway.dav.provider import commit_object
from gateway.db import UploadRequest
from gateway.errors import BadRequest, ClindavError, PayloadTooLarge, UnsupportedMediaType
from gateway.patients import PatientScheme
from gateway.pipeline import PutContext, RequestInfo
from gateway.records.consent import ConsentService, ConsentView, NewConsent
from gateway.records.patientpaths import share_scheme
from gateway.services import Services, ShareRuntime
from gateway.storage.backing import split_path

# The plain-language statement the patient is shown (templates/statement-<version>.html).
# A new wording is a new file and a new version; consent records name the one shown.
STATEMENT_VERSION = "1"


class PhotoTooLarge(PayloadTooLarge):
    code = "photo-too-large"
    message = "This photo is larger than the practice accepts."


class PhotoFormatNotAccepted(UnsupportedMediaType):
    code = "photo-format-not-accepted"
    message = "This kind of file is not accepted; send photos (JPEG, PNG, HEIC or WebP)."


class ConsentRequired(BadRequest):
    code = "upload-consent-required"
    message = "Tick the box to say you agree, then send the photos again."


@dataclass(frozen=True)
class Photo:
    """One chosen file: its name on the phone, its bytes (None: over the size limit)."""

    name: str
    body: bytes | None
    size: int


@dataclass(frozen=True)
class ConsentAnswer:
    """What the patient's form said."""

    agreed: bool
    teaching: bool
    parent_name: str | None  # a person with parental responsibility consents

    def check(self) -> None:
        if not self.agreed:
            raise ConsentRequired("consent box not ticked")
        if self.parent_name is not None and not self.parent_name.strip():
            raise ConsentRequired(
                "parental responsibility without a name",
                public="Give the name of the person with parental responsibility who agrees.",
            )


def record_consent(
    services: Services, row: UploadRequest, answer: ConsentAnswer, request: RequestInfo
) -> int:
    """The patient's consent as a consent record; its id.

    A retry after the gateway failed mid-filing finds the record its first try
    made (by the form reference) and reuses it when the answer is the same;
    an answer without the teaching tick withdraws teaching from that record."""
    scopes = ("record", "share", "teaching") if answer.teaching else ("record", "share")
    parent = answer.parent_name.strip() if answer.parent_name else None
    consent = NewConsent(
        patient_id=row.patient_id,
        scopes=scopes,
        given_by="parental-responsibility" if parent else "patient",
        given_by_name=parent,
        method="written",
        recorded_by=f"patient upload link #{row.id} (asked by {row.created_by})",
        form_reference=form_reference(row),
        intimate=row.intimate,
        date_of_birth=row.date_of_birth,
        source="patient-upload",
        note="given on the patient upload page",
    )
    service = ConsentService(services)
    earlier = _earlier_consent(service, row)
    if earlier is not None and "teaching" in earlier.active_scopes and not answer.teaching:
        service.withdraw(earlier.record.id, ["teaching"], consent.recorded_by, request)
        earlier = _earlier_consent(service, row)
    if earlier is not None and _same_terms(earlier, consent):
        return earlier.record.id
    scheme = share_scheme(services.policy, services.settings.uploads.share)
    view = service.add(consent, scheme or PatientScheme("nhs-number"), request)
    return view.record.id


def form_reference(row: UploadRequest) -> str:
    return f"upload-request-{row.id}/statement-{STATEMENT_VERSION}"


def _earlier_consent(service: ConsentService, row: UploadRequest) -> ConsentView | None:
    """The newest record an earlier try of this link made, if any."""
    with service.services.sessions() as session:
        views = service.views(session, row.patient_id)
    mine = [v for v in views if v.record.form_reference == form_reference(row)]
    return mine[-1] if mine else None


def _same_terms(earlier: ConsentView, consent: NewConsent) -> bool:
    record = earlier.record
    return (
        earlier.active_scopes == set(consent.scopes)
        and record.given_by == consent.given_by
        and record.given_by_name == consent.given_by_name
    )


def check_ready(services: Services) -> None:
    """503 unless photos can be stored now (the share mounted, the master key right), so
    that a failing gateway records no consent and leaves the link unused."""
    watch = services.markers.get(services.settings.uploads.share)
    if watch is not None:
        watch.check()
    services.keys.check_writable()


def upload_folder(services: Services, row: UploadRequest) -> str:
    """``/<patient>/[intimate/]<folder>/<YYYY-MM-DD>``."""
    day = services.clock.now().date().isoformat()
    folder = services.settings.uploads.folder
    intimate = "/intimate" if row.intimate else ""
    return f"/{row.patient_id}{intimate}/{folder}/{day}"


def store_photos(
    services: Services, row: UploadRequest, photos: list[Photo], request: RequestInfo
) -> list[dict[str, Any]]:
    """Each photo through the share's pipeline; one result per photo, in order.

    A photo an earlier try of this link stored (the same bytes: its SHA-256 is
    in the link's results, noted in the photo's own commit) is not stored
    again; earlier photos this try did not send again follow, still stored."""
    share = services.shares[services.settings.uploads.share]
    folder = upload_folder(services, row)
    _make_folders(services, share, folder, request)
    stamp = services.clock.now().strftime("%H%M%S")
    filed = {r["digest"]: r for r in row.results if r.get("outcome") == "stored" and "digest" in r}
    results = [
        _store_one(
            services, share, row, f"{folder}/{_file_name(row, stamp, n, p)}", p, filed, request
        )
        for n, p in enumerate(photos, 1)
    ]
    sent = {r.get("digest") for r in results}
    return results + [r for d, r in filed.items() if d not in sent]


def _file_name(row: UploadRequest, stamp: str, number: int, photo: Photo) -> str:
    """``photo-<request>-<time>-<n>.<ext>``: nothing of the phone's own name but its extension."""
    ext = photo.name.rsplit(".", 1)[-1].lower() if "." in photo.name else ""
    ext = ext if re.fullmatch(r"[a-z0-9]{1,5}", ext) else "bin"
    return f"photo-{row.id}-{stamp}-{number:02d}.{ext}"


def _store_one(
    services: Services,
    share: ShareRuntime,
    row: UploadRequest,
    path: str,
    photo: Photo,
    filed: dict[str, dict[str, Any]],
    request: RequestInfo,
) -> dict[str, Any]:
    result: dict[str, Any] = {"name": photo.name[:120], "size": photo.size}
    digest = hashlib.sha256(photo.body).hexdigest() if photo.body is not None else None
    if digest in filed:
        return _already_filed(services, share, row, {**filed[digest], **result}, request)
    try:
        ctx = _judged(services, share, path, photo, request)
        event = services.audit.event(
            request,
            action="PUT",
            share=share.name,
            path=path,
            status=201,
            code="stored",
            details={**ctx.details, "upload_request": row.id},
            patient_id=ctx.patient_id,
        )
        target = share.store.locate(split_path(path))
        stored = {**result, "outcome": "stored", "path": path, "format": ctx.file_format}
        stored["digest"] = digest
        commit_object(services, share, ctx, target, audit=event, also=_noting(row.id, stored))
    except ClindavError as refusal:
        if refusal.status >= 500:
            raise  # the gateway cannot store anything now; not this photo's fault
        services.audit.record(
            request,
            action="PUT",
            share=share.name,
            path=path,
            status=refusal.status,
            code=refusal.code,
            reason=refusal.detail or refusal.public_message,
            details={"upload_request": row.id, "name": result["name"]},
            patient_id=row.patient_id,
        )
        return {
            **result,
            "outcome": "refused",
            "code": refusal.code,
            "message": refusal.public_message,
        }
    return stored


def _noting(request_id: int, stored: dict[str, Any]) -> Callable[[Session], None]:
    """Adds ``stored`` to the link's results in the photo's own commit."""

    def note(session: Session) -> None:
        current = session.get(UploadRequest, request_id)
        assert current is not None
        current.results = [*current.results, stored]

    return note


def _already_filed(
    services: Services,
    share: ShareRuntime,
    row: UploadRequest,
    earlier: dict[str, Any],
    request: RequestInfo,
) -> dict[str, Any]:
    """An earlier try stored this photo: audited, not stored again."""
    services.audit.record(
        request,
        action="PUT",
        share=share.name,
        path=earlier["path"],
        status=200,
        code="upload-already-filed",
        details={"upload_request": row.id, "name": earlier["name"]},
        patient_id=row.patient_id,
    )
    return earlier


def _judged(
    services: Services, share: ShareRuntime, path: str, photo: Photo, request: RequestInfo
) -> PutContext:
    """The photo's context once the share's stages and ``uploads.formats`` passed it."""
    limits = services.settings.uploads
    if photo.body is None:
        mib = limits.max_file_bytes // (1024 * 1024)
        raise PhotoTooLarge(
            f"{photo.size} bytes > uploads.max_file_bytes",
            public=f"This photo is larger than {mib} MB; it was not stored. "
            "Send a smaller one (most phones can share a photo at a smaller size).",
        )
    ctx = PutContext(
        request=request,
        share=share.name,
        path=path,
        body=photo.body,
        content_type=mimetypes.guess_type(path)[0] or "application/octet-stream",
    )
    services.policy.pipeline(share.name).run_put(ctx)
    if ctx.file_format not in limits.formats:
        raise PhotoFormatNotAccepted(f"format {ctx.file_format} not in uploads.formats")
    return ctx


def _make_folders(
    services: Services, share: ShareRuntime, folder: str, request: RequestInfo
) -> None:
    """The upload folder and any missing folder above it, each a ``MKCOL`` event."""
    segments = split_path(folder)
    missing = [
        n
        for n in range(1, len(segments) + 1)
        if share.store.lstat(share.store.locate(segments[:n])) is None
    ]
    if not missing:
        return
    with services.sessions.begin() as session:
        services.audit.lock_head(session)
        for n in missing:
            try:
                make_dir(session, share.store.locate(segments[:n]))
            except FileExistsError:  # another submission made it meanwhile
                continue
            path = "/" + "/".join(segments[:n])
            event = services.audit.event(
                request,
                action="MKCOL",
                share=share.name,
                path=path,
                status=201,
                code="created",
                patient_id=segments[0],
            )
            services.audit.append(session, event)
