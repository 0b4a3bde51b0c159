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
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from gateway.db import AuditEvent
from gateway.records.audit import CHAINED_FIELDS, AuditLog, iter_events, outcome_class, verify_chain

COLUMNS = (*CHAINED_FIELDS, "mac")
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


def as_row(event: AuditEvent) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in COLUMNS}
    when = row["occurred_at"]
    row["occurred_at"] = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()
    return row


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


def cmd_report(opened: tuple[AuditLog, Any], args: argparse.Namespace, out: TextIO) -> int:
    _audit, sessions = opened
    # As written on forms: "943 476 5919" is 9434765919 (an MRN keeps its hyphens).
    patient = args.patient.strip()
    if re.fullmatch(r"[\d\s-]+", patient):
        patient = re.sub(r"[\s-]", "", patient)
    events = [
        as_row(e) | {"activity": activity(e)}
        for e in iter_events(sessions, since=args.since, until=args.until, patient=patient)
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
