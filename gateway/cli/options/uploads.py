"""Options of ``clindav request``: patient upload links (docs/PATIENT-UPLOADS.md)."""

from __future__ import annotations

import argparse

from gateway.cli.spec import Command, Group, Needs, actor_arg, date, json_arg, positive, scheme_arg


def _create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", required=True, help="NHS number (spaces allowed) or MRN")
    parser.add_argument(
        "--dob", type=date, required=True, help="the patient's date of birth, YYYY-MM-DD"
    )
    parser.add_argument("--mobile", help="send the link by SMS (GOV.UK Notify)")
    parser.add_argument("--email", help="send the link by e-mail (GOV.UK Notify)")
    parser.add_argument("--note", default="", help="shown to the patient: what to photograph")
    parser.add_argument("--max-files", type=positive, help="default uploads.max_files")
    parser.add_argument("--expires", type=positive, help="days (default uploads.expiry_days)")
    parser.add_argument(
        "--intimate", action="store_true", help="intimate images are asked for (intimate folder)"
    )
    actor_arg(parser, meaning="the clinician asking: their console inbox lists what is sent")
    scheme_arg(parser)
    json_arg(parser)


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mine", action="store_true", help="only requests made --as this user")
    actor_arg(parser)
    json_arg(parser)


def _cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=int, help="the request's number (from `request list`)")
    actor_arg(parser)
    json_arg(parser)


REQUEST = Group(
    "request",
    "patient upload links: a patient sends photos from their phone",
    (
        Command(
            "create",
            "make a one-time link for one patient (shown as URL and QR code, sent by Notify)",
            run="create",
            needs=Needs.SERVICES,
            arguments=_create,
        ),
        Command(
            "list",
            "upload requests, newest first",
            run="list_requests",
            needs=Needs.SERVICES,
            arguments=_list,
        ),
        Command(
            "cancel",
            "stop an open link working",
            run="cancel",
            needs=Needs.SERVICES,
            arguments=_cancel,
        ),
    ),
)
