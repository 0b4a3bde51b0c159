"""The running server's own clock-driven work: purging trash that is due,
images held for consent that never came, placeholders whose upload never
came, and anchoring the audit chain.

A daemon thread runs :meth:`gateway.records.trash.Trash.purge_due`,
:meth:`gateway.records.consent.ConsentService.expire_held`,
:func:`sweep_placeholders` (0-byte placeholders older than
``trash.placeholder_max_age``) and the Nextcloud apps' abandoned chunked
uploads (:meth:`gateway.nextcloud.chunks.ChunkStore.sweep`) once at start
(a server that was down catches up) and then every ``trash.sweep_interval``
seconds.  A failing sweep is
logged and retried at the next interval; it never stops the server.  With
several gateway processes each sweeps; the purge itself re-checks an item's
state under the audit chain's lock, so an item is purged once.

A clock that jumps forward (a mistyped date, a restored virtual machine)
must not purge everything at once: a sweep runs its purges only when the
clock moved forward by at most ``trash.max_clock_jump`` since the last sweep.
Otherwise it logs and audits the refusal (``SWEEP``, ``clock-jump``) and
purges nothing until an administrator confirms the time with ``clindav trash
purge --due``.  The last sweep is remembered in the audit trail: a ``SWEEP``
event with code ``swept`` and the clock's reading in its details, written by
the sweeper at most hourly (:data:`RECORD_EVERY`) while anything is in the
trash or held (only then can a jump purge something early), and by every
``trash purge --due``; this process's own last sweep counts too.  A gateway
stopped for longer than the bound therefore also waits for that confirmation.

A second thread writes the audit chain's head (position and MAC) to the log
at start and every ``audit.anchor_interval`` seconds, so it can be anchored
outside the database (log shipping, a syslog server): an attacker who rewrote
the whole database could not also rewrite heads already logged elsewhere.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import select

from gateway.auth.base import Principal
from gateway.db import AuditEvent, StoredObject, TrashItem
from gateway.errors import ClindavError
from gateway.pipeline import RequestInfo, new_request_id
from gateway.records.consent import ConsentService
from gateway.records.trash import TRASH_PREFIX, Actor
from gateway.services import Services

log = logging.getLogger("clindav.scheduler")
SCHEDULER = Principal("clindav-scheduler", frozenset())
PLACEHOLDER_REASON = "placeholder: upload never completed"
SWEEP = "SWEEP"
# The sweeper writes its clock reading to the audit trail at most this often.
RECORD_EVERY = dt.timedelta(hours=1)


def system_actor(action: str) -> Actor:
    request = RequestInfo(new_request_id(), SCHEDULER, "local", "clindav", action)
    return Actor(request, is_admin=True)


def sweep_placeholders(services: Services, actor: Actor) -> list[tuple[str, str]]:
    """Remove 0-byte placeholders older than ``trash.placeholder_max_age``.

    A LOCK on a new name stores a placeholder for the upload that follows
    (gateway/dav/provider.py); when that upload is refused or never comes (davfs2,
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
    trash, removed = services.trash, []
    for share, path in stale:
        if share not in services.shares:
            continue  # a share no longer configured: nothing to serve it, nothing to sweep
        try:
            trash.discard(services.shares[share], path, actor, PLACEHOLDER_REASON, still=stale_row)
            removed.append((share, path))
        except ClindavError as exc:  # a legal hold keeps this one, or it was replaced; go on
            log.info("placeholder %s:%s not removed: %s", share, path, exc.code)
    return removed


def last_sweep(services: Services) -> dt.datetime | None:
    """The clock's reading at the newest sweep the audit trail remembers (None: never)."""
    with services.sessions() as session:
        details = session.scalar(
            select(AuditEvent.details)
            .where(AuditEvent.action == SWEEP, AuditEvent.code == "swept")
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
    return dt.datetime.fromisoformat(details["clock"]) if details else None


def record_sweep(services: Services, actor: Actor, now: dt.datetime, **details: object) -> None:
    """Remember a sweep (or an administrator's confirmation) at ``now`` in the audit trail."""
    services.audit.record(
        actor.request,
        action=SWEEP,
        share=None,
        path=None,
        status=200,
        code="swept",
        details={"clock": now.isoformat(), **details},
    )


def clock_jump(
    services: Services, now: dt.datetime, *sweeps: dt.datetime | None
) -> tuple[dt.datetime, dt.timedelta] | None:
    """(last sweep, advance) when the clock moved forward by more than the bound since
    the newest of ``sweeps`` (None: unknown)."""
    last = max((t for t in sweeps if t is not None), default=None)
    if last is None or now - last <= services.settings.trash.max_clock_jump:
        return None
    return last, now - last


class TrashSweeper(threading.Thread):
    def __init__(self, services: Services, interval: float) -> None:
        super().__init__(name="trash-sweeper", daemon=True)
        self._services = services
        self._trash = services.trash
        self._consent = ConsentService(services)
        self._interval = interval
        self._stopping = threading.Event()  # (not `_stop`: Thread.join calls its own `_stop`)
        self._last: dt.datetime | None = None  # this process's last sweep that ran its purges
        self._refused: dt.datetime | None = None  # the last sweep a refusal was audited for

    def run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:  # logged and retried: a sweep must never take the server down
                log.exception("trash sweep failed; retrying in %ss", self._interval)
            if self._stopping.wait(self._interval):
                return

    def sweep(self) -> None:
        now = self._services.clock.now()
        # With nothing in the trash or held, a jump can purge nothing early: no
        # check, and no event (an idle gateway does not fill the audit trail).
        at_stake = self._at_stake()
        remembered = last_sweep(self._services)
        if at_stake:
            jump = clock_jump(self._services, now, remembered, self._last)
            if jump is not None:
                self._refuse(now, *jump)
                return
        purged = self._trash.purge_due(system_actor("PURGE"))
        if purged:
            log.info("purged %d trash items whose window ended", len(purged))
        expired = self._consent.expire_held(system_actor("EXPIRE").request)
        if expired:
            log.info("purged %d held images whose consent never came", len(expired))
        swept = sweep_placeholders(self._services, system_actor("PURGE"))
        if swept:
            log.info("removed %d placeholders whose upload never came", len(swept))
        if self._services.settings.nextcloud.enabled:
            abandoned = self._services.chunks.sweep()
            if abandoned:
                log.info("removed %d chunked uploads abandoned by the apps", abandoned)
        if at_stake and (remembered is None or now - remembered >= RECORD_EVERY):
            record_sweep(self._services, system_actor(SWEEP), now)
        self._last = now

    def _at_stake(self) -> bool:
        """Whether anything waits to be purged: a trashed item or a held image."""
        with self._services.sessions() as session:
            trashed = session.scalar(
                select(TrashItem.id).where(TrashItem.state == "trashed").limit(1)
            )
            held = session.scalar(
                select(StoredObject.id).where(StoredObject.held_until.is_not(None)).limit(1)
            )
        return trashed is not None or held is not None

    def _refuse(self, now: dt.datetime, last: dt.datetime, advance: dt.timedelta) -> None:
        reason = (
            f"the clock moved forward by {advance} since the last sweep at "
            f"{last.isoformat()} (trash.max_clock_jump "
            f"{self._services.settings.trash.max_clock_jump}); nothing is purged until an "
            "administrator confirms the time with clindav trash purge --due"
        )
        log.error("trash sweep refused: %s", reason)
        if self._refused == last:
            return  # audited once per jump, logged at every sweep
        self._services.audit.record(
            system_actor(SWEEP).request,
            action=SWEEP,
            share=None,
            path=None,
            status=409,
            code="clock-jump",
            reason=reason,
            details={"clock": now.isoformat(), "last_sweep": last.isoformat()},
        )
        self._refused = last

    def stop(self) -> None:
        self._stopping.set()


class AuditAnchor(threading.Thread):
    def __init__(self, services: Services, interval: float) -> None:
        super().__init__(name="audit-anchor", daemon=True)
        self._audit = services.audit
        self._interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        while True:
            try:
                seq, mac = self._audit.head()
                logging.getLogger("clindav.audit").info("audit chain head: seq=%d mac=%s", seq, mac)
            except Exception:  # a failed anchor is logged and retried, never fatal
                log.exception("could not read the audit chain head")
            if self._stopping.wait(self._interval):
                return

    def stop(self) -> None:
        self._stopping.set()
