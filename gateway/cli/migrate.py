"""``clindav migrate SHARE``: protect the legacy plaintext files of a share.

See :mod:`gateway.admin.migrate` for what happens to each file and docs/MIGRATION.md
for the procedure.  Progress goes to standard error (a bar on a terminal,
a line every few seconds otherwise); the summary to standard output; the
JSON report to ``--report`` (default: ``migrate-reports/`` in the instance
folder, never inside a backing share).  Exit status: 0 when nothing was
left behind, 1 when files were left in place (the report says why) or the
run was refused.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import NotFound

if TYPE_CHECKING:
    from gateway.settings import Settings

LoadSettings = Callable[[argparse.Namespace], "Settings"]


def add_migrate_commands(
    sub: argparse._SubParsersAction, config_arg: Callable[..., None], load_settings: LoadSettings
) -> None:
    migrate = sub.add_parser(
        "migrate",
        help="protect the legacy plaintext files already in a share's backing folder",
        description="Scrub, encrypt, register and audit every legacy file of SHARE, "
        "verify the protected copy, then destroy the original. Client junk is destroyed; "
        "files that cannot be migrated are left untouched and listed in the report. "
        "Safe to interrupt and run again (docs/MIGRATION.md).",
    )
    migrate.add_argument("share", help="share name, e.g. clinical")
    migrate.add_argument(
        "--dry-run", action="store_true", help="report what would happen; change nothing"
    )
    migrate.add_argument(
        "--workers",
        type=_positive,
        default=min(4, os.cpu_count() or 1),
        help="files processed in parallel (default: up to 4)",
    )
    migrate.add_argument(
        "--patient-folders",
        choices=("auto", "off"),
        default="auto",
        help="auto: the first folder is the patient id, validated by the share's consent "
        "stage (default); off: files carry no patient",
    )
    migrate.add_argument("--report", type=Path, help="JSON report file (names patients' files)")
    migrate.add_argument(
        "--as", dest="actor", default=getpass.getuser(), help="acting user for the audit trail"
    )
    config_arg(migrate)
    migrate.set_defaults(handler=lambda args: cmd_migrate(args, load_settings(args)))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.admin.migrate import (
        MigrateOptions,
        Migration,
        check_report_path,
        default_report_path,
        write_report,
    )
    from gateway.app import build_services, readonly_services

    # A dry run must not even create a share's name seed: nothing is written.
    services = readonly_services(settings) if args.dry_run else build_services(settings)
    share = services.shares.get(args.share)
    if share is None:
        raise NotFound(
            f"no share {args.share}",
            public=f"No share {args.share!r} (shares: {', '.join(services.shares)}).",
        )
    report_path = args.report or default_report_path(services.settings, share.name, args.dry_run)
    check_report_path(services, report_path)
    options = MigrateOptions(
        dry_run=args.dry_run,
        workers=args.workers,
        patient_folders=args.patient_folders == "auto",
        actor=args.actor,
    )
    report = Migration(services, share, options).run()
    write_report(report, report_path)
    print(report.summary())
    print(f"report: {report_path}")
    if report.interrupted:
        return 130
    return 1 if report.left else 0
