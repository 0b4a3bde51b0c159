"""``clindav request``: create, list and cancel patient upload links.

``create`` prints the link and its QR code (for the screen of the consulting
room) and what GOV.UK Notify did with each address given; a failed delivery
is printed as a warning and the link still works (give it by hand).  Bad
input (a mistyped NHS number, a date of birth in the future, a mobile that is
not one) exits 1 with the message the console shows for it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import segno

from gateway.cli.actor import cli_request
from gateway.cli.context import CommandContext
from gateway.db import UploadRequest
from gateway.patients import PatientScheme
from gateway.records.upload_requests import NewUploadRequest, UploadRequestService
from gateway.settings import Settings
from gateway.uploads.notify import create_and_send


def public_base(settings: Settings) -> str:
    """``uploads.public_url``, else the address ``clindav serve`` listens on."""
    if settings.uploads.public_url:
        return settings.uploads.public_url
    server = settings.server
    return f"{'https' if server.tls else 'http'}://{server.host}:{server.port}"


def create(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    new = NewUploadRequest(
        patient_id=args.patient,
        date_of_birth=args.dob,
        created_by=args.actor,
        mobile=args.mobile,
        email=args.email,
        note=args.note,
        max_files=args.max_files,
        expires_days=args.expires,
        intimate=args.intimate,
    )
    request = cli_request("UPLOAD-REQUEST", args.actor)
    base = public_base(services.settings)
    issued = create_and_send(services, new, PatientScheme(args.scheme), request, base)
    created, link, deliveries = issued.row, issued.link, issued.deliveries
    data = {**_summary(created), "link": link, "deliveries": deliveries}
    if args.json:
        ctx.show(data, [])
        return 0
    print(f"upload request #{created.id} for patient {created.patient_id}")
    print(f"link (works once, until {created.expires_at:%Y-%m-%d %H:%M} UTC): {link}")
    segno.make(link, error="m").terminal(out=sys.stdout, compact=True)
    if issued.unreachable:
        print(f"clindav: warning: {issued.unreachable}", file=sys.stderr)
    for channel, outcome in deliveries.items():
        line = f"{channel}: {outcome['message']}"
        print(
            line if outcome["ok"] else f"clindav: warning: {line}",
            file=sys.stdout if outcome["ok"] else sys.stderr,
        )
    return 0


def _summary(row: UploadRequest) -> dict[str, Any]:
    stored = sum(1 for r in row.results if r.get("outcome") == "stored")
    return {
        "id": row.id,
        "patient": row.patient_id,
        "state": row.state,
        "created_by": row.created_by,
        "created_at": str(row.created_at),
        "expires_at": str(row.expires_at),
        "intimate": row.intimate,
        "max_files": row.max_files,
        "stored": stored,
        "refused": len(row.results) - stored,
        "deliveries": row.deliveries,
    }


def list_requests(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = UploadRequestService(ctx.services).all(args.actor if args.mine else None)
    summaries = [_summary(r) for r in rows]
    lines = [
        f"#{s['id']}\t{s['patient']}\t{s['state']}\tby {s['created_by']}\texpires {s['expires_at']}"
        f"\t{s['stored']} stored, {s['refused']} refused"
        for s in summaries
    ]
    ctx.show(summaries, [*lines, f"{len(rows)} requests"])
    return 0


def cancel(ctx: CommandContext, args: argparse.Namespace) -> int:
    row = UploadRequestService(ctx.services).cancel(
        args.id, cli_request("UPLOAD-CANCEL", args.actor)
    )
    ctx.show(_summary(row), [f"cancelled upload request #{row.id}: its link no longer works"])
    return 0
