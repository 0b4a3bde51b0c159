"""``clindav trash``: list, restore and purge deleted items.

Every action is audited with the acting user (``--as``, default: the
operating-system user running the command).
"""

from __future__ import annotations

import argparse

from gateway.cli.actor import cli_actor
from gateway.cli.context import CommandContext
from gateway.errors import BadRequest
from gateway.records.scheduler import clock_jump, last_sweep, record_sweep


def list_items(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    items = services.trash.items(share=args.share, patient=args.patient)
    rows = [
        {
            "id": i.id,
            "share": i.share,
            "path": i.logical_path,
            "folder": i.is_folder,
            "files": i.files,
            "trashed_at": str(i.trashed_at),
            "trashed_by": i.trashed_by,
            "reason": i.reason,
            "purge_after": str(i.purge_after),
            "retained_until": str(i.retained_until) if i.retained_until else None,
        }
        for i in items
    ]
    lines = [
        f"{r['id']}\t{r['share']}:{r['path']}\t{r['files']} files\tby {r['trashed_by']}"
        f"\treason: {r['reason'] or '-'}\tpurge after {r['purge_after']}"
        for r in rows
    ]
    ctx.show(rows, [*lines, f"{len(rows)} items in the trash"])
    return 0


def restore(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    trash = services.trash
    item_id = trash.resolve(args.id)
    path = trash.restore(item_id, cli_actor(args, "RESTORE"), to=args.to, overwrite=args.overwrite)
    print(f"restored {item_id} to {path}")
    return 0


def purge(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    trash = services.trash
    actor = cli_actor(args, "PURGE")
    if args.due:
        # An administrator's run confirms the clock: the sweeper resumes from here.
        now = services.clock.now()
        jump = clock_jump(services, now, last_sweep(services))
        if jump is not None:
            print(f"the clock moved forward by {jump[1]} since the last sweep; confirmed")
        purged = trash.purge_due(actor)
        record_sweep(services, actor, now, confirmed=True, purged=len(purged))
        print(f"purged {len(purged)} items whose window ended")
        return 0
    if args.all and not args.yes:
        raise BadRequest("--all without --yes", public="Purging the whole trash needs --yes.")
    ids = [i.id for i in trash.items()] if args.all else [trash.resolve(i) for i in args.ids]
    if not ids:
        raise BadRequest(
            "nothing to purge", public="Name items to purge, or use --due or --all --yes."
        )
    for item_id in ids:
        trash.purge(item_id, actor, reason=args.reason)
        print(f"purged {item_id}")
    return 0
