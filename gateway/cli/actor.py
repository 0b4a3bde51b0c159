"""The acting user of an admin command, as the audit trail records it."""

from __future__ import annotations

import argparse
import getpass

from gateway.auth.base import Principal
from gateway.pipeline import RequestInfo, new_request_id
from gateway.records.trash import Actor


def cli_request(action: str, user: str | None = None) -> RequestInfo:
    """The request an admin command's audit events carry: ``user`` (default: the
    operating-system user running the command) acting as an admin from the CLI."""
    principal = Principal(user or getpass.getuser(), frozenset({"admins"}))
    return RequestInfo(new_request_id(), principal, "cli", "clindav-cli", action)


def cli_actor(args: argparse.Namespace, action: str) -> Actor:
    """The ``--as`` user of a trash, hold or lock command."""
    return Actor(cli_request(action, args.actor), is_admin=True)
