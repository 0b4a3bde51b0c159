"""``clindav consent``: record, withdraw, list, show and review pending consent.

Output is for people by default and JSON with ``--json``.  Bad input (an
unknown scope, teaching without written consent and a form, a mistyped NHS
number, a missing name for a parent or representative) exits 1 with a
message that says what to fix; usage errors exit 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.admin.migrate import legacy_unverified
from gateway.cli.actor import cli_request
from gateway.cli.context import CommandContext
from gateway.db import StoredObject
from gateway.errors import BadRequest
from gateway.patients import PatientScheme
from gateway.records.consent import (
    ConsentService,
    ConsentView,
    NewConsent,
    end_of_validity,
)


def _line(view: ConsentView) -> str:
    d = view.as_dict()
    who = d["given_by"] + (f" ({d['given_by_name']})" if d["given_by_name"] else "")
    return (
        f"#{d['id']}\t{d['patient']}\t{','.join(d['active_scopes']) or '(all withdrawn)'}"
        f"\t{who}, {d['method']}\t{'intimate ' if d['intimate'] else ''}"
        f"recorded by {d['recorded_by']}"
    )


def add(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
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
    ctx.show(view.as_dict(), [f"recorded consent {_line(view)}"])
    return 0


def withdraw(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
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
    ctx.show({"id": args.id, **data} if args.id is not None else data, lines)
    return 0


def list_records(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    patient = PatientScheme(args.scheme).normalise(args.patient) if args.patient else None
    views = ConsentService(services).all(patient)
    ctx.show([v.as_dict() for v in views], [_line(v) for v in views] + [f"{len(views)} records"])
    return 0


def show(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    view = ConsentService(services).get(args.id)
    data = view.as_dict()
    ctx.show(data, [f"{key}: {value}" for key, value in data.items()])
    return 0


def pending(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    held = ConsentService(services).pending()
    rows = [_pending_row(o, str(o.held_until), "held") for o in held]
    lines = [
        f"{r['share']}:{r['path']}\tpatient {r['patient']}\tby {r['uploader']}"
        f"\tpurged after {r['held_until']}"
        for r in rows
    ]
    # Migrated legacy images: kept and visible, never consent-checked (docs/MIGRATION.md).
    legacy = [_pending_row(o, None, "legacy-unverified") for o in legacy_unverified(services)]
    lines += [
        f"{r['share']}:{r['path']}\tpatient {r['patient']}\tlegacy-unverified: no consent recorded"
        for r in legacy
    ]
    summary = f"{len(rows)} images await consent"
    if legacy:
        summary += f", {len(legacy)} migrated images have no recorded consent"
    ctx.show([*rows, *legacy], [*lines, summary])
    return 0


def _pending_row(image: StoredObject, held_until: str | None, status: str) -> dict[str, Any]:
    """One image of ``consent pending``, held or migrated (both lists show the same fields)."""
    return {
        "share": image.share,
        "path": image.logical_path,
        "patient": image.patient_id,
        "uploader": image.uploader,
        "held_until": held_until,
        "status": status,
    }
