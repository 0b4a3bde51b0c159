"""``clindav audit``: verify the chain, export events, follow refusals live.

Kept apart from gateway/cli.py so the audit commands and their output formats
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
from typing import Any, TextIO

from gateway.db import AuditEvent
from plugins.audit import CHAINED_FIELDS, AuditLog, iter_events, verify_chain

COLUMNS = (*CHAINED_FIELDS, "mac")
Open = Callable[[argparse.Namespace], tuple[AuditLog, Any]]


def add_audit_commands(
    sub: argparse._SubParsersAction, config_arg: Callable[..., None], open_audit: Open
) -> None:
    audit = sub.add_parser("audit", help="verify, export and follow the audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="walk the chain; report the first tampered position")
    config_arg(verify)
    verify.set_defaults(handler=lambda args: cmd_verify(open_audit(args)))
    export = actions.add_parser("export", help="write events as JSON lines or CSV to stdout")
    export.add_argument("--since", type=_when, help="ISO date or time (UTC), inclusive")
    export.add_argument("--until", type=_when, help="ISO date or time (UTC), exclusive")
    export.add_argument("--patient", help="only events about this patient id")
    export.add_argument("--user", help="only events by this user")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    config_arg(export)
    export.set_defaults(handler=lambda args: cmd_export(open_audit(args), args, sys.stdout))
    tail = actions.add_parser(
        "tail", help="print new events as they happen (Ctrl-C stops, or --no-follow)"
    )
    tail.add_argument("--refusals", action="store_true", help="only refusals (status >= 400)")
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
