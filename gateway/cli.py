"""The ``clindav`` command line.

Every subcommand takes ``--config FILE`` (default ``./clindav-data/clindav.yaml``,
the embedded default instance).  Errors are printed as ``clindav: error: ...``
naming file and key, and exit non-zero: 2 for invalid configuration or usage,
1 for a refused operation.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import __version__
from gateway.errors import ClindavError, ConfigError

DEFAULT_INSTANCE = Path("clindav-data")
DEFAULT_CONFIG = DEFAULT_INSTANCE / "clindav.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clindav",
        description=(
            "WebDAV gateway that consent-checks, scrubs, encrypts and audits clinical images."
        ),
    )
    parser.add_argument("--version", action="version", version=f"clindav {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create a working instance in a folder")
    init.add_argument("folder", type=Path, help="new or empty folder")
    init.set_defaults(handler=_cmd_init)

    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description=(
            "Run the gateway. Without --config, uses ./clindav-data (created on first run)."
        ),
    )
    _config_arg(serve)
    serve.add_argument("--host", help="listen address (default: from settings)")
    serve.add_argument(
        "--port", type=int, help="TCP port, 0 for any free one (default: from settings)"
    )
    serve.add_argument("--no-tls", action="store_true", help="plain HTTP; allowed on loopback only")
    serve.set_defaults(handler=_cmd_serve)

    check = sub.add_parser(
        "check-config", help="validate settings, policy and stage options offline"
    )
    _config_arg(check)
    check.set_defaults(handler=_cmd_check)

    _add_user_commands(sub)
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"settings file (default: {DEFAULT_CONFIG})",
    )


def _add_user_commands(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser("user", help="manage the local user store")
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = users.add_parser("add", help="add a user (password read from standard input)")
    add.add_argument("name")
    add.add_argument(
        "--group",
        action="append",
        default=[],
        required=True,
        help="policy group, e.g. clinicians (repeat for several)",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from the first line of standard input",
    )
    _config_arg(add)
    add.set_defaults(handler=_cmd_user_add)
    listing = users.add_parser("list", help="list users and their groups")
    _config_arg(listing)
    listing.set_defaults(handler=_cmd_user_list)
    remove = users.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    _config_arg(remove)
    remove.set_defaults(handler=_cmd_user_remove)


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gateway.settings import load_settings

    return load_settings(args.config or DEFAULT_CONFIG)


def _sessions(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gateway.db import make_engine, make_sessions, migrate

    settings = _settings(args)
    url = settings.sqlalchemy_url()
    migrate(url)
    return make_sessions(make_engine(url))


def _cmd_init(args: argparse.Namespace) -> int:
    from gateway.instance import init_instance

    config = init_instance(args.folder)
    print(f"created instance: {config}")
    print(
        f"add a user:  clindav user add NAME --group clinicians --password-stdin --config {config}"
    )
    print(f"serve it:    clindav serve --config {config}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import build_app, build_services
    from gateway.instance import init_instance
    from gateway.server import make_server, run_until_signalled

    if args.config is None and not DEFAULT_CONFIG.exists():
        print(f"no instance yet: creating the embedded default in {DEFAULT_INSTANCE.resolve()}")
        init_instance(DEFAULT_INSTANCE)
    settings = _settings(args)
    services = build_services(settings)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    server = make_server(settings, build_app(services), host=host, port=port, tls=not args.no_tls)
    server.prepare()
    bound_host, bound_port = server.bind_addr[:2]
    scheme = "http" if args.no_tls else "https"
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = (args.config or DEFAULT_CONFIG).resolve()
    print(f"clindav serving {scheme}://{shown}:{bound_port}/", flush=True)
    print(f"shares: {', '.join(s.url + '/' for s in services.shares.values())}", flush=True)
    print(
        f"add a user: clindav user add NAME --group clinicians --password-stdin --config {config}",
        flush=True,
    )
    run_until_signalled(server)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from gateway.app import load_checked_policy, load_master_keys

    settings = _settings(args)
    load_checked_policy(settings)
    load_master_keys(settings)
    print(f"{(args.config or DEFAULT_CONFIG)}: settings, policy and stage options are valid")
    return 0


def _cmd_user_add(args: argparse.Namespace) -> int:
    from gateway.users import UserStore

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("clindav: error: no password on standard input", file=sys.stderr)
        return 2
    UserStore(_sessions(args)).add(args.name, password, args.group)
    print(f"added user {args.name} (groups: {', '.join(args.group)})")
    return 0


def _cmd_user_list(args: argparse.Namespace) -> int:
    from gateway.users import UserStore

    for name, groups in UserStore(_sessions(args)).list():
        print(f"{name}\t{','.join(groups)}")
    return 0


def _cmd_user_remove(args: argparse.Namespace) -> int:
    from gateway.users import UserStore

    UserStore(_sessions(args)).remove(args.name)
    print(f"removed user {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
