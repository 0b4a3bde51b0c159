"""The running server's own clock-driven work: purging trash that is due,
images held for consent that never came, placeholders whose upload never
came, and anchoring the audit chain.

A daemon thread runs :meth:`gateway.trash.Trash.purge_due`,
:meth:`gateway.consent.ConsentService.expire_held` and
:func:`sweep_placeholders` (0-byte placeholders older than
``trash.placeholder_max_age``) once at start (a server that was down catches
up) and then every ``trash.sweep_interval`` seconds.  A failing sweep is
logged and retried at the next interval; it never stops the server.  With
several gateway processes each sweeps; the purge itself re-checks an item's
state under the audit chain's lock, so an item is purged once.

A second thread writes the audit chain's head (position and MAC) to the log
at start and every ``audit.anchor_interval`` seconds, so it can be anchored
outside the database (log shipping, a syslog server): an attacker who rewrote
the whole database could not also rewrite heads already logged elsewhere.
"""

from __future__ import annotations

import logging
import threading
import uuid

from sqlalchemy import select

from gateway.auth import Principal
from gateway.consent import ConsentService
from gateway.db import StoredObject
from gateway.errors import ClindavError
from gateway.pipeline import RequestInfo
from gateway.services import Services
from gateway.trash import TRASH_PREFIX, Actor, Trash

log = logging.getLogger("clindav.scheduler")
SCHEDULER = Principal("clindav-scheduler", frozenset())
PLACEHOLDER_REASON = "placeholder: upload never completed"


def system_actor(action: str) -> Actor:
    request = RequestInfo(uuid.uuid4().hex[:16], SCHEDULER, "local", "clindav", action)
    return Actor(request, is_admin=True)


def sweep_placeholders(services: Services, actor: Actor) -> list[tuple[str, str]]:
    """Remove 0-byte placeholders older than ``trash.placeholder_max_age``.

    A LOCK on a new name stores a placeholder for the upload that follows
    (gateway/provider.py); when that upload is refused or never comes (davfs2,
    Explorer) nothing else removes it.  It is visible only to its creator and
    admins meanwhile.  Each one is trashed and purged at once, audited, unless
    a real upload replaced it since it was found (checked under the chain lock).
    """
    cutoff = services.clock.now() - services.settings.trash.placeholder_max_age
    stale_row = StoredObject.placeholder.is_(True) & (StoredObject.modified_at <= cutoff)
    with services.sessions() as session:
        stale = session.execute(
            select(StoredObject.share, StoredObject.logical_path).where(
                stale_row, ~StoredObject.logical_path.startswith(TRASH_PREFIX)
            )
        ).all()
    trash, removed = Trash(services, services.clock), []
    for share, path in stale:
        if share not in services.shares:
            continue  # a share no longer configured: nothing to serve it, nothing to sweep
        try:
            trash.discard(services.shares[share], path, actor, PLACEHOLDER_REASON, still=stale_row)
            removed.append((share, path))
        except ClindavError as exc:  # a legal hold keeps this one, or it was replaced; go on
            log.info("placeholder %s:%s not removed: %s", share, path, exc.code)
    return removed


class TrashSweeper(threading.Thread):
    def __init__(self, services: Services, interval: float) -> None:
        super().__init__(name="trash-sweeper", daemon=True)
        self._services = services
        self._trash = Trash(services, services.clock)
        self._consent = ConsentService(services)
        self._interval = interval
        self._stop = threading.Event()

    def run(self) -> None:
        while True:
            try:
                purged = self._trash.purge_due(system_actor("PURGE"))
                if purged:
                    log.info("purged %d trash items whose window ended", len(purged))
                expired = self._consent.expire_held(system_actor("EXPIRE").request)
                if expired:
                    log.info("purged %d held images whose consent never came", len(expired))
                swept = sweep_placeholders(self._services, system_actor("PURGE"))
                if swept:
                    log.info("removed %d placeholders whose upload never came", len(swept))
            except Exception:  # logged and retried: a sweep must never take the server down
                log.exception("trash sweep failed; retrying in %ss", self._interval)
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop.set()


class AuditAnchor(threading.Thread):
    def __init__(self, services: Services, interval: float) -> None:
        super().__init__(name="audit-anchor", daemon=True)
        self._audit = services.audit
        self._interval = interval
        self._stop = threading.Event()

    def run(self) -> None:
        while True:
            try:
                seq, mac = self._audit.head()
                logging.getLogger("clindav.audit").info("audit chain head: seq=%d mac=%s", seq, mac)
            except Exception:  # a failed anchor is logged and retried, never fatal
                log.exception("could not read the audit chain head")
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop.set()
