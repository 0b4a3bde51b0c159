"""``clindav trash`` and ``clindav hold``: the admin side of deletion and retention.

Every action is audited with the acting user (``--as``, default: the
operating-system user running the command).  Paths are given as URLs paths,
share first: ``/clinical/9434765919/rash.jpg``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import uuid
from collections.abc import Callable

from gateway.auth.base import Principal
from gateway.errors import BadRequest
from gateway.pipeline import RequestInfo
from gateway.records.holds import LegalHolds
from gateway.records.scheduler import clock_jump, last_sweep, record_sweep
from gateway.records.trash import Actor, Trash
from gateway.services import Services

OpenServices = Callable[[argparse.Namespace], Services]


def add_trash_commands(
    sub: argparse._SubParsersAction, config_arg: Callable[..., None], open_services: OpenServices
) -> None:
    trash = sub.add_parser("trash", help="list, restore and purge deleted items")
    actions = trash.add_subparsers(dest="trash_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="items in the trash")
    listing.add_argument("--share")
    listing.add_argument("--patient", help="only items in this patient's folder")
    listing.add_argument("--json", action="store_true")
    restore = actions.add_parser("restore", help="put an item back")
    restore.add_argument("id", help="the item's id, or enough of its start to name one item")
    restore.add_argument("--to", help="restore to this path in the same share instead")
    restore.add_argument(
        "--overwrite", action="store_true", help="send what is in the way to the trash first"
    )
    purge = actions.add_parser("purge", help="destroy items for good (keys first, then files)")
    purge.add_argument("ids", nargs="*", metavar="ID")
    purge.add_argument("--due", action="store_true", help="every item whose window has ended")
    purge.add_argument("--all", action="store_true", help="every item (needs --yes)")
    purge.add_argument("--yes", action="store_true", help="confirm --all")
    purge.add_argument("--reason", default="", help="recorded in the audit trail")
    for parser, handler in ((listing, cmd_list), (restore, cmd_restore), (purge, cmd_purge)):
        parser.add_argument(
            "--as", dest="actor", default=getpass.getuser(), help="acting user for the audit trail"
        )
        config_arg(parser)
        parser.set_defaults(handler=bind_handler(handler, open_services))
    _add_hold_commands(sub, config_arg, open_services)


def _add_hold_commands(
    sub: argparse._SubParsersAction, config_arg: Callable[..., None], open_services: OpenServices
) -> None:
    hold = sub.add_parser("hold", help="legal holds: nothing held is deleted or purged")
    actions = hold.add_subparsers(dest="hold_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="hold a path (and everything below it)")
    remove = actions.add_parser("remove", help="release a hold")
    listing = actions.add_parser("list", help="current holds")
    for parser in (add, remove):
        parser.add_argument("path", help="e.g. /clinical/9434765919")
        parser.add_argument("--reason", required=True)
    for parser, handler in (
        (add, cmd_hold_add),
        (remove, cmd_hold_remove),
        (listing, cmd_hold_list),
    ):
        parser.add_argument("--as", dest="actor", default=getpass.getuser())
        config_arg(parser)
        parser.set_defaults(handler=bind_handler(handler, open_services))


def bind_handler(
    handler: Callable[[Services, argparse.Namespace], int], open_services: OpenServices
) -> Callable[[argparse.Namespace], int]:
    return lambda args: handler(open_services(args), args)


def cli_actor(args: argparse.Namespace, action: str) -> Actor:
    principal = Principal(args.actor, frozenset({"admins"}))
    request = RequestInfo(uuid.uuid4().hex[:16], principal, "cli", "clindav-cli", action)
    return Actor(request, is_admin=True)


def cmd_list(services: Services, args: argparse.Namespace) -> int:
    items = Trash(services, services.clock).items(share=args.share, patient=args.patient)
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
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(
            f"{r['id']}\t{r['share']}:{r['path']}\t{r['files']} files\tby {r['trashed_by']}"
            f"\treason: {r['reason'] or '-'}\tpurge after {r['purge_after']}"
        )
    print(f"{len(rows)} items in the trash")
    return 0


def cmd_restore(services: Services, args: argparse.Namespace) -> int:
    trash = Trash(services, services.clock)
    item_id = trash.resolve(args.id)
    path = trash.restore(item_id, cli_actor(args, "RESTORE"), to=args.to, overwrite=args.overwrite)
    print(f"restored {item_id} to {path}")
    return 0


def cmd_purge(services: Services, args: argparse.Namespace) -> int:
    trash = Trash(services, services.clock)
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


def cmd_hold_add(services: Services, args: argparse.Namespace) -> int:
    LegalHolds(services).add(cli_actor(args, "HOLD").request, args.path, args.reason)
    print(f"legal hold on {args.path}")
    return 0


def cmd_hold_remove(services: Services, args: argparse.Namespace) -> int:
    LegalHolds(services).remove(cli_actor(args, "RELEASE").request, args.path, args.reason)
    print(f"released the hold on {args.path}")
    return 0


def cmd_hold_list(services: Services, args: argparse.Namespace) -> int:
    holds = LegalHolds(services).list()
    for hold in holds:
        sys.stdout.write(f"{hold.share}:{hold.logical_path}\tby {hold.held_by}\t{hold.reason}\n")
    print(f"{len(holds)} holds")
    return 0
