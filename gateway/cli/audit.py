"""``clindav audit``: verify the chain, export events, follow refusals live.

Kept apart from gateway/cli/main.py so the audit commands and their output formats
live beside each other.  Export streams (keyset-paged reads, one row written
at a time), so a table of millions of events needs constant memory.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from gateway.db import AuditEvent
from gateway.records.audit import AuditLog, iter_events, verify_chain
from gateway.records.audit_search import COLUMNS, as_row, patient_report, where

Open = Callable[[argparse.Namespace], tuple[AuditLog, Any]]


def add_audit_commands(
    sub: argparse._SubParsersAction, config_arg: Callable[..., None], open_audit: Open
) -> None:
    audit = sub.add_parser("audit", help="verify, export and follow the audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="walk the chain; report the first tampered position")
    verify.add_argument(
        "--audit-key",
        type=Path,
        help="the chain key file from `clindav keys export-audit-key` (default: derive it "
        "from the master key)",
    )
    config_arg(verify)
    # The only audit command that needs a key: the others read with database access alone.
    verify.set_defaults(handler=lambda args: cmd_verify(open_audit(args)), needs_chain_key=True)
    export = actions.add_parser("export", help="write events as JSON lines or CSV to stdout")
    export.add_argument("--since", type=_when, help="ISO date or time (UTC), inclusive")
    export.add_argument("--until", type=_when, help="ISO date or time (UTC), exclusive")
    export.add_argument("--patient", help="only events about this patient id")
    export.add_argument("--user", help="only events by this user")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    config_arg(export)
    export.set_defaults(handler=lambda args: cmd_export(open_audit(args), args, sys.stdout))
    add_report_command(actions, config_arg, open_audit)
    tail = actions.add_parser(
        "tail", help="print new events as they happen (Ctrl-C stops, or --no-follow)"
    )
    tail.add_argument("--refusals", action="store_true", help="only refusals (not misses)")
    tail.add_argument("--count", type=int, default=10, help="events to show first (default 10)")
    tail.add_argument(
        "--no-follow", dest="follow", action="store_false", help="show them, then stop"
    )
    config_arg(tail)
    tail.set_defaults(handler=lambda args: cmd_tail(open_audit(args), args, sys.stdout))


def _when(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def cmd_verify(opened: tuple[AuditLog, Any]) -> int:
    audit, sessions = opened
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


def cmd_export(opened: tuple[AuditLog, Any], args: argparse.Namespace, out: TextIO) -> int:
    _audit, sessions = opened
    events = iter_events(
        sessions, since=args.since, until=args.until, patient=args.patient, user=args.user
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


def cmd_tail(opened: tuple[AuditLog, Any], args: argparse.Namespace, out: TextIO) -> int:
    audit, sessions = opened
    seq, _mac = audit.head()
    after = max(0, seq - args.count)
    while True:
        for event in iter_events(sessions, refusals=args.refusals or None, batch=500):
            if event.seq <= after:
                continue
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


def add_report_command(
    actions: argparse._SubParsersAction, config_arg: Any, open_audit: Open
) -> None:
    report = actions.add_parser(
        "report",
        help="who did what with one patient's images, and when (a readable summary)",
        description="Every audit event recorded for the patient (uploads, reads, listings of "
        "the patient's folder, copies under case labels, deletes, consent), grouped by "
        "person and activity, then in chain order.",
    )
    report.add_argument("--patient", required=True, help="the patient id (spaces allowed)")
    report.add_argument("--since", type=_when, help="ISO date or time (UTC), inclusive")
    report.add_argument("--until", type=_when, help="ISO date or time (UTC), exclusive")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    config_arg(report)
    report.set_defaults(handler=lambda args: cmd_report(open_audit(args), args, sys.stdout))


def cmd_report(opened: tuple[AuditLog, Any], args: argparse.Namespace, out: TextIO) -> int:
    _audit, sessions = opened
    report = patient_report(sessions, args.patient, args.since, args.until)
    patient, events = report.patient, report.events
    if args.json:
        summary = {
            actor: {group.name: group.summary() for group in activities}
            for actor, activities in report.by_person.items()
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
    for actor, activities in report.by_person.items():
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
