"""``clindav consent``: record, withdraw, list, show and review pending consent.

Output is for people by default and JSON with ``--json``.  Bad input (an
unknown scope, teaching without written consent and a form, a mistyped NHS
number, a missing name for a parent or representative) exits 1 with a
message that says what to fix; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import uuid
from collections.abc import Callable
from typing import Any

from gateway.auth.base import Principal
from gateway.cli.trash import OpenServices, bind_handler
from gateway.errors import BadRequest
from gateway.patients import PatientScheme
from gateway.pipeline import RequestInfo
from gateway.records.consent import (
    GIVEN_BY,
    METHODS,
    SCOPES,
    ConsentService,
    ConsentView,
    NewConsent,
    end_of_validity,
    parse_day,
)
from gateway.services import Services


def add_consent_commands(
    sub: argparse._SubParsersAction, config_arg: Callable[..., None], open_services: OpenServices
) -> None:
    consent = sub.add_parser("consent", help="record and review patients' consent")
    actions = consent.add_subparsers(dest="consent_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="record consent (releases the patient's held images)")
    add.add_argument("--patient", required=True, help="NHS number (spaces allowed) or MRN")
    add.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=SCOPES,
        help="record, share, teaching (repeat; record is always needed)",
    )
    add.add_argument("--given-by", required=True, choices=GIVEN_BY)
    add.add_argument("--given-by-name", help="who consented, when not the patient")
    add.add_argument("--method", required=True, choices=METHODS)
    add.add_argument("--form", help="reference to the stored written consent form")
    add.add_argument("--intimate", action="store_true", help="intimate images are allowed")
    add.add_argument("--dob", type=_date, help="date of birth, YYYY-MM-DD")
    add.add_argument("--valid-until", type=_date, help="YYYY-MM-DD (default: no end)")
    add.add_argument("--recorded-by", required=True, help="the clinician recording it")
    add.add_argument("--note", default="")
    withdraw = actions.add_parser("withdraw", help="withdraw scopes for future use")
    withdraw.add_argument("id", type=int, nargs="?", help="one record (or --patient)")
    withdraw.add_argument("--patient", help="every record of this patient that has the scopes")
    withdraw.add_argument("--scope", action="append", required=True, choices=SCOPES)
    withdraw.add_argument("--by", required=True, help="who records the withdrawal")
    withdraw.add_argument("--note", default="")
    listing = actions.add_parser("list", help="consent records")
    listing.add_argument("--patient", help="NHS number (spaces allowed) or MRN")
    show = actions.add_parser("show", help="one record with its withdrawals")
    show.add_argument("id", type=int)
    pending = actions.add_parser("pending", help="images held until consent is recorded")
    for parser in (add, withdraw, listing):
        # Every command that takes a patient id reads it as `consent add` does.
        parser.add_argument(
            "--scheme", default="nhs-number", help="patient id scheme (default nhs-number)"
        )
    handlers = (
        (add, cmd_add),
        (withdraw, cmd_withdraw),
        (listing, cmd_list),
        (show, cmd_show),
        (pending, cmd_pending),
    )
    for parser, handler in handlers:
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        config_arg(parser)
        parser.set_defaults(handler=bind_handler(handler, open_services))


def _date(text: str) -> dt.date:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cli_request(action: str) -> RequestInfo:
    principal = Principal(getpass.getuser(), frozenset({"admins"}))
    return RequestInfo(uuid.uuid4().hex[:16], principal, "cli", "clindav-cli", action)


def _print(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    print(json.dumps(data, indent=1, default=str) if args.json else "\n".join(lines))


def _line(view: ConsentView) -> str:
    d = view.as_dict()
    who = d["given_by"] + (f" ({d['given_by_name']})" if d["given_by_name"] else "")
    return (
        f"#{d['id']}\t{d['patient']}\t{','.join(d['active_scopes']) or '(all withdrawn)'}"
        f"\t{who}, {d['method']}\t{'intimate ' if d['intimate'] else ''}"
        f"recorded by {d['recorded_by']}"
    )


def cmd_add(services: Services, args: argparse.Namespace) -> int:
    consent = NewConsent(
        patient_id=args.patient,
        scopes=tuple(dict.fromkeys(args.scope)),
        given_by=args.given_by,
        method=args.method,
        recorded_by=args.recorded_by,
        given_by_name=args.given_by_name,
        form_reference=args.form,
        intimate=args.intimate,
        date_of_birth=args.dob,
        valid_until=end_of_validity(args.valid_until),
        note=args.note,
    )
    view = ConsentService(services).add(
        consent, PatientScheme(args.scheme), cli_request("CONSENT-ADD")
    )
    _print(args, view.as_dict(), [f"recorded consent {_line(view)}"])
    return 0


def cmd_withdraw(services: Services, args: argparse.Namespace) -> int:
    if (args.id is None) == (args.patient is None):
        raise BadRequest(
            "id and --patient", public="Name one consent record (ID) or --patient, not both."
        )
    service, request = ConsentService(services), cli_request("CONSENT-WITHDRAW")
    if args.patient is not None:
        patient = PatientScheme(args.scheme).normalise(args.patient)
        ids, retracted = service.withdraw_patient(
            patient, args.scope, args.by, request, note=args.note
        )
    else:
        ids = [args.id]
        retracted = service.withdraw(args.id, args.scope, args.by, request, note=args.note)
    lines = [f"withdrew {', '.join(args.scope)} from consent #{i}" for i in ids]
    lines += [f"sent to the trash: {share}:{path}" for share, path in retracted]
    data = {"ids": ids, "withdrawn": args.scope, "trashed": retracted}
    _print(args, {"id": args.id, **data} if args.id is not None else data, lines)
    return 0


def cmd_list(services: Services, args: argparse.Namespace) -> int:
    patient = PatientScheme(args.scheme).normalise(args.patient) if args.patient else None
    views = ConsentService(services).all(patient)
    _print(
        args, [v.as_dict() for v in views], [_line(v) for v in views] + [f"{len(views)} records"]
    )
    return 0


def cmd_show(services: Services, args: argparse.Namespace) -> int:
    view = ConsentService(services).get(args.id)
    data = view.as_dict()
    _print(args, data, [f"{key}: {value}" for key, value in data.items()])
    return 0


def cmd_pending(services: Services, args: argparse.Namespace) -> int:
    from gateway.admin.migrate import legacy_unverified

    held = ConsentService(services).pending()
    rows = [
        {
            "share": o.share,
            "path": o.logical_path,
            "patient": o.patient_id,
            "uploader": o.uploader,
            "held_until": str(o.held_until),
            "status": "held",
        }
        for o in held
    ]
    lines = [
        f"{r['share']}:{r['path']}\tpatient {r['patient']}\tby {r['uploader']}"
        f"\tpurged after {r['held_until']}"
        for r in rows
    ]
    # Migrated legacy images: kept and visible, never consent-checked (docs/MIGRATION.md).
    legacy = [
        {
            "share": o.share,
            "path": o.logical_path,
            "patient": o.patient_id,
            "uploader": o.uploader,
            "held_until": None,
            "status": "legacy-unverified",
        }
        for o in legacy_unverified(services)
    ]
    lines += [
        f"{r['share']}:{r['path']}\tpatient {r['patient']}\tlegacy-unverified: no consent recorded"
        for r in legacy
    ]
    summary = f"{len(rows)} images await consent"
    if legacy:
        summary += f", {len(legacy)} migrated images have no recorded consent"
    _print(args, [*rows, *legacy], [*lines, summary])
    return 0
