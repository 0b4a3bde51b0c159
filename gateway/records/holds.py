"""Legal holds: placed and released by admins; nothing held is deleted or purged.

What a hold stops is :class:`~gateway.records.trash.Trash`'s to enforce
(deletion, purge, a MOVE out of the held path); this module keeps the list.
Both doors use it: ``clindav hold add|remove|list`` and the console's holds
page.  Paths are given as URL paths, share first: ``/clinical/9434765919``.

Contract: :meth:`LegalHolds.add` and :meth:`LegalHolds.remove` change the
``legal_hold`` table and append their audit event (``HOLD`` / ``RELEASE``,
with the patient of a patient folder) in one transaction; a refusal is a
:class:`~gateway.errors.ClindavError` and changes nothing:
``reason-required`` (every hold and release names why), ``not-found`` (no
share holds the path, or nothing exists there nor in its trash),
``hold-exists``, ``hold-not-found``.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.db import LegalHold, TrashItem, starts_with
from gateway.errors import Conflict, NotFound
from gateway.pipeline import RequestInfo
from gateway.records.patientpaths import folder_patient
from gateway.records.trash import ReasonRequired
from gateway.services import Services
from gateway.storage.backing import split_path


class HoldExists(Conflict):
    code = "hold-exists"
    message = "That path is already under a legal hold."


class HoldNotFound(NotFound):
    code = "hold-not-found"
    message = "There is no legal hold on that path."


def split_share_path(services: Services, path: str) -> tuple[str, str]:
    """``/clinical/9434765919`` -> (``clinical``, ``/9434765919``): the share by its URL."""
    parts = [p for p in path.split("/") if p]
    for name, share in services.shares.items():
        if parts and "/" + parts[0] == share.url:
            return name, "/" + "/".join(split_path("/" + "/".join(parts[1:])))
    raise NotFound(f"no share for {path}", public=f"No share holds {path!r}.")


class LegalHolds:
    def __init__(self, services: Services) -> None:
        self.services = services

    def list(self) -> list[LegalHold]:
        """Every hold, oldest first."""
        with self.services.sessions() as session:
            return list(session.scalars(select(LegalHold).order_by(LegalHold.held_at)))

    def add(self, request: RequestInfo, url_path: str, reason: str) -> None:
        """Hold ``url_path`` (and everything below it), e.g. ``/clinical/9434765919``."""
        _require_reason(reason, "placing")
        share, path = split_share_path(self.services, url_path)
        self._require_content(share, path, url_path)
        held_by = request.principal.uid if request.principal else "-"

        def hold(session: Session) -> None:
            held = session.scalar(
                select(LegalHold).where(LegalHold.share == share, LegalHold.logical_path == path)
            )
            if held is not None:
                raise HoldExists(
                    f"{share}:{path} held since {held.held_at}",
                    public=f"{url_path} is already under a legal hold "
                    f"(by {held.held_by}: {held.reason}).",
                )
            session.add(LegalHold(share=share, logical_path=path, reason=reason, held_by=held_by))

        self._change(request, "HOLD", share, path, reason, hold)

    def remove(self, request: RequestInfo, url_path: str, reason: str) -> None:
        """Release the hold on exactly ``url_path``."""
        _require_reason(reason, "releasing")
        share, path = split_share_path(self.services, url_path)

        def release(session: Session) -> None:
            gone = session.execute(
                delete(LegalHold).where(LegalHold.share == share, LegalHold.logical_path == path)
            )
            if not getattr(gone, "rowcount", 0):  # nothing is audited then: the transaction ends
                raise HoldNotFound(
                    f"no hold on {share}:{path}",
                    public=f"There is no legal hold on {url_path} (clindav hold list).",
                )

        self._change(request, "RELEASE", share, path, reason, release)

    def _require_content(self, share: str, path: str, shown: str) -> None:
        """A hold is for something that exists: in the share, or in its trash (to stop a purge)."""
        runtime = self.services.shares[share]
        segments = split_path(path)
        if runtime.store.lstat(runtime.store.locate(segments)) is not None:
            return
        above = ["/" + "/".join(segments[:n]) for n in range(1, len(segments))]
        trashed = (TrashItem.logical_path == path) | starts_with(
            TrashItem.logical_path, path.rstrip("/") + "/"
        )
        with self.services.sessions() as session:
            found = session.scalar(
                select(TrashItem.id).where(
                    TrashItem.share == share,
                    TrashItem.state == "trashed",
                    trashed | TrashItem.logical_path.in_(above),
                )
            )
        if found is None:
            raise NotFound(
                f"nothing at {share}:{path}",
                public=f"Nothing exists at {shown}, in the share or in its trash; check the path.",
            )

    def _change(
        self,
        request: RequestInfo,
        action: str,
        share: str,
        path: str,
        reason: str,
        change: Callable[[Session], None],
    ) -> None:
        services = self.services
        with services.sessions.begin() as session:
            services.audit.lock_head(session)
            change(session)
            event = services.audit.event(
                request,
                action=action,
                share=share,
                path=path,
                status=200,
                code=action.lower(),
                reason=reason,
                # A hold on a patient's folder or file belongs in their access report.
                patient_id=folder_patient(services.policy, share, path),
            )
            services.audit.append(session, event)


def _require_reason(reason: str, doing: str) -> None:
    if not reason.strip():
        raise ReasonRequired(
            f"{doing} a legal hold without a reason",
            public=f"{doing.capitalize()} a legal hold needs a reason; it is recorded "
            "in the audit trail.",
        )
