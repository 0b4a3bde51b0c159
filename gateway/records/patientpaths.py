"""Which patient a path in a share concerns.

Two users of the same answer: MKCOL refuses a patient folder whose name is
not a valid identifier of the share's scheme (a folder named ``John Smith``
or a mistyped NHS number would collect images nobody can find again), and
the audit trail records the patient of every event that touches a patient's
object, so ``clindav audit report --patient`` is complete.

A share has patient folders when its ``consent`` stage names a ``patients``
scheme (docs/CONSENT.md); there the first segment of a path is the patient.
Elsewhere (referral and teaching copies, named by case label) the registry
row of the object remembers its patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db import StoredObject
from gateway.patients import PatientScheme

if TYPE_CHECKING:
    from gateway.policy import Policy
    from gateway.services import Services


def share_scheme(policy: Policy, share: str) -> PatientScheme | None:
    """The patient-id scheme of a share with patient folders (None otherwise)."""
    stage = policy.pipeline(share).find("consent")
    spec = getattr(stage.options, "patients", None) if stage is not None else None
    return PatientScheme(spec) if spec else None


def check_patient_folder(policy: Policy, share: str, path: str) -> None:
    """InvalidPatientId when ``path`` would be a new top-level folder with a bad id."""
    segments = [s for s in path.split("/") if s]
    scheme = share_scheme(policy, share)
    if scheme is not None and len(segments) == 1:
        scheme.check(segments[0])


def folder_patient(policy: Policy, share: str, path: str) -> str | None:
    """The patient whose folder ``path`` is in, when the share has patient folders."""
    segments = [s for s in path.split("/") if s]
    scheme = share_scheme(policy, share)
    if scheme is None or not segments or scheme.problem(segments[0]) is not None:
        return None
    return segments[0]


def patient_of(
    services: Services,
    share: str | None,
    path: str | None,
    session: Session | None = None,
    *,
    rows_at: Sequence[str] = (),
) -> str | None:
    """The patient an event at ``share:path`` concerns: its folder's, else its object's.

    The registry lookup (one indexed query) is only made in shares that check
    consent but have no patient folders (referral and teaching copies, whose
    names need not or must not name the patient).  ``rows_at``: other paths
    the object's registry row may be under (a trashed item's ``@trash/<id>/...``).
    """
    if share is None or path is None or share not in services.shares:
        return None
    patient = folder_patient(services.policy, share, path)
    if patient is not None or share_scheme(services.policy, share) is not None:
        return patient
    if services.policy.pipeline(share).find("consent") is None:
        return None  # nothing in this share belongs to a patient
    logical = "/" + "/".join(s for s in path.split("/") if s)
    query = select(StoredObject.patient_id).where(
        StoredObject.share == share,
        StoredObject.logical_path.in_([logical, *rows_at]),
        StoredObject.patient_id.is_not(None),
    )
    if session is not None:
        return session.scalars(query).first()
    with services.sessions() as own:
        return own.scalars(query).first()
