"""``clindav fsck``: do the backing shares, the registry and the key table agree?"""

from __future__ import annotations

import argparse
import dataclasses
import json

from gateway.admin.fsck import fsck as check
from gateway.cli.context import CommandContext


def fsck(ctx: CommandContext, args: argparse.Namespace) -> int:
    findings = check(ctx.services, repair=args.repair)
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in findings], indent=1))
    else:
        for f in findings:
            where = f"{f.share}:{f.logical_path}" if f.logical_path else f"{f.share}:{f.location}"
            print(f"{f.kind}\t{where}\t{f.detail}".rstrip())
        print(f"{len(findings)} findings" + (" (problem files quarantined)" if args.repair else ""))
    return 1 if findings else 0
