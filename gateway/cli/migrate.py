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

from gateway.admin.migrate import (
    MigrateOptions,
    Migration,
    check_report_path,
    default_report_path,
    write_report,
)
from gateway.app import readonly_services
from gateway.cli.context import CommandContext
from gateway.errors import NotFound


def migrate(ctx: CommandContext, args: argparse.Namespace) -> int:
    # A dry run must not even create a share's name seed: nothing is written.
    services = readonly_services(ctx.settings) if args.dry_run else ctx.services
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
