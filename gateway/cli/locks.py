"""``clindav locks``: admins list and break WebDAV locks (database lock storage).

A client that crashed while holding a lock (Explorer does) leaves a file
locked for up to the lock's timeout; an admin can break it.  Breaking is
audited with the acting user and the lock's owner.
"""

from __future__ import annotations

import argparse
import datetime as dt

from gateway.cli.actor import cli_actor
from gateway.cli.context import CommandContext
from gateway.dav.locks import DatabaseLockStorage
from gateway.errors import ConfigError, NotFound
from gateway.services import Services


def _storage(services: Services) -> DatabaseLockStorage:
    if services.settings.locks.storage != "database":
        raise ConfigError.single(
            "settings",
            "locks.storage",
            "`clindav locks` needs locks.storage: database "
            "(memory locks live inside the gateway process)",
        )
    return DatabaseLockStorage(services.sessions)


def list_locks(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = [
        {
            "token": lock["token"],
            "path": lock["root"],
            "principal": lock.get("principal"),
            "scope": lock.get("scope"),
            "depth": lock.get("depth"),
            "expires": dt.datetime.fromtimestamp(lock["expire"], dt.UTC).isoformat(
                timespec="seconds"
            ),
        }
        for lock in _storage(ctx.services).all()
    ]
    lines = [
        f"{r['path']}\t{r['principal']}\t{r['scope']}, depth {r['depth']}"
        f"\tuntil {r['expires']}\t{r['token']}"
        for r in rows
    ]
    ctx.show(rows, [*lines, f"{len(rows)} locks"])
    return 0


def break_lock(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    storage = _storage(services)
    lock = storage.get(args.token)
    if lock is None or not storage.delete(args.token):
        raise NotFound(f"no lock {args.token}", public="No such lock (it may have expired).")
    actor = cli_actor(args, "UNLOCK")
    services.audit.record(
        actor.request,
        action="UNLOCK",
        share=None,
        path=lock["root"],
        status=204,
        code="lock-broken",
        reason=args.reason,
        details={"owner": lock.get("principal")},
    )
    print(f"broke the lock of {lock.get('principal')} on {lock['root']}")
    return 0
