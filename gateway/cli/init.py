"""``clindav init``: a working instance in a new folder."""

from __future__ import annotations

import argparse

from gateway.admin.instance import init_instance
from gateway.cli.context import CommandContext


def init(ctx: CommandContext, args: argparse.Namespace) -> int:
    config = init_instance(args.folder, args.hostname)
    print(f"created instance: {config}")
    print(f"clients trust its certificate by importing {config.parent / 'tls' / 'cert.pem'}")
    print(
        f"add a user:  clindav user add NAME --group clinicians --password-stdin --config {config}"
    )
    print(f"serve it:    clindav serve --config {config}")
    return 0
