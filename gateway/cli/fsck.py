"""``clindav fsck``: do the backing shares, the registry and the key table agree?"""

from __future__ import annotations

import argparse
import dataclasses

from gateway.admin.fsck import fsck as check
from gateway.cli.context import CommandContext


def fsck(ctx: CommandContext, args: argparse.Namespace) -> int:
    findings = check(ctx.services, repair=args.repair)
    lines = [
        f"{f.kind}\t{f.share}:{f.logical_path or f.location}\t{f.detail}".rstrip() for f in findings
    ]
    summary = f"{len(findings)} findings" + (" (problem files quarantined)" if args.repair else "")
    ctx.show([dataclasses.asdict(f) for f in findings], [*lines, summary])
    return 1 if findings else 0
