"""The consent registry: recording, withdrawing and checking documented consent.

Scopes are cumulative (DOMAIN.md): ``record`` (keep in the medical record,
use for care; the minimum for keeping anything), ``share`` (send to a
colleague or referral), ``teaching`` (teaching, presentation, publication:
written consent with a reference to the stored form is required).

Contract: :class:`ConsentService` validates every field and raises
:class:`InvalidConsent` (400, ``invalid-consent``) with a message naming the
field; records are never deleted (withdrawal adds a row and stops future
use).  :meth:`ConsentService.covering` answers "which active record covers
this scope for this patient" with one indexed query.  Recording consent
releases the patient's held images; withdrawing ``share``/``teaching`` sends
existing copies in shares that require that scope to the trash.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from gateway.clock import aware
from gateway.db import ConsentRecord, ConsentWithdrawal, StoredObject
from gateway.errors import BadRequest, ClindavError, NotFound
from gateway.patients import PatientScheme
from gateway.pipeline import RequestInfo
from gateway.records.consent_terms import GIVEN_BY, METHODS, SCOPES
from gateway.records.trash import Actor
from gateway.services import Services

log = logging.getLogger("clindav.consent")


class InvalidConsent(BadRequest):
    code = "invalid-consent"
    message = "The consent record is incomplete or contradictory."


class ConsentNotFound(NotFound):
    code = "consent-not-found"
    message = "No such consent record."


def end_of_validity(day: dt.date | None) -> dt.datetime | None:
    """A consent valid until ``day`` ends at the start of that day (UTC)."""
    return None if day is None else dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


@dataclass(frozen=True)
class NewConsent:
    patient_id: str
    scopes: tuple[str, ...]
    given_by: str
    method: str
    recorded_by: str
    given_by_name: str | None = None
    form_reference: str | None = None
    intimate: bool = False
    date_of_birth: dt.date | None = None
    valid_until: dt.datetime | None = None
    source: str = "cli"
    note: str = ""

    def problems(self) -> list[str]:
        found = [
            f"unknown scope {s!r} (use {', '.join(SCOPES)})" for s in self.scopes if s not in SCOPES
        ]
        if not self.scopes:
            found.append("at least one scope is needed (record is the minimum)")
        if self.scopes and "record" not in self.scopes:
            found.append(
                "every consent includes the record scope: images are kept only in the record"
            )
        if self.given_by not in GIVEN_BY:
            found.append(f"given-by must be one of {', '.join(GIVEN_BY)}")
        if self.given_by != "patient" and not (self.given_by_name or "").strip():
            found.append("given-by-name is required when the patient did not consent personally")
        if self.method not in METHODS:
            found.append(f"method must be {' or '.join(METHODS)}")
        if "teaching" in self.scopes and (self.method != "written" or not self.form_reference):
            found.append(
                "teaching needs written consent with a reference to the stored form (--form)"
            )
        if not self.recorded_by.strip():
            found.append("recorded-by is required")
        return found


@dataclass
class ConsentView:
    """A record with the scopes still active."""

    record: ConsentRecord
    withdrawn: list[ConsentWithdrawal] = field(default_factory=list)

    @property
    def active_scopes(self) -> set[str]:
        gone = {s for w in self.withdrawn for s in w.scopes}
        return set(self.record.scopes) - gone

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.id,
            "patient": r.patient_id,
            "scopes": r.scopes,
            "active_scopes": sorted(self.active_scopes),
            "given_by": r.given_by,
            "given_by_name": r.given_by_name,
            "method": r.method,
            "form": r.form_reference,
            "intimate": r.intimate,
            "date_of_birth": str(r.date_of_birth) if r.date_of_birth else None,
            "recorded_by": r.recorded_by,
            "recorded_at": str(r.recorded_at),
            "valid_until": str(r.valid_until) if r.valid_until else None,
            "source": r.source,
            "note": r.note,
            "withdrawals": [
                {"scopes": w.scopes, "by": w.withdrawn_by, "at": str(w.withdrawn_at)}
                for w in self.withdrawn
            ],
        }


def _checked_scopes(scopes: Iterable[str]) -> list[str]:
    scopes = list(scopes)
    if not scopes or any(s not in SCOPES for s in scopes):
        raise InvalidConsent(
            f"scopes {scopes}", public=f"Scopes to withdraw must be among {', '.join(SCOPES)}."
        )
    return scopes


class ConsentService:
    def __init__(self, services: Services) -> None:
        self.services = services

    def views(self, session: Session, patient_id: str) -> list[ConsentView]:
        """Every record of a patient with its withdrawals: one indexed query."""
        rows = session.execute(
            select(ConsentRecord, ConsentWithdrawal)
            .outerjoin(ConsentWithdrawal, ConsentWithdrawal.consent_id == ConsentRecord.id)
            .where(ConsentRecord.patient_id == patient_id)
            .order_by(ConsentRecord.id)
        ).all()
        views: dict[int, ConsentView] = {}
        for record, withdrawal in rows:
            view = views.setdefault(record.id, ConsentView(record))
            if withdrawal is not None:
                view.withdrawn.append(withdrawal)
        return list(views.values())

    def covering(
        self, patient_id: str, scope: str, *, intimate: bool = False
    ) -> ConsentView | None:
        """The newest active record covering ``scope`` (and intimate images, if asked)."""
        now = self.services.clock.now()
        with self.services.sessions() as session:
            views = self.views(session, patient_id)
        for view in reversed(views):
            r = view.record
            if scope not in view.active_scopes or (intimate and not r.intimate):
                continue
            if aware(r.valid_from) <= now and (r.valid_until is None or aware(r.valid_until) > now):
                return view
        return None

    def add(self, consent: NewConsent, scheme: PatientScheme, request: RequestInfo) -> ConsentView:
        patient = scheme.normalise(consent.patient_id)
        problems = consent.problems()
        if problems:
            raise InvalidConsent(
                "; ".join(problems), public="Invalid consent: " + "; ".join(problems) + "."
            )
        record = ConsentRecord(
            patient_id=patient,
            scopes=list(consent.scopes),
            given_by=consent.given_by,
            given_by_name=consent.given_by_name,
            method=consent.method,
            form_reference=consent.form_reference,
            intimate=consent.intimate,
            date_of_birth=consent.date_of_birth,
            recorded_by=consent.recorded_by,
            recorded_at=self.services.clock.now(),
            valid_from=self.services.clock.now(),
            valid_until=consent.valid_until,
            source=consent.source,
            note=consent.note,
        )
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            session.add(record)
            session.flush()
            released = self._release_held(session, patient, record)
            self._audit(
                session,
                request,
                "CONSENT-ADD",
                patient,
                "consent-recorded",
                {"consent_id": record.id, "scopes": list(consent.scopes), "released": released},
            )
        return ConsentView(record)

    def _release_held(self, session: Session, patient: str, record: ConsentRecord) -> int:
        """Held images this record covers: intimate ones only by an intimate consent."""
        where = [StoredObject.patient_id == patient, StoredObject.held_until.is_not(None)]
        if not record.intimate:
            where.append(~StoredObject.logical_path.contains("/intimate/", autoescape=True))
        result = session.execute(
            update(StoredObject).where(*where).values(held_until=None, consent_id=record.id)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def withdraw(
        self, consent_id: int, scopes: Iterable[str], by: str, request: RequestInfo, note: str = ""
    ) -> list[tuple[str, str]]:
        """Withdraw scopes; returns the (share, path) copies that were sent to the trash."""
        scopes = _checked_scopes(scopes)
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            record = session.get(ConsentRecord, consent_id)
            if record is None:
                raise ConsentNotFound(f"consent {consent_id}")
            self._withdraw_one(session, record, scopes, by, request, note)
            patient = record.patient_id
        return self._retract_copies(patient, scopes, request)

    def withdraw_patient(
        self, patient: str, scopes: Iterable[str], by: str, request: RequestInfo, note: str = ""
    ) -> tuple[list[int], list[tuple[str, str]]]:
        """Withdraw scopes from every record of ``patient`` that still has one of them.

        Returns the records changed and the copies sent to the trash; one
        transaction, one withdrawal (and event) per record.
        """
        scopes = _checked_scopes(scopes)
        with self.services.sessions.begin() as session:
            self.services.audit.lock_head(session)
            views = [v for v in self.views(session, patient) if v.active_scopes & set(scopes)]
            if not views:
                raise ConsentNotFound(
                    f"no record of {patient} with {scopes} active",
                    public=f"No consent record of patient {patient} has "
                    f"{' or '.join(scopes)} active; nothing was withdrawn.",
                )
            for view in views:
                active = [s for s in scopes if s in view.active_scopes]
                self._withdraw_one(session, view.record, active, by, request, note)
            changed = [v.record.id for v in views]
        return changed, self._retract_copies(patient, scopes, request)

    def _withdraw_one(
        self,
        session: Session,
        record: ConsentRecord,
        scopes: list[str],
        by: str,
        request: RequestInfo,
        note: str,
    ) -> None:
        session.add(
            ConsentWithdrawal(
                consent_id=record.id,
                scopes=scopes,
                withdrawn_by=by,
                withdrawn_at=self.services.clock.now(),
                note=note,
            )
        )
        self._audit(
            session,
            request,
            "CONSENT-WITHDRAW",
            record.patient_id,
            "consent-withdrawn",
            {"consent_id": record.id, "scopes": scopes},
        )

    def _retract_copies(
        self, patient: str, scopes: list[str], request: RequestInfo
    ) -> list[tuple[str, str]]:
        # Shares whose scope was withdrawn and is not still covered by another record.
        uncovered = [s for s in scopes if s != "record" and self.covering(patient, s) is None]
        shares = [
            name
            for name in self.services.shares
            if self.services.policy.required_scope(name) in uncovered
        ]
        if not shares:
            return []
        with self.services.sessions() as session:
            copies = session.execute(
                select(StoredObject.share, StoredObject.logical_path).where(
                    StoredObject.patient_id == patient,
                    StoredObject.share.in_(shares),
                    ~StoredObject.logical_path.startswith("@trash/"),
                )
            ).all()
        for share, path in copies:
            self.services.trash.trash(
                self.services.shares[share],
                path,
                is_folder=False,
                actor=Actor(request, is_admin=True),
                reason="consent withdrawn",
            )
        return [(share, path) for share, path in copies]

    def _audit(
        self,
        session: Session,
        request: RequestInfo,
        action: str,
        patient: str,
        code: str,
        details: dict[str, Any],
    ) -> None:
        event = self.services.audit.event(
            request,
            action=action,
            share=None,
            path=None,
            status=200,
            code=code,
            details=details,
            patient_id=patient,
        )
        self.services.audit.append(session, event)

    def get(self, consent_id: int) -> ConsentView:
        with self.services.sessions() as session:
            record = session.get(ConsentRecord, consent_id)
            if record is None:
                raise ConsentNotFound(f"consent {consent_id}")
            return next(
                v for v in self.views(session, record.patient_id) if v.record.id == consent_id
            )

    def all(self, patient: str | None = None) -> list[ConsentView]:
        with self.services.sessions() as session:
            if patient:
                return self.views(session, patient)
            ids = session.scalars(select(ConsentRecord.patient_id).distinct()).all()
            return [v for p in ids for v in self.views(session, p)]

    def expire_held(self, request: RequestInfo) -> list[tuple[str, str]]:
        """Purge held images whose consent never came (their window ended)."""
        now = self.services.clock.now()
        with self.services.sessions() as session:
            expired = session.execute(
                select(StoredObject.share, StoredObject.logical_path).where(
                    StoredObject.held_until <= now, ~StoredObject.logical_path.startswith("@trash/")
                )
            ).all()
        trash, actor = self.services.trash, Actor(request, is_admin=True)
        done = []
        for share, path in expired:
            try:
                done.append(self._expire_one(trash, actor, share, path, now))
            except ClindavError as exc:  # a legal hold or retention keeps this one; go on
                log.warning("held image %s:%s not expired: %s", share, path, exc.code)
        return done

    def _expire_one(
        self, trash: Any, actor: Any, share: str, path: str, now: dt.datetime
    ) -> tuple[str, str]:
        reason = "consent never recorded within the hold window"
        still = StoredObject.held_until <= now  # not released or replaced meanwhile
        trash.discard(self.services.shares[share], path, actor, reason, still=still)
        return share, path

    def pending(self, *where: ColumnElement[bool]) -> list[StoredObject]:
        """Held images awaiting consent, soonest purge first; ``where``: further conditions."""
        with self.services.sessions() as session:
            return list(
                session.scalars(
                    select(StoredObject)
                    .where(
                        StoredObject.held_until.is_not(None),
                        ~StoredObject.logical_path.startswith("@trash/"),
                        *where,
                    )
                    .order_by(StoredObject.held_until)
                )
            )
