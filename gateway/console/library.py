"""What a console user may see: images and held images, found through the services.

Visibility is WebDAV's, decided by the same code: the policy's ``read`` for
the image's path (a ``GET``), and :func:`gateway.dav.provider.private_to`
for images held for consent and upload placeholders (only their uploader and
admins see them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import false, select

from gateway.auth.base import Principal
from gateway.clock import aware
from gateway.dav.crossshare import CopyOrder, DestinationExists, copy_file
from gateway.dav.provider import hidden_from
from gateway.db import StoredObject
from gateway.errors import BadRequest, Forbidden, NotFound, PolicyDenied
from gateway.patients import PatientScheme
from gateway.pipeline import RequestInfo
from gateway.policy import Check, Decision, request_checks
from gateway.records.consent import ConsentService
from gateway.records.patientpaths import share_scheme
from gateway.services import Services
from gateway.storage.backing import split_path


@dataclass(frozen=True)
class ImageEntry:
    """A stored image as a page shows it (from its registry row)."""

    file_id: str
    share: str
    path: str
    patient: str | None
    uploader: str
    created: dt.datetime
    held_until: dt.datetime | None
    content_type: str
    size: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_picture(self) -> bool:
        """A still image (the console draws it); otherwise a video or a document."""
        return self.content_type.startswith("image/")

    @classmethod
    def of(cls, row: StoredObject) -> ImageEntry:
        return cls(
            file_id=row.file_id,
            share=row.share,
            path=row.logical_path,
            patient=row.patient_id,
            uploader=row.uploader,
            created=aware(row.created_at),
            held_until=aware(row.held_until) if row.held_until else None,
            content_type=row.content_type,
            size=row.size,
        )


class Readers:
    """``read`` decisions for one user, one decider per share (a page lists many paths)."""

    def __init__(self, services: Services, who: Principal) -> None:
        self.services = services
        self.who = who
        self._deciders: dict[str, Callable[[str], Decision]] = {}

    def may_read(self, share: str, path: str) -> bool:
        decide = self._deciders.get(share)
        if decide is None:
            decide = self.services.policy.decider(self.who, share, "GET", "read")
            self._deciders[share] = decide
        return decide(path).allowed

    def readable(self, rows: Iterable[StoredObject]) -> list[ImageEntry]:
        return [ImageEntry.of(r) for r in rows if self.may_read(r.share, r.logical_path)]


def held_images(services: Services, who: Principal) -> list[ImageEntry]:
    """Held images this user may see: their own uploads (admins: all), soonest purge first."""
    hidden = hidden_from(services.policy, who)
    rows = ConsentService(services).pending(*(() if hidden is None else (~hidden,)))
    return Readers(services, who).readable(rows)


class PrivateImage(Forbidden):
    code = "private-image"
    message = "This image waits for consent: only its uploader and administrators may see it."


def lookup(services: Services, who: Principal, file_id: str) -> tuple[ImageEntry, bool]:
    """The stored image with this file id, and whether it is private to someone else.

    Trashed images are not found (their rows live under ``@trash/``).
    """
    hidden = hidden_from(services.policy, who)
    flag = (hidden if hidden is not None else false()).label("hidden")
    with services.sessions() as session:
        found = session.execute(
            select(StoredObject, flag).where(
                StoredObject.file_id == file_id,
                ~StoredObject.logical_path.startswith("@trash/"),
            )
        ).first()
    if found is None:
        raise NotFound(f"no stored image {file_id}")
    return ImageEntry.of(found[0]), bool(found[1])


def require_readable(services: Services, who: Principal, image: ImageEntry, private: bool) -> None:
    """Refuse as WebDAV's GET would: a share not mounted (503), the policy (403), and
    another user's held image (403 here: the console addresses images by file id,
    which tells a stranger nothing, where WebDAV answers 404 for the name)."""
    watch = services.markers.get(image.share)
    if watch is not None:
        watch.check()
    decision = services.policy.decide(who, Check(image.share, image.path, "GET", "read"))
    if not decision.allowed:
        raise PolicyDenied(f"rule {decision.rule} denies {image.share}:{image.path}")
    if private:
        raise PrivateImage(f"{image.share}:{image.path} is held for {image.uploader}")


def open_plaintext(services: Services, image: ImageEntry) -> BinaryIO:
    """The verified plaintext of a stored image (the share's content codec), as WebDAV's GET."""
    share = services.shares[image.share]
    return share.content.open(share.store.locate(split_path(image.path)), image.file_id)


def patient_scheme(services: Services) -> PatientScheme:
    """How the console reads a patient id: the scheme of the first share with patient
    folders (the default policy's ``clinical``: ``nhs-number``), as ``consent add``'s default."""
    for share in services.shares:
        scheme = share_scheme(services.policy, share)
        if scheme is not None:
            return scheme
    return PatientScheme("nhs-number")


def patient_images(services: Services, who: Principal, patient: str) -> list[ImageEntry]:
    """The patient's stored files this user may see, in every share (copies too)."""
    hidden = hidden_from(services.policy, who)
    where = [
        StoredObject.patient_id == patient,
        ~StoredObject.logical_path.startswith("@trash/"),
        ~StoredObject.placeholder,
    ]
    with services.sessions() as session:
        rows = session.scalars(
            select(StoredObject)
            .where(*where, *(() if hidden is None else (~hidden,)))
            .order_by(StoredObject.share, StoredObject.logical_path)
        ).all()
    return Readers(services, who).readable(rows)


def held_count(services: Services, patient: str) -> int:
    """How many of the patient's images are held (whoever uploaded them)."""
    return len(ConsentService(services).pending(StoredObject.patient_id == patient))


def copy_targets(services: Services, image: ImageEntry) -> list[str]:
    """Shares an image may be copied into from the console: those that need ``share``
    or ``teaching`` consent (referrals, teaching), other than its own."""
    return [
        name
        for name in services.shares
        if name != image.share and services.policy.required_scope(name) in ("share", "teaching")
    ]


def copy_to_share(
    services: Services,
    request: RequestInfo,
    lock_manager: Any,
    image: ImageEntry,
    target: tuple[str, str],
) -> str:
    """Copy ``image`` to ``target`` (share, name) with WebDAV COPY's checks; the path there.

    The gate's checks (gateway/policy.py ``request_checks``: ``read`` here,
    ``write`` there; the share mounted), then the copy between shares
    (gateway/dav/crossshare.py): the destination's pipeline (consent scope,
    no patient id in a teaching path, scrubbing), its own key, the ``COPY``
    event.  An existing name there is never replaced.
    """
    share, name = target
    if share not in copy_targets(services, image):
        raise BadRequest(f"copy to {share!r}", public="Choose where to copy the image.")
    if not name.strip():
        raise BadRequest("copy without a name", public="Give the copy a name.")
    path = "/" + "/".join(split_path(name.strip()))
    assert request.principal is not None
    for check in request_checks("COPY", image.share, image.path, (share, path)):
        decision = services.policy.decide(request.principal, check)
        if not decision.allowed:
            raise PolicyDenied(f"rule {decision.rule} denies {check}")
    watch = services.markers.get(share)
    if watch is not None:
        watch.check()
    order = CopyOrder(request, (image.share, image.path), (share, path), overwrite=False)
    try:
        copy_file(services, order, lock_manager)
    except DestinationExists as exc:
        raise DestinationExists(
            exc.detail, public="A file of this name is already there; choose another name."
        ) from None
    return path
