"""The ``clindav`` command line: the parser and the dispatcher.

The parser is built from the light specs in gateway/cli/options/; the module
that does a command's work is imported only when that command runs, from the
one table below, so ``clindav --help`` and the audit commands start at once.

Every subcommand but ``init`` takes ``--config FILE`` (default
``./clindav-data/clindav.yaml``, the embedded default instance).  Errors are
printed as ``clindav: error: ...`` naming file and key, and exit non-zero: 2
for invalid configuration or usage, 1 for a refused operation.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.cli.context import CommandContext
from gateway.cli.options import accounts, instance, records, uploads
from gateway.cli.spec import Command, Group, config_arg
from gateway.errors import ClindavError, ConfigError

Handler = Callable[[CommandContext, argparse.Namespace], int]

# Every top-level command, in the order `clindav --help` lists them, and the
# module whose functions (named by each spec's `run`) do its work.
COMMANDS: tuple[tuple[Command | Group, str], ...] = (
    (instance.INIT, "gateway.cli.init"),
    (instance.SERVE, "gateway.cli.serve"),
    (instance.RELOAD, "gateway.cli.serve"),
    (instance.CHECK_CONFIG, "gateway.cli.serve"),
    (accounts.USER, "gateway.cli.users"),
    (accounts.KEYS, "gateway.cli.keys"),
    (records.AUDIT, "gateway.cli.audit"),
    (records.TRASH, "gateway.cli.trash"),
    (records.HOLD, "gateway.cli.holds"),
    (records.CONSENT, "gateway.cli.consent"),
    (uploads.REQUEST, "gateway.cli.upload_requests"),
    (records.LOCKS, "gateway.cli.locks"),
    (accounts.LDAP, "gateway.cli.ldap"),
    (instance.MIGRATE, "gateway.cli.migrate"),
    (instance.UPGRADE, "gateway.cli.upgrade"),
    (instance.FSCK, "gateway.cli.fsck"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command: Command = args.spec
    ctx = CommandContext(command, args, args.words)
    try:
        handler: Handler = getattr(importlib.import_module(args.module), command.run)
        return handler(ctx, args)
    except ConfigError as exc:
        print("clindav: error: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except ClindavError as exc:
        print(f"clindav: error: {exc.public_message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clindav",
        description=(
            "WebDAV gateway that consent-checks, scrubs, encrypts and audits clinical images."
        ),
    )
    parser.add_argument("--version", action="version", version=f"clindav {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for spec, module in COMMANDS:
        if isinstance(spec, Command):
            _add_command(sub, spec, module, spec.name)
            continue
        group = sub.add_parser(spec.name, help=spec.help)
        actions = group.add_subparsers(dest=f"{spec.name}_command", required=True, metavar="ACTION")
        for action in spec.actions:
            _add_command(actions, action, module, f"{spec.name} {action.name}")
    return parser


def _add_command(sub: argparse._SubParsersAction, spec: Command, module: str, words: str) -> None:
    # Without a description of its own, `--help` opens with the command's line in the list.
    description = spec.description or spec.help[:1].upper() + spec.help[1:] + "."
    parser = sub.add_parser(spec.name, help=spec.help, description=description)
    spec.arguments(parser)
    if spec.config:
        config_arg(parser)
    parser.set_defaults(spec=spec, module=module, words=words, **spec.defaults)


if __name__ == "__main__":
    sys.exit(main())
