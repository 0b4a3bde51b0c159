"""Patient upload requests: one patient, one date of birth, one submission.

A clinician creates a request (CLI ``clindav request create``, or the
console); who may then use its link (token, date of birth, pass) is
gateway/records/upload_access.py.  The submission claims the link atomically
(``open`` -> ``submitted``), so a link sends photos once, however many tabs
or replays try; a failure of the gateway while filing gives it back.

Contract: every step is one audit event (``UPLOAD-REQUEST``, ``UPLOAD-OPEN``,
``UPLOAD-DOB``, ``UPLOAD-SUBMIT``, ``UPLOAD-CANCEL``), refusals included.
Bad input when creating a request raises :class:`InvalidUploadRequest`
naming the field, and nothing is recorded.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from gateway.db import UploadRequest
from gateway.errors import BadRequest, ClindavError, NotFound
from gateway.patients import PatientScheme
from gateway.pipeline import RequestInfo
from gateway.records.upload_access import (
    FILING_LEASE,
    TOKEN_BYTES,
    LinkUsed,
    append_step,
    record_step,
    refuse,
    token_hash,
)
from gateway.services import Services

NOTE_LIMIT = 500
_MOBILE = re.compile(r"(?:\+44|0044|0)7\d{9}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class InvalidUploadRequest(BadRequest):
    code = "invalid-upload-request"
    message = "The upload request is incomplete or invalid."


class RequestNotFound(NotFound):
    code = "upload-request-not-found"
    message = "No such upload request."


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
            append_step(
                self.services,
                session,
                request,
                "UPLOAD-REQUEST",
                row,
                201,
                "upload-request-created",
                details,
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
            append_step(
                self.services,
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

    # -- the submission -------------------------------------------------------

    def claim(self, row: UploadRequest, request: RequestInfo) -> None:
        """Take the link's one submission: it is ``filing`` until :meth:`finish`, and a
        filing cut short (the process died) may be taken again after ``FILING_LEASE``."""
        now = self.services.clock.now()
        cut_short = (UploadRequest.state == "filing") & (
            UploadRequest.submitted_at <= now - FILING_LEASE
        )
        with self.services.sessions.begin() as session:
            taken = session.execute(
                update(UploadRequest)
                .where(UploadRequest.id == row.id, (UploadRequest.state == "open") | cut_short)
                .values(state="filing", submitted_at=now)
            )
        if not getattr(taken, "rowcount", 0):  # another submission won the race
            raise refuse(
                self.services, request, "UPLOAD-SUBMIT", row, LinkUsed(f"request {row.id} raced")
            )

    def release(self, row: UploadRequest, request: RequestInfo) -> None:
        """Undo a claim after the gateway failed mid-submission: the link works again."""
        with self.services.sessions.begin() as session:
            session.execute(
                update(UploadRequest)
                .where(UploadRequest.id == row.id, UploadRequest.state == "filing")
                .values(state="open", submitted_at=None)
            )
        details = {"request": row.id}
        record_step(
            self.services, request, "UPLOAD-SUBMIT", row, 503, "upload-link-released", details
        )

    def record_refusal(
        self, row: UploadRequest, refusal: ClindavError, request: RequestInfo
    ) -> None:
        """A submission refused before it was filed (nothing recorded or stored)."""
        details = {"request": row.id}
        record_step(
            self.services,
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
            row.consent_id, row.results, row.state = consent_id, results, "submitted"
            stored = sum(1 for r in results if r["outcome"] == "stored")
            details = {
                "request": row.id,
                "stored": stored,
                "refused": len(results) - stored,
                "consent_id": consent_id,
            }
            append_step(
                self.services,
                session,
                request,
                "UPLOAD-SUBMIT",
                row,
                200,
                "upload-submitted",
                details,
            )
            session.flush()
            session.expunge(row)
        return row
