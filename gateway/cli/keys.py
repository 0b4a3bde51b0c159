"""``clindav keys``: master keys (status, rotate, retire) and the audit chain key for
an auditor (export-audit-key)."""

from __future__ import annotations

import argparse

from gateway.admin import rotation
from gateway.app import load_master_keys
from gateway.cli.context import CommandContext
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.storage.keys import FileKeySource, key_source, write_audit_key_file


def status(ctx: CommandContext, args: argparse.Namespace) -> int:
    masters = load_master_keys(ctx.settings)
    usage = rotation.key_usage(ctx.sessions)
    print("key id\tstate\trows")
    for key_id in sorted(set(masters.keys) | set(usage)):
        state = "active" if key_id == masters.active_id else "loaded"
        if key_id not in masters.keys:
            state = "MISSING"
        print(f"{key_id}\t{state}\t{usage[key_id]}")
    return 0 if all(k in masters.keys for k in usage) else 1


def rotate(ctx: CommandContext, args: argparse.Namespace) -> int:
    source = _file_key_source(ctx.settings)
    report = rotation.rotate(source, ctx.sessions)
    if report.new_key_id:
        print(f"new master key {report.new_key_id} added to {source.path}")
    print(f"re-wrapped {report.rewrapped} key rows; no stored file was rewritten")
    print(
        "running gateways pick up the new key on their next write; "
        "then `clindav keys retire` drops keys no row uses"
    )
    return 0


def _file_key_source(settings: Settings) -> FileKeySource:
    source = key_source(settings)
    if not isinstance(source, FileKeySource):
        raise ConfigError.single(
            "settings",
            "keys.env",
            "rotation writes the key file; keys from the environment "
            "are rotated by whoever sets the variable",
        )
    return source


def retire(ctx: CommandContext, args: argparse.Namespace) -> int:
    source = _file_key_source(ctx.settings)
    retired = rotation.retire_unused(source, ctx.sessions)
    if retired:
        print(f"retired unused master keys: {', '.join(retired)}")
    else:
        print("no unused master keys to retire")
    still = sorted(
        k for k, n in rotation.key_usage(ctx.sessions).items() if n and k != source.load().active_id
    )
    if still:
        print(f"still in use, kept: {', '.join(still)} (run `clindav keys rotate` to finish)")
    return 0


def export_audit_key(ctx: CommandContext, args: argparse.Namespace) -> int:
    try:
        write_audit_key_file(args.out, ctx.audit_chain_key())
    except FileExistsError:
        raise ConfigError.single(str(args.out), "--out", "exists; choose a new file") from None
    print(f"audit chain key written to {args.out} (mode 0600)")
    print(f"the auditor runs: clindav audit verify --audit-key {args.out}")
    return 0
