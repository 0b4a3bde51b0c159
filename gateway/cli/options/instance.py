"""Options of the commands that make, serve, check and convert an instance."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway.cli.spec import Command, Needs, actor_arg, json_arg, positive


def _hostname(text: str) -> str:
    from gateway.admin.tls import check_hostname  # only `init --hostname` pays for it

    try:
        return check_hostname(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker_count(text: str) -> int:
    if not text.isdigit() or int(text) > 64:
        raise argparse.ArgumentTypeError("a whole number from 0 to 64")
    return int(text)


def _init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="new or empty folder")
    parser.add_argument(
        "--hostname",
        action="append",
        default=[],
        type=_hostname,
        help="a name clients connect to, put in the certificate (repeat for several)",
    )


INIT = Command(
    "init",
    "create a working instance in a folder",
    run="init",
    needs=Needs.NOTHING,
    arguments=_init,
    config=False,
    description="Writes settings (clindav.yaml), the default policy, a master key, a "
    "self-signed certificate, a SQLite database and the share folders into FOLDER, then "
    "prints how to add a user and serve it (docs/DEPLOY.md for production).",
)


def _serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default: from settings)")
    parser.add_argument(
        "--port", type=int, help="TCP port, 0 for any free one (default: from settings)"
    )
    parser.add_argument(
        "--no-tls", action="store_true", help="plain HTTP; allowed on loopback only"
    )
    parser.add_argument(
        "--workers",
        type=_worker_count,
        help="serving processes; 0 = one per CPU core, at most 4 (default: server.workers)",
    )


# Serving creates the default instance when there is none, then adjusts its
# settings (--workers): it builds its services itself.
SERVE = Command(
    "serve",
    "run the gateway",
    run="serve",
    needs=Needs.SETTINGS,
    arguments=_serve,
    description="Run the gateway. Without --config, uses ./clindav-data (created on first run).",
)

RELOAD = Command(
    "reload",
    "make the running gateway reload its policy file (after checking it)",
    run="reload",
    needs=Needs.SETTINGS,
    description="Validates the policy file, then sends SIGHUP to the gateway serving this "
    "instance (its process id is in clindav.pid in the instance folder). Each serving "
    "process loads the file again; one that does not validate is refused and the "
    "running policy kept (the gateway's log says why).",
)

CHECK_CONFIG = Command(
    "check-config",
    "validate settings, policy and stage options offline",
    run="check_config",
    needs=Needs.SETTINGS,
    description="Validates the settings, the policy and its stage options, loads the master "
    "keys and compares them with the database, and checks that every backing folder is a "
    "writable folder; serves nothing. Only `clindav serve` checks the port and the shares' "
    "markers (docs/DEPLOY.md, Share markers).",
)


def _migrate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("share", help="share name, e.g. clinical")
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would happen; change nothing"
    )
    parser.add_argument(
        "--jobs",
        "-j",
        "--workers",  # the older spelling, still taken
        dest="workers",
        metavar="N",
        type=positive,
        default=min(4, os.cpu_count() or 1),
        help="files processed in parallel by N worker processes (default: one per core, up to 4)",
    )
    parser.add_argument(
        "--patient-folders",
        choices=("auto", "off"),
        default="auto",
        help="auto: the first folder is the patient id, validated by the share's consent "
        "stage (default); off: files carry no patient",
    )
    parser.add_argument("--report", type=Path, help="JSON report file (names patients' files)")
    actor_arg(parser)


MIGRATE = Command(
    "migrate",
    "protect the legacy plaintext files already in a share's backing folder",
    run="migrate",
    needs=Needs.SERVICES,
    arguments=_migrate,
    description="Scrub, encrypt, register and audit every legacy file of SHARE, "
    "verify the protected copy, then destroy the original. Client junk is destroyed; "
    "files that cannot be migrated are left untouched and listed in the report. "
    "Safe to interrupt and run again (docs/MIGRATION.md).",
)


def _upgrade(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes", action="store_true", help="confirm that a backup exists (no prompt)"
    )


# Settings only: the upgrade opens the database itself, since the schema check
# every other command makes is what it is there to bring forward.
UPGRADE = Command(
    "upgrade",
    "bring the database and shares of an older instance forward (after a backup)",
    run="upgrade",
    needs=Needs.SETTINGS,
    arguments=_upgrade,
    description="Stop every gateway and back up the database and the key file first. "
    "Applies the pending schema migrations, records key-check values and the instance "
    "id, and marks the shares. Asks for confirmation; --yes for scripts.",
)


def _fsck(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repair", action="store_true", help="quarantine problem files")
    json_arg(parser)


FSCK = Command(
    "fsck",
    "check that the backing shares, registry and key table agree",
    run="fsck",
    needs=Needs.SERVICES,
    arguments=_fsck,
    description="Report orphan or missing ciphertext, purged or orphan keys and files "
    "that fail their integrity check. --repair quarantines problem files (never deletes).",
)
