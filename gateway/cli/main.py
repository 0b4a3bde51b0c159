"""The ``clindav`` command line.

Every subcommand takes ``--config FILE`` (default ``./clindav-data/clindav.yaml``,
the embedded default instance).  Errors are printed as ``clindav: error: ...``
naming file and key, and exit non-zero: 2 for invalid configuration or usage,
1 for a refused operation.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.cli.audit import add_audit_commands
from gateway.cli.consent import add_consent_commands
from gateway.cli.ldap import add_ldap_commands
from gateway.cli.locks import add_lock_commands
from gateway.cli.migrate import add_migrate_commands
from gateway.cli.trash import add_trash_commands
from gateway.cli.upgrade import add_upgrade_commands
from gateway.errors import ClindavError, ConfigError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from gateway.records.audit import AuditLog
    from gateway.server.http import Server
    from gateway.services import Services
    from gateway.settings import Settings
    from gateway.storage.keys import FileKeySource

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
    init.add_argument(
        "--hostname",
        action="append",
        default=[],
        type=_hostname,
        help="a name clients connect to, put in the certificate (repeat for several)",
    )
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
    serve.add_argument(
        "--workers",
        type=_worker_count,
        help="serving processes; 0 = one per CPU core, at most 4 (default: server.workers)",
    )
    serve.set_defaults(handler=_cmd_serve)

    reload = sub.add_parser(
        "reload",
        help="make the running gateway reload its policy file (after checking it)",
        description="Validates the policy file, then sends SIGHUP to the gateway serving this "
        "instance (its process id is in clindav.pid in the instance folder). Each serving "
        "process loads the file again; one that does not validate is refused and the "
        "running policy kept (the gateway's log says why).",
    )
    _config_arg(reload)
    reload.set_defaults(handler=_cmd_reload)

    check = sub.add_parser(
        "check-config", help="validate settings, policy and stage options offline"
    )
    _config_arg(check)
    check.set_defaults(handler=_cmd_check)

    _add_user_commands(sub)
    _add_key_commands(sub)
    add_audit_commands(sub, _config_arg, _open_audit)
    add_trash_commands(sub, _config_arg, _open_services)
    add_consent_commands(sub, _config_arg, _open_services)
    add_lock_commands(sub, _config_arg, _open_services)
    add_ldap_commands(sub, _config_arg, _settings)
    add_migrate_commands(sub, _config_arg, _settings)
    add_upgrade_commands(sub, _config_arg, _settings)

    fsck = sub.add_parser(
        "fsck",
        help="check that the backing shares, registry and key table agree",
        description="Report orphan or missing ciphertext, purged or orphan keys and files "
        "that fail their integrity check. --repair quarantines problem files (never deletes).",
    )
    fsck.add_argument("--repair", action="store_true", help="quarantine problem files")
    fsck.add_argument("--json", action="store_true", help="machine-readable output")
    _config_arg(fsck)
    fsck.set_defaults(handler=_cmd_fsck)
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
    add = users.add_parser(
        "add", help="add a user (password prompted on a terminal, or --password-stdin)"
    )
    add.add_argument("name")
    _group_arg(add)
    _password_arg(add)
    _config_arg(add)
    add.set_defaults(handler=_cmd_user_add)
    listing = users.add_parser("list", help="list users, their groups and disabled accounts")
    _config_arg(listing)
    listing.set_defaults(handler=_cmd_user_list)
    remove = users.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    _config_arg(remove)
    remove.set_defaults(handler=_cmd_user_remove)
    _add_user_lifecycle_commands(users)


def _group_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        required=True,
        help="policy group, e.g. clinicians (repeat for several)",
    )


def _password_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input "
        "(default: prompt twice on the terminal)",
    )


def _add_user_lifecycle_commands(users: argparse._SubParsersAction) -> None:
    passwd = users.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    _password_arg(passwd)
    _config_arg(passwd)
    passwd.set_defaults(handler=_cmd_user_passwd)
    groups = users.add_parser("set-groups", help="replace a user's groups")
    groups.add_argument("name")
    _group_arg(groups)
    _config_arg(groups)
    groups.set_defaults(handler=_cmd_user_set_groups)
    for action, disabled in (("disable", True), ("enable", False)):
        toggle = users.add_parser(
            action,
            help="the user cannot log in (account and history kept)"
            if disabled
            else "let a disabled user log in again",
        )
        toggle.add_argument("name")
        _config_arg(toggle)
        toggle.set_defaults(handler=_cmd_user_toggle, disabled=disabled)


def _add_key_commands(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="master keys: status and rotation")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="which master key ids are loaded and in use")
    _config_arg(status)
    status.set_defaults(handler=_cmd_keys_status)
    rotate = actions.add_parser(
        "rotate",
        help="add a new master key and re-wrap every key row (no file is rewritten)",
        description="Resumable: run it again after an interruption and it finishes the "
        "re-wrapping. Running gateways notice the new key file on their next write. "
        "Old keys stay in the file until `clindav keys retire`.",
    )
    _config_arg(rotate)
    rotate.set_defaults(handler=_cmd_keys_rotate)
    retire = actions.add_parser(
        "retire", help="drop master keys that no key row uses from the key file"
    )
    _config_arg(retire)
    retire.set_defaults(handler=_cmd_keys_retire)
    export = actions.add_parser(
        "export-audit-key",
        help="write the audit chain key alone to a new file (mode 0600) for an auditor",
        description="The file lets `clindav audit verify --audit-key FILE` check the chain "
        "without the master key; it decrypts nothing (docs/AUDIT.md).",
    )
    export.add_argument("--out", type=Path, required=True, help="new file to write")
    _config_arg(export)
    export.set_defaults(handler=_cmd_keys_export_audit_key)


def _open_services(args: argparse.Namespace) -> Services:
    from gateway.app import build_services

    return build_services(_settings(args))


def _open_audit(args: argparse.Namespace) -> tuple[AuditLog, sessionmaker]:
    """The audit trail as the audit commands see it: database access, no master key.

    Reading events (export, tail, reports) needs nothing more, so an auditor can
    run them without the key file (docs/AUDIT.md).  Only a command that sets
    ``needs_chain_key`` (``audit verify``) gets the chain key: from
    ``--audit-key FILE``, or else derived from the master key on the gateway host.
    """
    from gateway.records.audit import AuditLog

    sessions = _sessions(args)
    if not getattr(args, "needs_chain_key", False):
        return AuditLog(sessions, None), sessions
    if getattr(args, "audit_key", None) is not None:
        from gateway.storage.keys import load_audit_key_file

        return AuditLog(sessions, load_audit_key_file(args.audit_key)), sessions
    return AuditLog(sessions, _audit_chain_key(args, sessions)), sessions


def _audit_chain_key(args: argparse.Namespace, sessions: sessionmaker) -> bytes:
    from gateway.app import load_master_keys
    from gateway.records.audit import AUDIT_SEED
    from gateway.storage.keystore import KeyStore

    return KeyStore(sessions, load_master_keys(_settings(args))).seed(AUDIT_SEED)


def _settings(args: argparse.Namespace) -> Settings:
    from gateway.settings import load_settings

    return load_settings(args.config or DEFAULT_CONFIG)


def _sessions(args: argparse.Namespace) -> sessionmaker:
    from gateway.db import make_engine, make_sessions, prepare_database

    settings = _settings(args)
    url = settings.sqlalchemy_url()
    prepare_database(url)  # an older schema is refused: `clindav upgrade` brings it forward
    return make_sessions(make_engine(url))


def _cmd_init(args: argparse.Namespace) -> int:
    from gateway.admin.instance import init_instance

    config = init_instance(args.folder, args.hostname)
    print(f"created instance: {config}")
    print(f"clients trust its certificate by importing {config.parent / 'tls' / 'cert.pem'}")
    print(
        f"add a user:  clindav user add NAME --group clinicians --password-stdin --config {config}"
    )
    print(f"serve it:    clindav serve --config {config}")
    return 0


def _hostname(text: str) -> str:
    from gateway.admin.tls import check_hostname

    try:
        return check_hostname(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker_count(text: str) -> int:
    if not text.isdigit() or int(text) > 64:
        raise argparse.ArgumentTypeError("a whole number from 0 to 64")
    return int(text)


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.admin.instance import init_instance
    from gateway.app import build_services
    from gateway.server.http import LISTEN_BACKLOG, check_listen
    from gateway.server.workers import listening_sockets, run_workers

    if args.config is None and not DEFAULT_CONFIG.exists():
        print(f"no instance yet: creating the embedded default in {DEFAULT_INSTANCE.resolve()}")
        init_instance(DEFAULT_INSTANCE)
    settings = _settings(args)
    if args.workers is not None:
        try:
            settings = settings.with_workers(args.workers)
        except ValueError as exc:
            raise ConfigError.single("command line", "--workers", str(exc)) from None
    logging.getLogger().setLevel(settings.log_level.upper())
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    tls = not args.no_tls
    check_listen(settings, host=host, tls=tls)  # before any socket is bound
    # Checks, migrations and the temp-file sweep run once, before any worker serves.
    services = build_services(settings)
    workers = settings.process_count()
    _mark_running(settings)
    if workers == 1:
        server = _worker_server(services, host=host, port=port, tls=tls, listener=None)
        _announce(args, server.bind_addr[:2], services, workers)
        _serve_with_background(server, services, background=True)
        return 0
    sockets = listening_sockets(host, port, workers, backlog=LISTEN_BACKLOG)
    _announce(args, sockets[0].getsockname()[:2], services, workers)
    services.sessions.kw["bind"].dispose()  # no pooled connection crosses a fork

    def serve(index: int, listener: socket.socket) -> None:
        own = build_services(settings, sweep_temp_files=False)
        server = _worker_server(own, host=host, port=port, tls=tls, listener=listener)
        # One process runs the trash sweeper and the audit anchor.
        _serve_with_background(server, own, background=index == 0)

    return run_workers(sockets, serve)


def _mark_running(settings: Settings) -> None:
    """The pid file for `clindav reload` and the metrics values folder, both gone at exit.

    Before any fork: the workers' metrics land where a scrape finds them.  The
    exit handler runs in this process only (workers leave with ``os._exit``).
    """
    import atexit

    from gateway.server import metrics
    from gateway.server.reload import remove_pid_file, write_pid_file

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before serving: nothing to reload
    write_pid_file(settings)
    metrics.enable()
    atexit.register(remove_pid_file, settings)
    atexit.register(metrics.disable)


def _worker_server(
    services: Services, *, host: str, port: int, tls: bool, listener: socket.socket | None
) -> Server:
    from gateway.app import build_app
    from gateway.server.http import make_server

    server = make_server(
        services.settings,
        build_app(services),
        host=host,
        port=port,
        tls=tls,
        audit=services.audit,
        listener=listener,
    )
    server.prepare()
    return server


def _announce(
    args: argparse.Namespace, address: tuple[str, int], services: Services, workers: int
) -> None:
    bound_host, bound_port = address
    scheme = "http" if args.no_tls else "https"
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = (args.config or DEFAULT_CONFIG).resolve()
    print(f"clindav serving {scheme}://{shown}:{bound_port}/", flush=True)
    print(f"shares: {', '.join(s.url + '/' for s in services.shares.values())}", flush=True)
    if workers > 1:
        print(f"worker processes: {workers}", flush=True)
    print(
        f"add a user: clindav user add NAME --group clinicians --password-stdin --config {config}",
        flush=True,
    )


def _serve_with_background(server: Server, services: Services, *, background: bool) -> None:
    from gateway.records.scheduler import AuditAnchor, TrashSweeper
    from gateway.server.http import run_until_signalled
    from gateway.server.reload import reload_policy

    settings = services.settings
    threads: list[TrashSweeper | AuditAnchor] = []
    if background:
        threads = [
            TrashSweeper(services, settings.trash.sweep_interval),
            AuditAnchor(services, settings.audit.anchor_interval),
        ]
    for thread in threads:
        thread.start()
    try:
        run_until_signalled(server, lambda: reload_policy(services))
    finally:
        for thread in threads:
            thread.stop()


def _cmd_reload(args: argparse.Namespace) -> int:
    from gateway.app import load_checked_policy
    from gateway.server.reload import signal_reload

    settings = _settings(args)
    load_checked_policy(settings)  # an invalid file is refused here, before any signal
    pid = signal_reload(settings)
    print(f"sent SIGHUP to the gateway (pid {pid}); its log confirms the reload")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from gateway.admin.migrate import unmigrated_report
    from gateway.app import compare_keys_offline, load_checked_policy, load_master_keys

    settings = _settings(args)
    policy = load_checked_policy(settings)
    load_master_keys(settings)
    keys_note = compare_keys_offline(settings)  # a key that is not this instance's fails here
    if settings.auth.ldap is not None:
        from gateway.auth.ldap import LdapDirectory, group_map_warnings

        LdapDirectory(settings.auth.ldap, settings.resolve)  # CA file and bind password, offline
        for warning in group_map_warnings(settings.auth.ldap.group_map, policy.named_groups()):
            print(f"clindav: warning: {warning}", file=sys.stderr)
    print(f"{(args.config or DEFAULT_CONFIG)}: settings, policy and stage options are valid")
    print(keys_note)
    unmigrated_report(settings, sys.stdout)  # legacy files awaiting `clindav migrate`
    return 0


def _cmd_keys_status(args: argparse.Namespace) -> int:
    from gateway.admin.rotation import key_usage
    from gateway.app import load_master_keys

    masters = load_master_keys(_settings(args))
    usage = key_usage(_sessions(args))
    print("key id\tstate\trows")
    for key_id in sorted(set(masters.keys) | set(usage)):
        state = "active" if key_id == masters.active_id else "loaded"
        if key_id not in masters.keys:
            state = "MISSING"
        print(f"{key_id}\t{state}\t{usage[key_id]}")
    return 0 if all(k in masters.keys for k in usage) else 1


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    from gateway.admin.rotation import rotate

    source = _file_key_source(_settings(args))
    report = rotate(source, _sessions(args))
    if report.new_key_id:
        print(f"new master key {report.new_key_id} added to {source.path}")
    print(f"re-wrapped {report.rewrapped} key rows; no stored file was rewritten")
    print(
        "running gateways pick up the new key on their next write; "
        "then `clindav keys retire` drops keys no row uses"
    )
    return 0


def _file_key_source(settings: Settings) -> FileKeySource:
    from gateway.storage.keys import FileKeySource, key_source

    source = key_source(settings)
    if not isinstance(source, FileKeySource):
        raise ConfigError.single(
            "settings",
            "keys.env",
            "rotation writes the key file; keys from the environment "
            "are rotated by whoever sets the variable",
        )
    return source


def _cmd_keys_retire(args: argparse.Namespace) -> int:
    from gateway.admin.rotation import key_usage, retire_unused

    source = _file_key_source(_settings(args))
    retired = retire_unused(source, _sessions(args))
    if retired:
        print(f"retired unused master keys: {', '.join(retired)}")
    else:
        print("no unused master keys to retire")
    still = sorted(
        k for k, n in key_usage(_sessions(args)).items() if n and k != source.load().active_id
    )
    if still:
        print(f"still in use, kept: {', '.join(still)} (run `clindav keys rotate` to finish)")
    return 0


def _cmd_keys_export_audit_key(args: argparse.Namespace) -> int:
    from gateway.storage.keys import write_audit_key_file

    try:
        write_audit_key_file(args.out, _audit_chain_key(args, _sessions(args)))
    except FileExistsError:
        raise ConfigError.single(str(args.out), "--out", "exists; choose a new file") from None
    print(f"audit chain key written to {args.out} (mode 0600)")
    print(f"the auditor runs: clindav audit verify --audit-key {args.out}")
    return 0


def _cmd_fsck(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from gateway.admin.fsck import fsck
    from gateway.app import build_services

    findings = fsck(build_services(_settings(args)), repair=args.repair)
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in findings], indent=1))
    else:
        for f in findings:
            where = f"{f.share}:{f.logical_path}" if f.logical_path else f"{f.share}:{f.location}"
            print(f"{f.kind}\t{where}\t{f.detail}".rstrip())
        print(f"{len(findings)} findings" + (" (problem files quarantined)" if args.repair else ""))
    return 1 if findings else 0


def _cmd_user_add(args: argparse.Namespace) -> int:
    from gateway.auth.users import UserStore

    password = _new_password(args)
    if password is None:
        return 2
    UserStore(_sessions(args)).add(args.name, password, args.group)
    print(f"added user {args.name} (groups: {', '.join(args.group)})")
    _warn_about_groups(args, args.group)
    return 0


def _new_password(args: argparse.Namespace) -> str | None:
    """From --password-stdin, else asked twice (no echo) on a terminal; None: error printed."""
    import getpass

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("clindav: error: no password on standard input", file=sys.stderr)
            return None
        return password
    if not sys.stdin.isatty():
        print(
            "clindav: error: no terminal to ask for the password on: use --password-stdin",
            file=sys.stderr,
        )
        return None
    password = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("The same password again: ") != password:
        print("clindav: error: the passwords differ; nothing was changed", file=sys.stderr)
        return None
    return password


def _warn_about_groups(args: argparse.Namespace, groups: list[str]) -> None:
    """Groups that give nothing: not named by the policy, or local accounts under LDAP."""
    from gateway.app import load_checked_policy
    from gateway.auth.users import policy_groups

    settings = _settings(args)
    try:
        named = policy_groups(load_checked_policy(settings))
    except ConfigError:
        named = set(groups)  # an invalid policy is check-config's to report, not ours
    if settings.auth.backend == "ldap":
        print(
            "warning: auth.backend is ldap: local accounts cannot log in until it is "
            "set back to local",
            file=sys.stderr,
        )
    unused = sorted(set(groups) - named)
    if unused:
        print(
            f"warning: the policy ({settings.policy}) names no group {', '.join(unused)}: "
            "it gives this user nothing",
            file=sys.stderr,
        )


def _cmd_user_list(args: argparse.Namespace) -> int:
    from gateway.auth.users import UserStore

    for name, groups, disabled in UserStore(_sessions(args)).list():
        print(f"{name}\t{','.join(groups)}" + ("\tdisabled" if disabled else ""))
    return 0


def _cmd_user_passwd(args: argparse.Namespace) -> int:
    from gateway.auth.users import UserStore

    password = _new_password(args)
    if password is None:
        return 2
    UserStore(_sessions(args)).set_password(args.name, password)
    print(f"password of {args.name} changed")
    return 0


def _cmd_user_set_groups(args: argparse.Namespace) -> int:
    from gateway.auth.users import UserStore

    UserStore(_sessions(args)).set_groups(args.name, args.group)
    print(f"groups of {args.name}: {', '.join(args.group)}")
    _warn_about_groups(args, args.group)
    return 0


def _cmd_user_toggle(args: argparse.Namespace) -> int:
    from gateway.auth.users import UserStore

    UserStore(_sessions(args)).set_disabled(args.name, args.disabled)
    print(f"{'disabled' if args.disabled else 'enabled'} user {args.name}")
    return 0


def _cmd_user_remove(args: argparse.Namespace) -> int:
    from gateway.auth.users import UserStore

    UserStore(_sessions(args)).remove(args.name)
    print(f"removed user {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
