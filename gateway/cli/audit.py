"""``clindav audit``: verify the chain, export events, follow them live, report on a patient.

The output formats live beside each other here.  Every command but ``verify``
reads with database access alone, so an auditor can run them without the key
file (docs/AUDIT.md); ``verify`` takes the chain key from ``--audit-key FILE``
or derives it from the master key on the gateway host.  Export streams
(keyset-paged reads, one row written at a time), so a table of millions of
events needs constant memory.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
import time
from typing import Any

from gateway.cli.context import CommandContext
from gateway.db import AuditEvent
from gateway.records.audit import CHAINED_FIELDS, AuditLog, iter_events, outcome_class, verify_chain
from gateway.storage.keys import load_audit_key_file

COLUMNS = (*CHAINED_FIELDS, "mac")


def as_row(event: AuditEvent) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in COLUMNS}
    when = row["occurred_at"]
    row["occurred_at"] = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()
    return row


def verify(ctx: CommandContext, args: argparse.Namespace) -> int:
    sessions = ctx.sessions
    key = ctx.audit_chain_key() if args.audit_key is None else load_audit_key_file(args.audit_key)
    audit = AuditLog(sessions, key)
    problems = verify_chain(audit, sessions)
    seq, mac = audit.head()
    if not problems:
        print(f"audit chain intact: {seq} events, head {mac}")
        return 0
    for problem in problems:
        print(f"position {problem.position}: {problem.problem}")
    print(
        f"audit chain BROKEN: {len(problems)} problem(s); first at position {problems[0].position}"
    )
    return 1


def export(ctx: CommandContext, args: argparse.Namespace) -> int:
    out = sys.stdout
    events = iter_events(
        ctx.sessions, since=args.since, until=args.until, patient=args.patient, user=args.user
    )
    if args.format == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for event in events:
            row = as_row(event)
            row["details"] = json.dumps(row["details"], sort_keys=True)
            writer.writerow(row)
    else:
        for event in events:
            out.write(json.dumps(as_row(event), sort_keys=True) + "\n")
    return 0


def tail(ctx: CommandContext, args: argparse.Namespace) -> int:
    out, sessions = sys.stdout, ctx.sessions
    seq, _mac = AuditLog(sessions, None).head()
    after = max(0, seq - args.count)
    while True:  # each poll reads only what is newer than the last event shown
        for event in iter_events(sessions, after=after, refusals=args.refusals or None, batch=500):
            out.write(_line(event) + "\n")
            after = event.seq
        out.flush()
        if not args.follow:
            return 0
        time.sleep(1.0)


def _line(event: AuditEvent) -> str:
    where = f"{event.share}:{event.logical_path}" if event.share else "-"
    reason = f" ({event.reason})" if event.reason else ""
    return (
        f"{as_row(event)['occurred_at']} #{event.seq} {event.actor}@{event.client} "
        f"{event.action} {where} -> {event.status} {event.code}{reason}"
    )


# --- the per-patient access report ------------------------------------------

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
}


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


def report(ctx: CommandContext, args: argparse.Namespace) -> int:
    out = sys.stdout
    # As written on forms: "943 476 5919" is 9434765919 (an MRN keeps its hyphens).
    patient = args.patient.strip()
    if re.fullmatch(r"[\d\s-]+", patient):
        patient = re.sub(r"[\s-]", "", patient)
    events = [
        as_row(e) | {"activity": activity(e)}
        for e in iter_events(ctx.sessions, since=args.since, until=args.until, patient=patient)
    ]
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in events:
        groups.setdefault(row["actor"], {}).setdefault(row["activity"], []).append(row)
    if args.json:
        summary = {
            actor: {name: _group(rows) for name, rows in by_activity.items()}
            for actor, by_activity in groups.items()
        }
        out.write(json.dumps({"patient": patient, "by_person": summary, "events": events}) + "\n")
        return 0
    if not events:
        out.write(f"No audit events for patient {patient}.\n")
        return 0
    out.write(
        f"Access report for patient {patient}: {len(events)} events, "
        f"{_short(events[0]['occurred_at'])} to {_short(events[-1]['occurred_at'])} UTC\n"
    )
    for actor in sorted(groups):
        out.write(f"\n{actor}\n")
        for name, rows in sorted(groups[actor].items(), key=lambda item: item[1][0]["seq"]):
            group = _group(rows)
            first, last = _short(group["first"]), _short(group["last"])
            when = (
                f"once, {first}"
                if group["count"] == 1
                else f"{group['count']} times, {first} to {last}"
            )
            out.write(f"  {name}: {when}\n    {', '.join(group['where'])}\n")
    out.write("\nEvery event, in order (UTC):\n")
    for row in events:
        out.write(
            f"  {_short(row['occurred_at'])} #{row['seq']} {row['actor']}@{row['client']} "
            f"{row['activity']} {_where(row)} -> {row['status']} {row['code']}\n"
        )
    return 0


def _short(iso: str) -> str:
    """``2026-03-02 10:14:07`` from an ISO time in UTC."""
    return iso[:19].replace("T", " ")


def _where(row: dict[str, Any]) -> str:
    """The path an event touched; a copy between shares also names its source."""
    where = f"{row['share']}:{row['logical_path']}" if row["share"] else "-"
    source = row["details"].get("from") if isinstance(row["details"], dict) else None
    return f"{where} (from {source})" if source else where


def _group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    where = dict.fromkeys(_where(r) for r in rows if r["share"])
    return {
        "count": len(rows),
        "first": rows[0]["occurred_at"],
        "last": rows[-1]["occurred_at"],
        "where": list(where) or ["-"],
    }
