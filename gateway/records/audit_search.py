"""Reading the audit trail for people: searches in pages, and the per-patient report.

Both doors use these: ``clindav audit report`` and the console's audit pages
(search, patient report).  Reading needs database access alone, never the
chain key (docs/AUDIT.md, "Separation of duties").

* :func:`search` - events matching an :class:`AuditQuery` (user, patient,
  path, time range, outcome, status or code), newest first, one page at a
  time by ``seq`` (keyset paging: a page costs the same at any depth).
* :func:`patient_report` - every event recorded for one patient, in chain
  order, grouped by person and activity: "who saw this patient's photos?".
* :func:`activity` - what an event did, in the words of a subject access
  request (``read``, ``uploaded``, ``refused GET (policy-denied)``...).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from gateway.db import AuditEvent, starts_with
from gateway.errors import BadRequest
from gateway.records.audit import CHAINED_FIELDS, OUTCOMES, iter_events, outcome_class, outcome_is

COLUMNS = (*CHAINED_FIELDS, "mac")
PAGE_SIZE = 50

# What an event did, in the words of a subject access request or a Caldicott
# review; anything not listed is shown by its action name.
ACTIVITIES = {
    "GET": "read",
    "HEAD": "checked",
    "PROPFIND": "listed",
    "PUT": "uploaded",
    "MKCOL": "created folder",
    "COPY": "copied",
    "MOVE": "moved",
    "DELETE": "deleted (to trash)",
    "RESTORE": "restored from trash",
    "PURGE": "purged",
    "PROPPATCH": "changed properties",
    "LOCK": "locked",
    "UNLOCK": "unlocked",
    "CONSENT-ADD": "recorded consent",
    "CONSENT-WITHDRAW": "withdrew consent",
    "MIGRATE": "migrated",
    "LOGIN": "signed in",
    "HOLD": "placed a legal hold",
    "RELEASE": "released a legal hold",
    "VIEW": "viewed in the console",
    "AUDIT-SEARCH": "searched the audit trail",
    "AUDIT-REPORT": "read the access report",
}


class InvalidSearch(BadRequest):
    code = "invalid-search"
    message = "The search is not valid; check the dates, the outcome and the status."


def as_row(event: AuditEvent) -> dict[str, Any]:
    """Every stored field of an event, its time as ISO 8601 in UTC."""
    row = {name: getattr(event, name) for name in COLUMNS}
    when = row["occurred_at"]
    row["occurred_at"] = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()
    return row


def normalise_patient(text: str) -> str:
    """A patient id as written on forms: ``943 476 5919`` is 9434765919 (an MRN with
    letters keeps its hyphens)."""
    patient = text.strip()
    if re.fullmatch(r"[\d\s-]+", patient):
        patient = re.sub(r"[\s-]", "", patient)
    return patient


def activity(event: AuditEvent) -> str:
    """What an event did, for people: ``uploaded``, ``refused GET (policy-denied)``..."""
    kind = outcome_class(event.status, event.code)
    if kind == "refusal":
        return f"refused {event.action} ({event.code})"
    if kind == "miss":
        return f"{event.action} answered {event.status} ({event.code})"
    if event.code == "consent-manifest":
        return "sent a consent manifest"
    return ACTIVITIES.get(event.action, event.action.lower())


def day_start(text: str, *, after: bool = False) -> dt.datetime | None:
    """The UTC start of the ISO date ``text`` (of the day after it: an inclusive end)."""
    if not text.strip():
        return None
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidSearch(
            f"bad date {text!r}", public=f"Not an ISO date (YYYY-MM-DD): {text.strip()!r}."
        ) from None
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start + dt.timedelta(days=1) if after else start


@dataclass(frozen=True)
class AuditQuery:
    """What to look for; every field empty matches every event."""

    user: str = ""
    patient: str = ""
    share: str = ""
    path: str = ""  # at or below this logical path of ``share``
    since: dt.datetime | None = None  # inclusive
    until: dt.datetime | None = None  # exclusive
    outcome: str = ""  # success, miss or refusal
    status: str = ""  # an HTTP status (403) or an error code (policy-denied)

    def __post_init__(self) -> None:
        if self.outcome and self.outcome not in OUTCOMES:
            raise InvalidSearch(
                f"outcome {self.outcome!r}",
                public=f"The outcome is one of {', '.join(OUTCOMES)}, not {self.outcome!r}.",
            )
        if self.since and self.until and self.until <= self.since:
            raise InvalidSearch(
                "empty range", public="The end of the date range comes before its start."
            )

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.user:
            found.append(AuditEvent.actor == self.user)
        if self.patient:
            found.append(AuditEvent.patient_id == normalise_patient(self.patient))
        if self.share:
            found.append(AuditEvent.share == self.share)
        if self.path:
            below = self.path.rstrip("/") + "/"
            found.append(
                (AuditEvent.logical_path == self.path) | starts_with(AuditEvent.logical_path, below)
            )
        if self.since:
            found.append(AuditEvent.occurred_at >= self.since)
        if self.until:
            found.append(AuditEvent.occurred_at < self.until)
        if self.outcome:
            found.append(outcome_is(self.outcome))
        if self.status:
            status = self.status.strip()
            found.append(
                AuditEvent.status == int(status) if status.isdigit() else AuditEvent.code == status
            )
        return found


@dataclass(frozen=True)
class Page:
    """One page of a search, newest first; the ``seq`` bounds to ask for the next pages."""

    events: list[AuditEvent]
    older: int | None  # more events before this page: ask with before=older
    newer: int | None  # more events after this page: ask with after=newer


def search(
    sessions: sessionmaker,
    query: AuditQuery,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """A page of events matching ``query``: the newest, or those just ``before`` or
    ``after`` a ``seq`` (the bounds of the page a reader saw)."""
    statement = select(AuditEvent).where(*query.conditions())
    if after is not None:
        statement = statement.where(AuditEvent.seq > after).order_by(AuditEvent.seq)
    else:
        if before is not None:
            statement = statement.where(AuditEvent.seq < before)
        statement = statement.order_by(AuditEvent.seq.desc())
    with sessions() as session:
        rows = list(session.scalars(statement.limit(limit + 1)))
        session.expunge_all()
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return Page([], None, None)
    if after is not None:  # read oldest first; a page shows the newest first
        rows.reverse()
        return Page(rows, older=rows[-1].seq, newer=rows[0].seq if more else None)
    return Page(
        rows,
        older=rows[-1].seq if more else None,
        newer=rows[0].seq if before is not None else None,
    )


@dataclass
class Activity:
    """One person's one kind of access to the patient's records."""

    name: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def where(self) -> list[str]:
        found = dict.fromkeys(where(row) for row in self.events if row["share"])
        return list(found) or ["-"]

    def summary(self) -> dict[str, Any]:
        return {
            "count": len(self.events),
            "first": self.events[0]["occurred_at"],
            "last": self.events[-1]["occurred_at"],
            "where": self.where,
        }


@dataclass
class PatientReport:
    patient: str
    events: list[dict[str, Any]]  # as_row() plus "activity", in chain order
    by_person: dict[str, list[Activity]]  # person -> activities, in order of first event


def patient_report(
    sessions: sessionmaker,
    patient: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> PatientReport:
    """Every event recorded for ``patient`` (uploads, reads, listings of their folder,
    copies under case labels, deletes, consent, holds, console views), grouped."""
    patient = normalise_patient(patient)
    events = [
        as_row(e) | {"activity": activity(e)}
        for e in iter_events(sessions, since=since, until=until, patient=patient)
    ]
    groups: dict[str, dict[str, Activity]] = {}
    for row in events:
        person = groups.setdefault(row["actor"], {})
        person.setdefault(row["activity"], Activity(row["activity"])).events.append(row)
    by_person = {actor: list(groups[actor].values()) for actor in sorted(groups)}
    return PatientReport(patient, events, by_person)


def where(row: dict[str, Any]) -> str:
    """The path an event touched; a copy between shares also names its source."""
    place = f"{row['share']}:{row['logical_path']}" if row["share"] else "-"
    source = row["details"].get("from") if isinstance(row["details"], dict) else None
    return f"{place} (from {source})" if source else place
