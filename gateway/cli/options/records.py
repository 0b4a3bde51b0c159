"""Options of the commands on clindav's records: ``audit``, ``trash``, ``hold``,
``consent`` and ``locks``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.spec import Command, Group, Needs, actor_arg, date, json_arg, scheme_arg, when
from gateway.records.consent_terms import GIVEN_BY, METHODS, SCOPES


def _audit_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit-key",
        type=Path,
        help="the chain key file from `clindav keys export-audit-key` (default: derive it "
        "from the master key)",
    )


def _audit_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=when, help="ISO date or time (UTC), inclusive")
    parser.add_argument("--until", type=when, help="ISO date or time (UTC), exclusive")
    parser.add_argument("--patient", help="only events about this patient id")
    parser.add_argument("--user", help="only events by this user")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")


def _audit_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", required=True, help="the patient id (spaces allowed)")
    parser.add_argument("--since", type=when, help="ISO date or time (UTC), inclusive")
    parser.add_argument("--until", type=when, help="ISO date or time (UTC), exclusive")
    json_arg(parser)


def _audit_tail(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--refusals", action="store_true", help="only refusals (not misses)")
    parser.add_argument("--count", type=int, default=10, help="events to show first (default 10)")
    parser.add_argument(
        "--no-follow", dest="follow", action="store_false", help="show them, then stop"
    )


# The database alone: an auditor reads the trail without the master key
# (docs/AUDIT.md); only `verify` needs the chain key, from --audit-key or derived.
AUDIT = Group(
    "audit",
    "verify, export and follow the audit trail",
    (
        Command(
            "verify",
            "walk the chain; report the first tampered position",
            run="verify",
            needs=Needs.DATABASE,
            arguments=_audit_verify,
        ),
        Command(
            "export",
            "write events as JSON lines or CSV to stdout",
            run="export",
            needs=Needs.DATABASE,
            arguments=_audit_export,
        ),
        Command(
            "report",
            "who did what with one patient's images, and when (a readable summary)",
            run="report",
            needs=Needs.DATABASE,
            arguments=_audit_report,
            description="Every audit event recorded for the patient (uploads, reads, listings "
            "of the patient's folder, copies under case labels, deletes, consent), grouped by "
            "person and activity, then in chain order.",
        ),
        Command(
            "tail",
            "print new events as they happen (Ctrl-C stops, or --no-follow)",
            run="tail",
            needs=Needs.DATABASE,
            arguments=_audit_tail,
        ),
    ),
)


def _trash_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--share")
    parser.add_argument("--patient", help="only items in this patient's folder")
    parser.add_argument("--json", action="store_true")
    actor_arg(parser)


def _trash_restore(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the item's id, or enough of its start to name one item")
    parser.add_argument("--to", help="restore to this path in the same share instead")
    parser.add_argument(
        "--overwrite", action="store_true", help="send what is in the way to the trash first"
    )
    actor_arg(parser)


def _trash_purge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID")
    parser.add_argument("--due", action="store_true", help="every item whose window has ended")
    parser.add_argument("--all", action="store_true", help="every item (needs --yes)")
    parser.add_argument("--yes", action="store_true", help="confirm --all")
    parser.add_argument("--reason", default="", help="recorded in the audit trail")
    actor_arg(parser)


TRASH = Group(
    "trash",
    "list, restore and purge deleted items",
    (
        Command(
            "list",
            "items in the trash",
            run="list_items",
            needs=Needs.SERVICES,
            arguments=_trash_list,
        ),
        Command(
            "restore",
            "put an item back",
            run="restore",
            needs=Needs.SERVICES,
            arguments=_trash_restore,
        ),
        Command(
            "purge",
            "destroy items for good (keys first, then files)",
            run="purge",
            needs=Needs.SERVICES,
            arguments=_trash_purge,
        ),
    ),
)


def _hold_change(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="e.g. /clinical/9434765919")
    parser.add_argument("--reason", required=True)
    actor_arg(parser, explained=False)


def _hold_list(parser: argparse.ArgumentParser) -> None:
    actor_arg(parser, explained=False)


HOLD = Group(
    "hold",
    "legal holds: nothing held is deleted or purged",
    (
        Command(
            "add",
            "hold a path (and everything below it)",
            run="add",
            needs=Needs.SERVICES,
            arguments=_hold_change,
        ),
        Command(
            "remove",
            "release a hold",
            run="remove",
            needs=Needs.SERVICES,
            arguments=_hold_change,
        ),
        Command(
            "list",
            "current holds",
            run="list_holds",
            needs=Needs.SERVICES,
            arguments=_hold_list,
        ),
    ),
)


def _consent_add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", required=True, help="NHS number (spaces allowed) or MRN")
    parser.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=SCOPES,
        help="record, share, teaching (repeat; record is always needed)",
    )
    parser.add_argument("--given-by", required=True, choices=GIVEN_BY)
    parser.add_argument("--given-by-name", help="who consented, when not the patient")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--form", help="reference to the stored written consent form")
    parser.add_argument("--intimate", action="store_true", help="intimate images are allowed")
    parser.add_argument("--dob", type=date, help="date of birth, YYYY-MM-DD")
    parser.add_argument("--valid-until", type=date, help="YYYY-MM-DD (default: no end)")
    parser.add_argument("--recorded-by", required=True, help="the clinician recording it")
    parser.add_argument("--note", default="")
    scheme_arg(parser)
    json_arg(parser)


def _consent_withdraw(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=int, nargs="?", help="one record (or --patient)")
    parser.add_argument("--patient", help="every record of this patient that has the scopes")
    parser.add_argument("--scope", action="append", required=True, choices=SCOPES)
    parser.add_argument("--by", required=True, help="who records the withdrawal")
    parser.add_argument("--note", default="")
    scheme_arg(parser)
    json_arg(parser)


def _consent_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", help="NHS number (spaces allowed) or MRN")
    scheme_arg(parser)
    json_arg(parser)


def _consent_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=int)
    json_arg(parser)


CONSENT = Group(
    "consent",
    "record and review patients' consent",
    (
        Command(
            "add",
            "record consent (releases the patient's held images)",
            run="add",
            needs=Needs.SERVICES,
            arguments=_consent_add,
        ),
        Command(
            "withdraw",
            "withdraw scopes for future use",
            run="withdraw",
            needs=Needs.SERVICES,
            arguments=_consent_withdraw,
        ),
        Command(
            "list",
            "consent records",
            run="list_records",
            needs=Needs.SERVICES,
            arguments=_consent_list,
        ),
        Command(
            "show",
            "one record with its withdrawals",
            run="show",
            needs=Needs.SERVICES,
            arguments=_consent_show,
        ),
        Command(
            "pending",
            "images held until consent is recorded",
            run="pending",
            needs=Needs.SERVICES,
            arguments=json_arg,
        ),
    ),
)


def _locks_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")
    actor_arg(parser, explained=False)


def _locks_break(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("token", help="the lock token (opaquelocktoken:...), from `locks list`")
    parser.add_argument("--reason", default="", help="recorded in the audit trail")
    actor_arg(parser, explained=False)


LOCKS = Group(
    "locks",
    "list and break WebDAV locks",
    (
        Command(
            "list",
            "live locks: path, owner, scope, expiry",
            run="list_locks",
            needs=Needs.SERVICES,
            arguments=_locks_list,
        ),
        Command(
            "break",
            "remove a lock by its token",
            run="break_lock",
            needs=Needs.SERVICES,
            arguments=_locks_break,
        ),
    ),
)
