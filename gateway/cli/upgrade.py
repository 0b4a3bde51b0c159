"""``clindav upgrade``: bring an instance made by an older clindav forward, in place.

Every schema change is a numbered Alembic migration
(``gateway/migrations/versions``).  ``clindav serve`` and the other commands
create a new database's schema but refuse a database at an older revision:
an upgrade changes the database for good, so it is this separate step,
taken with every gateway stopped and after a backup.  It prints what it will
do, asks for confirmation that the database (and key file) are backed up
(``--yes`` for scripts; without a terminal it refuses unless ``--yes``), then

1. applies the pending migrations;
2. records the key-check value of each master key that unwraps the
   instance's rows (a key that does not is refused, nothing else changes);
3. records the instance id and marks each share (``gateway/storage/marker.py``):
   every share without a marker that holds files, or of which the registry
   knows nothing (so a share added to the settings is marked too); an empty
   folder where the registry expects files is refused as not mounted.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.engine import make_url

from gateway.app import check_identity
from gateway.cli.actor import cli_request
from gateway.cli.context import CommandContext
from gateway.db import make_engine, make_sessions, migrate, schema_state
from gateway.errors import ClindavError
from gateway.records.audit import AUDIT_SEED, AuditLog
from gateway.storage.keys import key_source, wrong_key_error
from gateway.storage.keystore import KeyStore
from gateway.storage.marker import read_markers, recorded_instance


class UpgradeNotConfirmed(ClindavError):
    status = 400
    code = "upgrade-not-confirmed"
    message = "upgrade not confirmed: nothing was changed"


def upgrade(ctx: CommandContext, args: argparse.Namespace) -> int:
    settings = ctx.settings
    url = settings.sqlalchemy_url()
    source = key_source(settings)
    masters = source.load()  # a missing or unreadable key file stops us before any change
    state = schema_state(url)
    shown = make_url(url).render_as_string(hide_password=True)
    roots = {name: settings.resolve(conf.path) for name, conf in settings.shares.items()}
    unmarked = [name for name, root in roots.items() if not read_markers(root)]
    print(f"database: {shown}")
    if state.current is None:
        print(f"  new database: the schema ({state.head}) will be created")
    elif state.pending:
        print(f"  schema {state.current} -> {state.head}, migrations to apply:")
        for line in state.pending:
            print(f"    {line}")
    else:
        print(f"  schema {state.current}: current")
    print("  key-check values recorded for master keys that have none")
    for name in unmarked:
        print(f"share {name}: {roots[name]} gets this instance's marker (if it is safe)")
    if state.current == state.head and not unmarked:
        engine = make_engine(url)
        try:
            bound = recorded_instance(make_sessions(engine)) is not None
        finally:
            engine.dispose()
        if bound:
            print("nothing to upgrade")
            return 0
    if state.current is not None:  # a wrong key file stops us before any change too
        engine = make_engine(url)
        try:
            wrong = KeyStore(make_sessions(engine), masters, source).mismatched(
                masters, record=False
            )
        finally:
            engine.dispose()
        if wrong:
            raise wrong_key_error(source, wrong)
    _confirm(args.yes)
    migrate(url)
    engine = make_engine(url)
    sessions = make_sessions(engine)
    try:
        keys = KeyStore(sessions, masters, source)
        check_identity(settings, sessions, keys, mode="upgrade")
        AuditLog(sessions, keys.seed(AUDIT_SEED)).record(
            cli_request("UPGRADE"),
            action="UPGRADE",
            share=None,
            path=None,
            status=200,
            code="upgraded",
            reason=f"schema {state.current or '(new)'} -> {state.head}; "
            f"shares marked: {', '.join(unmarked) or 'none'}",
        )
    finally:
        engine.dispose()
    print(f"upgraded: the database is at schema {state.head}; every share is marked")
    return 0


def _confirm(confirmed: bool) -> None:
    if confirmed:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise UpgradeNotConfirmed(
            "no terminal to confirm on",
            public="an upgrade changes the database for good: run it in a terminal to "
            "confirm that a backup exists, or pass --yes; nothing was changed",
        )
    answer = input("Are the database and key file backed up and every gateway stopped? [yes/no] ")
    if answer.strip().lower() != "yes":
        raise UpgradeNotConfirmed("answered " + answer[:20])
