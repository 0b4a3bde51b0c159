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
import json
import sys
import time

from gateway.cli.context import CommandContext
from gateway.db import AuditEvent
from gateway.records.audit import AuditLog, iter_events, verify_chain
from gateway.records.audit_search import COLUMNS, as_row, patient_report, where
from gateway.storage.keys import load_audit_key_file


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


def report(ctx: CommandContext, args: argparse.Namespace) -> int:
    out = sys.stdout
    found = patient_report(ctx.sessions, args.patient, args.since, args.until)
    patient, events = found.patient, found.events
    if args.json:
        summary = {
            actor: {group.name: group.summary() for group in activities}
            for actor, activities in found.by_person.items()
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
    for actor, activities in found.by_person.items():
        out.write(f"\n{actor}\n")
        for group in activities:
            seen = group.summary()
            first, last = _short(seen["first"]), _short(seen["last"])
            when = (
                f"once, {first}"
                if seen["count"] == 1
                else f"{seen['count']} times, {first} to {last}"
            )
            out.write(f"  {group.name}: {when}\n    {', '.join(seen['where'])}\n")
    out.write("\nEvery event, in order (UTC):\n")
    for row in events:
        out.write(
            f"  {_short(row['occurred_at'])} #{row['seq']} {row['actor']}@{row['client']} "
            f"{row['activity']} {where(row)} -> {row['status']} {row['code']}\n"
        )
    return 0


def _short(iso: str) -> str:
    """``2026-03-02 10:14:07`` from an ISO time in UTC."""
    return iso[:19].replace("T", " ")
