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

from gateway.auth.base import Principal
from gateway.clock import aware
from gateway.dav.provider import hidden_from
from gateway.db import StoredObject
from gateway.policy import Decision
from gateway.records.consent import ConsentService
from gateway.services import Services


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
