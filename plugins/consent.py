"""The ``consent`` stage: no clinical image is kept, shared or used for teaching
without the recorded consent that covers it.

Options (policy, per share):

* ``patients``: the patient-id scheme (``nhs-number`` or ``regex:<pattern>``)
  of a share whose folders are ``/<patient id>/...``; images elsewhere, or
  under an id that fails validation, are refused.
* ``requires``: the scope needed here (``record`` in clinical shares,
  ``share`` in referral shares, ``teaching`` in teaching shares).
* ``missing``: ``reject`` (403 ``consent-missing``, for EHR drops) or
  ``hold``: the image is kept (scrubbed and encrypted as always) but held,
  visible only to its uploader and admins, released when consent is recorded
  and purged after ``hold_window`` if it never is.  Copies are never held.
* ``patient_id_in_path: forbidden`` (teaching shares): the destination path
  must not carry the patient id; a case label is suggested instead.
* ``intimate_folder`` (default ``intimate``): images in ``<patient>/intimate/``
  need consent with ``intimate`` allowed and a user in ``intimate_group``;
  ``intimate_min_age`` refuses them outright below that age when the consent
  record has a date of birth.

Copies and moves (between shares, and within one: gateway/dav/placement.py) are
judged here too, with what the image already is: its patient (it goes only
into that patient's folder), its hold (kept, never started anew), and
whether it is intimate where it is stored (``holds_intimate``): an
intimate image leaves intimate folders only for a place only
``intimate_group`` may read.

The consent check costs one indexed query per PUT.  Every refusal has its own
code and is audited with the reason.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.clock import Duration
from gateway.errors import Conflict, Forbidden
from gateway.patients import PatientScheme, scheme_problem
from gateway.pipeline import BaseStage, IntimateDestinationNotRestricted, PutContext
from gateway.records.consent import ConsentService, ConsentView
from gateway.services import Services


class ConsentMissing(Forbidden):
    code = "consent-missing"
    message = "No recorded consent covers this image here."


class NotInPatientFolder(Conflict):
    code = "not-in-patient-folder"
    message = "Images in this share belong in a patient folder: /<patient id>/<file>."


class WrongPatientFolder(Conflict):
    code = "wrong-patient-folder"
    message = "This image belongs to another patient; it cannot be stored in this patient's folder."


class PatientIdInPath(Forbidden):
    code = "patient-id-in-path"
    message = "Teaching copies must not carry the patient identifier; use a case label instead."


class IntimateAccessDenied(Forbidden):
    code = "intimate-access-denied"
    message = "Intimate images are restricted to the intimate-access group."


class IntimateMinorRefused(Forbidden):
    code = "intimate-minor-refused"
    message = "This share's policy refuses intimate images of patients under the age limit."


class ConsentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    patients: str | None = None
    requires: Literal["record", "share", "teaching"] = "record"
    missing: Literal["reject", "hold"] = "reject"
    hold_window: Duration = Field(dt.timedelta(days=30))
    patient_id_in_path: Literal["required", "forbidden"] = "required"
    intimate_folder: str | None = "intimate"
    intimate_group: str = "intimate-access"
    intimate_min_age: int | None = Field(None, ge=1, le=130)

    @field_validator("patients")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        problem = None if value is None else scheme_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class ConsentCheck(BaseStage):
    name: ClassVar[str] = "consent"
    Options: ClassVar[type[BaseModel]] = ConsentOptions
    # It judges the path and the registry, never the bytes.
    streams: ClassVar[bool] = True
    judges_placement: ClassVar[bool] = True

    def attach(self, services: Services) -> None:
        self._service = ConsentService(services)
        self._clock = services.clock
        self._policy = services.policy

    @property
    def opts(self) -> ConsentOptions:
        return cast(ConsentOptions, self.options)

    def on_put(self, ctx: PutContext) -> None:
        if ctx.placeholder:
            return  # Explorer's 0-byte placeholder is not an image yet
        segments = [s for s in ctx.path.split("/") if s]
        if ctx.legacy:
            self._legacy(ctx, segments)
            return
        patient = self._patient(ctx, segments)
        self._judge(ctx, patient, self._is_intimate(segments, ctx))

    def on_restore(self, ctx: PutContext) -> None:
        """``clindav trash restore``: the consent this share requires, judged now.

        As for a copy, the patient is the one recorded with the file
        (``source_patient_id``) and a missing consent refuses, never holds.
        Nobody is accessing the file, so the intimate group is not asked.
        """
        if ctx.placeholder:
            return
        segments = [s for s in ctx.path.split("/") if s]
        patient = self._patient(ctx, segments)
        self._judge(ctx, patient, self.holds_intimate(ctx.share, ctx.path))

    def _judge(self, ctx: PutContext, patient: str, intimate: bool) -> None:
        """Consent for ``patient`` here: attached, held (uploads only) or refused."""
        view = self._service.covering(patient, self.opts.requires, intimate=intimate)
        ctx.patient_id = patient
        if view is not None:
            self._check_age(view, intimate)
            ctx.consent_id, ctx.held_until = view.record.id, None
            ctx.details["consent"] = view.record.id
            return
        if self.opts.missing == "hold" and (
            ctx.source_patient_id is None or ctx.held_until is not None
        ):
            # Copies are never held, but a held image copied or moved within
            # its share stays held, with its window.
            ctx.held_until = ctx.held_until or self._clock.now() + self.opts.hold_window
            ctx.details["held"] = f"awaiting {self.opts.requires} consent"
            return
        extra = " with intimate images allowed" if intimate else ""
        raise ConsentMissing(
            f"no active {self.opts.requires} consent{extra} for {patient}",
            public=f"No recorded '{self.opts.requires}' consent{extra} for patient {patient}. "
            "Record it (clindav consent add, or the EHR consent manifest), then try again.",
        )

    def _legacy(self, ctx: PutContext, segments: list[str]) -> None:
        """A file imported by ``clindav migrate``: it predates the consent registry.

        No consent is ever attached (not even a record that exists now): the
        share's ``legacy.consent`` policy flags it ``legacy-unverified`` or
        holds it.  Nobody is accessing it, so the intimate-group check does not
        apply; the path keeps it under the intimate rules once stored.
        """
        if self.opts.patients is not None and ctx.legacy_patient_folders:
            if len(segments) < 2:
                raise NotInPatientFolder(f"{ctx.path} is not inside a patient folder")
            ctx.patient_id = PatientScheme(self.opts.patients).check(segments[0])
        legacy = self._policy.share(ctx.share).legacy
        if legacy.consent == "hold":
            ctx.held_until = self._clock.now() + legacy.hold_window
            ctx.details["held"] = f"legacy import awaiting {self.opts.requires} consent"
        else:
            ctx.details["consent"] = "legacy-unverified"

    def _patient(self, ctx: PutContext, segments: list[str]) -> str:
        """Whose image: a copy's or move's source says; else the patient folder."""
        patient = ctx.source_patient_id
        if patient is None:
            if self.opts.patients is None:
                raise ConsentMissing(
                    f"{ctx.path}: upload without a known patient",
                    public="Only copies of recorded clinical images can be put in this share.",
                )
            return self._folder_patient(ctx, segments)
        if self.opts.patient_id_in_path == "forbidden" and any(
            patient in s.replace(" ", "").replace("-", "") for s in segments
        ):
            raise PatientIdInPath(
                f"{ctx.path} names patient {patient}",
                public="Teaching copies must not carry the patient identifier; "
                "name the folder or file with a case label such as case-2026-014.",
            )
        if self.opts.patients is not None and self._folder_patient(ctx, segments) != patient:
            # Filing an image under another patient is a clinical-safety incident.
            raise WrongPatientFolder(f"{ctx.path}: the image is patient {patient}'s")
        return patient

    def _folder_patient(self, ctx: PutContext, segments: list[str]) -> str:
        assert self.opts.patients is not None
        if len(segments) < 2:
            raise NotInPatientFolder(f"{ctx.path} is not inside a patient folder")
        return PatientScheme(self.opts.patients).check(segments[0])

    def _in_intimate_folder(self, segments: list[str]) -> bool:
        folder = self.opts.intimate_folder
        return folder is not None and len(segments) > 2 and segments[1] == folder

    def _is_intimate(self, segments: list[str], ctx: PutContext) -> bool:
        """In an intimate folder, or carried by a copy or move of an intimate image.

        A carried one may leave intimate folders only for a place that only
        ``intimate_group`` may read (by the policy's rules), else it would be
        readable by everyone there.
        """
        in_folder = self._in_intimate_folder(segments)
        if not (in_folder or ctx.intimate):
            return False
        group = self.opts.intimate_group
        principal = ctx.request.principal
        if principal is None or group not in principal.groups:
            raise IntimateAccessDenied(f"{ctx.path}: user not in {group}")
        if not in_folder and not self._policy.readers(ctx.share, ctx.path) <= {group}:
            raise IntimateDestinationNotRestricted(
                f"{ctx.share}:{ctx.path}: an intimate image would be readable beyond {group}",
                public=f"This image is intimate: it can only be stored in an intimate folder or "
                f"where only {group} can see it.",
            )
        ctx.details["intimate"] = True
        return True

    def holds_intimate(self, share: str, path: str) -> bool:
        """Whether an object stored at ``path`` is intimate: in a patient's intimate
        folder, or where only ``intimate_group`` may read it (a carried copy)."""
        segments = [s for s in path.split("/") if s]
        return self._in_intimate_folder(segments) or self._policy.readers(share, path) == {
            self.opts.intimate_group
        }

    def _check_age(self, view: ConsentView, intimate: bool) -> None:
        dob, limit = view.record.date_of_birth, self.opts.intimate_min_age
        if not intimate or limit is None or dob is None:
            return
        today = self._clock.now().date()
        age = today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))
        if age < limit:
            raise IntimateMinorRefused(f"patient aged {age} < {limit}")
