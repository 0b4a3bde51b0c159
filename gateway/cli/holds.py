"""``clindav hold``: legal holds; nothing held is deleted or purged.

Paths are given as URL paths, share first: ``/clinical/9434765919/rash.jpg``.
Adding and releasing a hold are audited with the acting user (``--as``,
default: the operating-system user running the command).  The rules live in
gateway/records/holds.py, which the console uses too.
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli.actor import cli_actor
from gateway.cli.context import CommandContext
from gateway.records.holds import LegalHolds


def add(ctx: CommandContext, args: argparse.Namespace) -> int:
    LegalHolds(ctx.services).add(cli_actor(args, "HOLD").request, args.path, args.reason)
    print(f"legal hold on {args.path}")
    return 0


def remove(ctx: CommandContext, args: argparse.Namespace) -> int:
    LegalHolds(ctx.services).remove(cli_actor(args, "RELEASE").request, args.path, args.reason)
    print(f"released the hold on {args.path}")
    return 0


def list_holds(ctx: CommandContext, args: argparse.Namespace) -> int:
    holds = LegalHolds(ctx.services).list()
    for hold in holds:
        sys.stdout.write(f"{hold.share}:{hold.logical_path}\tby {hold.held_by}\t{hold.reason}\n")
    print(f"{len(holds)} holds")
    return 0
