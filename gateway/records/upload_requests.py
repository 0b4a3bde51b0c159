"""Patient upload links: one patient, one date of birth, one submission.

A clinician creates a request (CLI ``clindav request create``, or the
console); its link carries a token of 192 random bits (``secrets``), of which
only a SHA-256 is stored.  The patient opens the link, enters the date of
birth (``uploads.dob_tries`` wrong answers lock the link for good), and earns
a *pass*: a second random token, also kept only as a hash, good for
``uploads.pass_lifetime``, which the one submission must carry.  The
submission claims the link atomically (``open`` -> ``submitted``), so a link
sends photos once, however many tabs or replays try.

Contract: every step is one audit event (``UPLOAD-REQUEST``, ``UPLOAD-OPEN``,
``UPLOAD-DOB``, ``UPLOAD-SUBMIT``, ``UPLOAD-CANCEL``), refusals included.  An
unknown token, a locked link and a cancelled one answer the same
:class:`LinkUnusable` (the patient learns nothing from which); an expired or
used link answers its own clear page.  Bad input when creating a request
raises :class:`InvalidUploadRequest` naming the field, and nothing is
recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select, update

from gateway.auth.base import Principal
from gateway.clock import aware
from gateway.db import UploadRequest
from gateway.errors import BadRequest, ClindavError, Forbidden, NotFound
from gateway.patients import PatientScheme
from gateway.pipeline import RequestInfo
from gateway.services import Services

# 24 bytes: 192 bits from the operating system's CSPRNG (the issue asks for >= 128).
TOKEN_BYTES = 24
NOTE_LIMIT = 500
_MOBILE = re.compile(r"(?:\+44|0044|0)7\d{9}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class InvalidUploadRequest(BadRequest):
    code = "invalid-upload-request"
    message = "The upload request is incomplete or invalid."


class LinkUnusable(NotFound):
    code = "upload-link-unusable"
    message = (
        "This link does not work. If your practice sent it to you, contact them for a new one."
    )


class LinkExpired(ClindavError):
    status = 410
    code = "upload-link-expired"
    message = "This link has expired. Contact your practice if you still need to send photos."


class LinkUsed(ClindavError):
    status = 410
    code = "upload-link-used"
    message = (
        "Photos have already been sent with this link; it works once. "
        "Contact your practice if you need to send more."
    )


class DobMismatch(Forbidden):
    code = "upload-dob-mismatch"
    message = "That date of birth does not match. Check it and try again."


class PassExpired(Forbidden):
    code = "upload-pass-expired"
    message = "This page was open too long. Enter the date of birth again, then send the photos."


class RequestNotFound(NotFound):
    code = "upload-request-not-found"
    message = "No such upload request."


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256 (a 192-bit token needs no slow hash)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class NewUploadRequest:
    patient_id: str
    date_of_birth: dt.date
    created_by: str
    mobile: str | None = None
    email: str | None = None
    note: str = ""
    max_files: int | None = None
    expires_days: int | None = None
    intimate: bool = False


@dataclass(frozen=True)
class CreatedRequest:
    row: UploadRequest
    token: str


def normalised_mobile(mobile: str | None) -> str | None:
    """A UK mobile number without spaces, or None when absent; ValueError if not one."""
    if mobile is None or not mobile.strip():
        return None
    cleaned = re.sub(r"[\s()-]", "", mobile)
    if not _MOBILE.fullmatch(cleaned):
        raise ValueError("mobile: not a UK mobile number (07... or +447...)")
    return cleaned


def link_principal(services: Services, row: UploadRequest) -> Principal:
    """Who the patient's steps are recorded as: the link (``patient-link-<id>``), not a staff
    account.  An intimate request's link is in the intimate group only, so that the share's
    consent stage takes intimate images from it, and only into the intimate folder."""
    groups = frozenset({_intimate_group(services)}) if row.intimate else frozenset()
    return Principal(f"patient-link-{row.id}", groups)


def _intimate_group(services: Services) -> str:
    """The intimate group of ``uploads.share``'s consent stage (its default otherwise)."""
    stage = services.policy.pipeline(services.settings.uploads.share).find("consent")
    group = getattr(getattr(stage, "options", None), "intimate_group", None)
    return group if isinstance(group, str) else "intimate-access"


