"""``clindav hold``: legal holds; nothing held is deleted or purged.

Paths are given as URL paths, share first: ``/clinical/9434765919/rash.jpg``.
Adding and releasing a hold are audited with the acting user (``--as``,
default: the operating-system user running the command).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.cli.actor import cli_actor
from gateway.cli.context import CommandContext
from gateway.db import LegalHold, TrashItem, starts_with
from gateway.errors import Conflict, NotFound
from gateway.records.patientpaths import folder_patient
from gateway.services import Services
from gateway.storage.backing import split_path


def split_share_path(services: Services, path: str) -> tuple[str, str]:
    parts = [p for p in path.split("/") if p]
    for name, share in services.shares.items():
        if parts and "/" + parts[0] == share.url:
            return name, "/" + "/".join(split_path("/" + "/".join(parts[1:])))
    raise NotFound(f"no share for {path}", public=f"No share holds {path!r}.")


class HoldExists(Conflict):
    code = "hold-exists"
    message = "That path is already under a legal hold."


class HoldNotFound(NotFound):
    code = "hold-not-found"
    message = "There is no legal hold on that path."


def _require_content(services: Services, share: str, path: str, shown: str) -> None:
    """A hold is for something that exists: in the share, or in its trash (to stop a purge)."""
    runtime = services.shares[share]
    if runtime.store.lstat(runtime.store.locate(split_path(path))) is not None:
        return
    segments = split_path(path)
    above = ["/" + "/".join(segments[:n]) for n in range(1, len(segments))]
    trashed = (TrashItem.logical_path == path) | starts_with(
        TrashItem.logical_path, path.rstrip("/") + "/"
    )
    with services.sessions() as session:
        found = session.scalar(
            select(TrashItem.id).where(
                TrashItem.share == share,
                TrashItem.state == "trashed",
                trashed | TrashItem.logical_path.in_(above),
            )
        )
    if found is None:
        raise NotFound(
            f"nothing at {share}:{path}",
            public=f"Nothing exists at {shown}, in the share or in its trash; check the path.",
        )


def add(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    share, path = split_share_path(services, args.path)
    _require_content(services, share, path, args.path)

    def hold(session: Session) -> None:
        held = session.scalar(
            select(LegalHold).where(LegalHold.share == share, LegalHold.logical_path == path)
        )
        if held is not None:
            raise HoldExists(
                f"{share}:{path} held since {held.held_at}",
                public=f"{args.path} is already under a legal hold "
                f"(by {held.held_by}: {held.reason}).",
            )
        session.add(
            LegalHold(share=share, logical_path=path, reason=args.reason, held_by=args.actor)
        )

    _hold_change(services, args, "HOLD", share, path, hold)
    print(f"legal hold on {args.path}")
    return 0


def remove(ctx: CommandContext, args: argparse.Namespace) -> int:
    services = ctx.services
    share, path = split_share_path(services, args.path)

    def release(session: Session) -> None:
        gone = session.execute(
            delete(LegalHold).where(LegalHold.share == share, LegalHold.logical_path == path)
        )
        if not getattr(gone, "rowcount", 0):  # nothing is audited then: the transaction ends
            raise HoldNotFound(
                f"no hold on {share}:{path}",
                public=f"There is no legal hold on {args.path} (clindav hold list).",
            )

    _hold_change(services, args, "RELEASE", share, path, release)
    print(f"released the hold on {args.path}")
    return 0


def _hold_change(
    services: Services,
    args: argparse.Namespace,
    action: str,
    share: str,
    path: str,
    change: Callable[[Session], None],
) -> None:
    actor = cli_actor(args, action)
    with services.sessions.begin() as session:
        services.audit.lock_head(session)
        change(session)
        event = services.audit.event(
            actor.request,
            action=action,
            share=share,
            path=path,
            status=200,
            code=action.lower(),
            reason=args.reason,
            # A hold on a patient's folder or file belongs in their access report.
            patient_id=folder_patient(services.policy, share, path),
        )
        services.audit.append(session, event)


def list_holds(ctx: CommandContext, args: argparse.Namespace) -> int:
    with ctx.services.sessions() as session:
        holds = session.scalars(select(LegalHold).order_by(LegalHold.held_at)).all()
    for hold in holds:
        sys.stdout.write(f"{hold.share}:{hold.logical_path}\tby {hold.held_by}\t{hold.reason}\n")
    print(f"{len(holds)} holds")
    return 0