class UploadRequestService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings.uploads

    # -- the clinician's side -------------------------------------------------

    def create(
        self, new: NewUploadRequest, scheme: PatientScheme, request: RequestInfo
    ) -> CreatedRequest:
        if self.settings.share not in self.services.shares:
            raise InvalidUploadRequest(
                f"uploads.share {self.settings.share!r} is not a share",
                public=f"Upload links are not set up: uploads.share names no share "
                f"({self.settings.share}).",
            )
        patient = scheme.normalise(new.patient_id)
        fields = self._checked(new)
        now = self.services.clock.now()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        days = new.expires_days or self.settings.expiry_days
        row = UploadRequest(
            token_hash=token_hash(token),
            patient_id=patient,
            date_of_birth=new.date_of_birth,
            note=new.note.strip(),
            intimate=new.intimate,
            created_by=new.created_by,
            created_at=now,
            expires_at=now + dt.timedelta(days=days),
            state="open",
            dob_failures=0,
            results=[],
            deliveries={},
            **fields,
        )
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            session.add(row)
            session.flush()
            details = {"request": row.id, "intimate": row.intimate, "max_files": row.max_files}
            self._append(
                session, request, "UPLOAD-REQUEST", row, 201, "upload-request-created", details
            )
            session.expunge(row)
        return CreatedRequest(row, token)

    def _checked(self, new: NewUploadRequest) -> dict[str, Any]:
        problems: list[str] = []
        fields: dict[str, Any] = {}
        try:
            fields["mobile"] = normalised_mobile(new.mobile)
        except ValueError as exc:
            problems.append(str(exc))
        email = (new.email or "").strip() or None
        if email is not None and not _EMAIL.fullmatch(email):
            problems.append("email: not an e-mail address")
        fields["email"] = email
        today = self.services.clock.now().date()
        if not dt.date(1880, 1, 1) <= new.date_of_birth <= today:
            problems.append("dob: a date of birth in the past is needed")
        limit = self.settings.max_files
        fields["max_files"] = new.max_files or limit
        if not 1 <= fields["max_files"] <= limit:
            problems.append(f"max-files: between 1 and {limit} (uploads.max_files)")
        if new.expires_days is not None and not 1 <= new.expires_days <= 90:
            problems.append("expires: between 1 and 90 days")
        if len(new.note) > NOTE_LIMIT:
            problems.append(f"note: at most {NOTE_LIMIT} characters (the patient reads it)")
        if not new.created_by.strip():
            problems.append("created-by is required")
        if problems:
            text = "; ".join(problems)
            raise InvalidUploadRequest(text, public=f"Invalid upload request: {text}.")
        return fields

    def all(self, created_by: str | None = None, limit: int = 200) -> list[UploadRequest]:
        """Requests, newest first; ``created_by``: only this clinician's."""
        query = select(UploadRequest).order_by(UploadRequest.id.desc()).limit(limit)
        if created_by is not None:
            query = query.where(UploadRequest.created_by == created_by)
        with self.services.sessions() as session:
            return list(session.scalars(query))

    def submitted(self, created_by: str, since: dt.datetime) -> list[UploadRequest]:
        """This clinician's requests whose submission came since ``since``, newest first."""
        query = (
            select(UploadRequest)
            .where(
                UploadRequest.created_by == created_by,
                UploadRequest.state == "submitted",
                UploadRequest.submitted_at >= since,
            )
            .order_by(UploadRequest.submitted_at.desc())
        )
        with self.services.sessions() as session:
            return list(session.scalars(query))

    def get(self, request_id: int) -> UploadRequest:
        with self.services.sessions() as session:
            row = session.get(UploadRequest, request_id)
        if row is None:
            raise RequestNotFound(f"upload request {request_id}")
        return row

    def cancel(self, request_id: int, request: RequestInfo) -> UploadRequest:
        """Stop an open link working (a used, locked or cancelled one stays as it is)."""
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            row = session.get(UploadRequest, request_id)
            if row is None:
                raise RequestNotFound(f"upload request {request_id}")
            if row.state != "open":
                raise InvalidUploadRequest(
                    f"request {request_id} is {row.state}",
                    public=f"Upload request {request_id} is {row.state}; only open links can be "
                    "cancelled.",
                )
            row.state = "cancelled"
            self._append(
                session,
                request,
                "UPLOAD-CANCEL",
                row,
                200,
                "upload-request-cancelled",
                {"request": row.id},
            )
            session.flush()
            session.expunge(row)
        return row

    def record_deliveries(self, request_id: int, deliveries: dict[str, Any]) -> None:
        with self.services.sessions.begin() as session:
            row = session.get(UploadRequest, request_id)
            if row is not None:
                row.deliveries = {**row.deliveries, **deliveries}

    # -- the patient's side ---------------------------------------------------

    def open(self, token: str, request: RequestInfo) -> UploadRequest:
        """The request behind a link that still takes photos; audited ``UPLOAD-OPEN``."""
        row = self._usable(token, request, "UPLOAD-OPEN")
        self._record(request, "UPLOAD-OPEN", row, 200, "upload-link-opened", {"request": row.id})
        return row

    def verify_dob(
        self, token: str, dob: dt.date, request: RequestInfo
    ) -> tuple[UploadRequest, str]:
        """The pass for a right date of birth; a wrong one counts towards the lock."""
        row = self._usable(token, request, "UPLOAD-DOB")
        secret = secrets.token_urlsafe(TOKEN_BYTES)
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            current = session.get(UploadRequest, row.id)
            if current is None or current.state != "open":  # locked or claimed meanwhile
                refusal: ClindavError | None = LinkUnusable(f"request {row.id} changed")
            elif current.date_of_birth != dob:
                refusal = self._wrong_dob(session, current, request)
            else:
                refusal = None
                current.pass_hash = token_hash(secret)
                current.verified_at = self.services.clock.now()
                details = {"request": row.id}
                self._append(
                    session, request, "UPLOAD-DOB", current, 200, "upload-dob-verified", details
                )
            session.flush()
            if current is not None:
                session.expunge(current)
        if refusal is not None:  # after the commit: a wrong try counts
            raise AuditedRefusal(refusal)
        assert current is not None
        return current, secret

    def _wrong_dob(self, session: Any, row: UploadRequest, request: RequestInfo) -> ClindavError:
        row.dob_failures += 1
        tries = self.settings.dob_tries
        locked = row.dob_failures >= tries
        if locked:
            row.state = "locked"
        details = {"request": row.id, "failures": row.dob_failures, "locked": locked}
        code = "upload-link-locked" if locked else DobMismatch.code
        self._append(session, request, "UPLOAD-DOB", row, 403, code, details)
        if locked:  # from now on the link answers as an unknown one
            return LinkUnusable(f"request {row.id} locked after {tries} wrong dates of birth")
        left = tries - row.dob_failures
        return DobMismatch(
            f"request {row.id}: wrong date of birth ({row.dob_failures} of {tries})",
            public=f"{DobMismatch.message} {left} {'try' if left == 1 else 'tries'} left.",
        )

    def passed(self, token: str, secret: str, request: RequestInfo) -> UploadRequest:
        """The request, if ``secret`` is the pass its date of birth earned, still fresh."""
        row = self._usable(token, request, "UPLOAD-SUBMIT")
        now = self.services.clock.now()
        fresh = row.verified_at is not None and (
            now - aware(row.verified_at) <= self.settings.pass_lifetime
        )
        known = row.pass_hash is not None and secrets.compare_digest(
            row.pass_hash, token_hash(secret)
        )
        if not (known and fresh):
            raise self._refuse(request, "UPLOAD-SUBMIT", row, PassExpired(f"request {row.id}"))
        return row

    def claim(self, row: UploadRequest, request: RequestInfo) -> None:
        """Take the link's one submission: it is ``submitted`` from now on."""
        with self.services.sessions.begin() as session:
            taken = session.execute(
                update(UploadRequest)
                .where(UploadRequest.id == row.id, UploadRequest.state == "open")
                .values(state="submitted", submitted_at=self.services.clock.now())
            )
        if not getattr(taken, "rowcount", 0):  # another submission won the race
            raise self._refuse(request, "UPLOAD-SUBMIT", row, LinkUsed(f"request {row.id} raced"))

    def release(self, row: UploadRequest, request: RequestInfo) -> None:
        """Undo a claim after the gateway failed mid-submission: the link works again."""
        with self.services.sessions.begin() as session:
            session.execute(
                update(UploadRequest)
                .where(UploadRequest.id == row.id, UploadRequest.state == "submitted")
                .values(state="open", submitted_at=None)
            )
        details = {"request": row.id}
        self._record(request, "UPLOAD-SUBMIT", row, 503, "upload-link-released", details)

    def record_refusal(
        self, row: UploadRequest, refusal: ClindavError, request: RequestInfo
    ) -> None:
        """A submission refused before it was filed (nothing recorded or stored)."""
        details = {"request": row.id}
        self._record(
            request,
            "UPLOAD-SUBMIT",
            row,
            refusal.status,
            refusal.code,
            details,
            reason=refusal.detail,
        )

    def finish(
        self,
        request_id: int,
        consent_id: int | None,
        results: list[dict[str, Any]],
        request: RequestInfo,
    ) -> UploadRequest:
        """Record what the submission stored; audited ``UPLOAD-SUBMIT``."""
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            row = session.get(UploadRequest, request_id)
            assert row is not None
            row.consent_id, row.results = consent_id, results
            stored = sum(1 for r in results if r["outcome"] == "stored")
            details = {
                "request": row.id,
                "stored": stored,
                "refused": len(results) - stored,
                "consent_id": consent_id,
            }
            self._append(session, request, "UPLOAD-SUBMIT", row, 200, "upload-submitted", details)
            session.flush()
            session.expunge(row)
        return row

    def _usable(self, token: str, request: RequestInfo, action: str) -> UploadRequest:
        """The link's request if it still works; else an audited refusal."""
        with self.services.sessions() as session:
            row = session.scalars(
                select(UploadRequest).where(UploadRequest.token_hash == token_hash(token))
            ).first()
        if row is None:
            raise self._refuse(request, action, None, LinkUnusable("unknown token"))
        if row.state in ("locked", "cancelled"):
            raise self._refuse(
                request, action, row, LinkUnusable(f"request {row.id} is {row.state}")
            )
        if row.state == "submitted":
            raise self._refuse(request, action, row, LinkUsed(f"request {row.id} already used"))
        if aware(row.expires_at) <= self.services.clock.now():
            raise self._refuse(request, action, row, LinkExpired(f"request {row.id} expired"))
        return row

    def _refuse(
        self, request: RequestInfo, action: str, row: UploadRequest | None, refusal: ClindavError
    ) -> AuditedRefusal:
        details = {"request": row.id} if row is not None else {}
        self._record(
            request, action, row, refusal.status, refusal.code, details, reason=refusal.detail
        )
        return AuditedRefusal(refusal)

    def _record(
        self,
        request: RequestInfo,
        action: str,
        row: UploadRequest | None,
        status: int,
        code: str,
        details: dict[str, Any],
        reason: str = "",
    ) -> None:
        self.services.audit.record(
            self._actor(request, row),
            action=action,
            share=None,
            path=None,
            status=status,
            code=code,
            reason=reason,
            details=details,
            patient_id=row.patient_id if row is not None else None,
        )

    def _append(
        self,
        session: Any,
        request: RequestInfo,
        action: str,
        row: UploadRequest,
        status: int,
        code: str,
        details: dict[str, Any],
    ) -> None:
        event = self.services.audit.event(
            self._actor(request, row),
            action=action,
            share=None,
            path=None,
            status=status,
            code=code,
            details=details,
            patient_id=row.patient_id,
        )
        self.services.audit.append(session, event)

    def _actor(self, request: RequestInfo, row: UploadRequest | None) -> RequestInfo:
        """A patient's step (nobody signed in) is recorded as the link's."""
        if request.principal is not None or row is None:
            return request
        return replace(request, principal=link_principal(self.services, row))

    def limit_for(self, token: str) -> int | None:
        """How many photos the link takes (None: no such link); read before its body is."""
        with self.services.sessions() as session:
            return session.scalar(
                select(UploadRequest.max_files).where(UploadRequest.token_hash == token_hash(token))
            )


class AuditedRefusal(Exception):
    """A refusal already in the audit trail: the door shows ``refusal`` and records nothing more."""

    def __init__(self, refusal: ClindavError) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal
