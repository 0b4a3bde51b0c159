"""``clindav serve``, ``clindav reload`` and ``clindav check-config``: run the gateway,
make it reload its policy, and check offline what it would run on."""

from __future__ import annotations

import argparse
import atexit
import logging
import signal
import socket
import sys

from gateway.admin.instance import init_instance
from gateway.admin.migrate import unmigrated_report
from gateway.app import (
    build_app,
    build_services,
    check_backing_folders,
    compare_keys_offline,
    load_checked_policy,
    load_master_keys,
)
from gateway.cli.context import CommandContext
from gateway.cli.spec import DEFAULT_CONFIG, DEFAULT_INSTANCE
from gateway.errors import ConfigError
from gateway.records.scheduler import AuditAnchor, TrashSweeper
from gateway.server import metrics
from gateway.server.http import (
    LISTEN_BACKLOG,
    Server,
    check_listen,
    check_port_free,
    make_server,
    run_until_signalled,
)
from gateway.server.reload import reload_policy, remove_pid_file, signal_reload, write_pid_file
from gateway.server.workers import listening_sockets, run_workers
from gateway.services import Services
from gateway.settings import Settings


def serve(ctx: CommandContext, args: argparse.Namespace) -> int:
    if args.config is None and not DEFAULT_CONFIG.exists():
        print(f"no instance yet: creating the embedded default in {DEFAULT_INSTANCE.resolve()}")
        init_instance(DEFAULT_INSTANCE)
    settings = ctx.settings
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
    check_port_free(host, port)
    # Checks, migrations and the temp-file sweep run once, before any worker serves.
    services = build_services(settings)
    workers = settings.process_count()
    _mark_running(settings)
    if workers == 1:
        server = worker_server(services, host=host, port=port, tls=tls, listener=None)
        _announce(ctx, server.bind_addr[:2], services, workers)
        _serve_with_background(server, services, background=True)
        return 0
    sockets = listening_sockets(host, port, workers, backlog=LISTEN_BACKLOG)
    _announce(ctx, sockets[0].getsockname()[:2], services, workers)
    services.sessions.kw["bind"].dispose()  # no pooled connection crosses a fork

    def serve_one(index: int, listener: socket.socket) -> None:
        own = build_services(settings, sweep_temp_files=False)
        server = worker_server(own, host=host, port=port, tls=tls, listener=listener)
        # One process runs the trash sweeper and the audit anchor.
        _serve_with_background(server, own, background=index == 0)

    return run_workers(sockets, serve_one)


def _mark_running(settings: Settings) -> None:
    """The pid file for `clindav reload` and the metrics values folder, both gone at exit.

    Before any fork: the workers' metrics land where a scrape finds them.  The
    exit handler runs in this process only (workers leave with ``os._exit``).
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before serving: nothing to reload
    write_pid_file(settings)
    metrics.enable()
    atexit.register(remove_pid_file, settings)
    atexit.register(metrics.disable)


def worker_server(
    services: Services, *, host: str, port: int, tls: bool, listener: socket.socket | None
) -> Server:
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
    ctx: CommandContext, address: tuple[str, int], services: Services, workers: int
) -> None:
    bound_host, bound_port = address
    scheme = "http" if ctx.args.no_tls else "https"
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = ctx.config_path.resolve()
    print(f"clindav serving {scheme}://{shown}:{bound_port}/", flush=True)
    print(f"staff console: {scheme}://{shown}:{bound_port}/app/", flush=True)
    print(f"shares: {', '.join(s.url + '/' for s in services.shares.values())}", flush=True)
    if workers > 1:
        print(f"worker processes: {workers}", flush=True)
    print(
        f"add a user: clindav user add NAME --group clinicians --password-stdin --config {config}",
        flush=True,
    )


def background_threads(services: Services) -> list[TrashSweeper | AuditAnchor]:
    """The trash sweeper and the audit anchor: one serving process runs them (not started)."""
    settings = services.settings
    return [
        TrashSweeper(services, settings.trash.sweep_interval),
        AuditAnchor(services, settings.audit.anchor_interval),
    ]


def _serve_with_background(server: Server, services: Services, *, background: bool) -> None:
    threads = background_threads(services) if background else []
    for thread in threads:
        thread.start()
    try:
        run_until_signalled(server, lambda: reload_policy(services))
    finally:
        for thread in threads:
            thread.stop()


def reload(ctx: CommandContext, args: argparse.Namespace) -> int:
    settings = ctx.settings
    load_checked_policy(settings)  # an invalid file is refused here, before any signal
    pid = signal_reload(settings)
    print(f"sent SIGHUP to the gateway (pid {pid}); its log confirms the reload")
    return 0


def check_config(ctx: CommandContext, args: argparse.Namespace) -> int:
    settings = ctx.settings
    policy = load_checked_policy(settings)
    load_master_keys(settings)
    check_backing_folders(settings)  # a mistyped share path, before `serve` meets it
    keys_note = compare_keys_offline(settings)  # a key that is not this instance's fails here
    if settings.auth.ldap is not None:
        from gateway.auth.ldap import LdapDirectory, group_map_warnings  # ldap3 when configured

        LdapDirectory(settings.auth.ldap, settings.resolve)  # CA file and bind password, offline
        for warning in group_map_warnings(settings.auth.ldap.group_map, policy.named_groups()):
            print(f"clindav: warning: {warning}", file=sys.stderr)
    print(f"{ctx.config_path}: settings, policy and stage options are valid")
    print(keys_note)
    unmigrated_report(settings, sys.stdout)  # legacy files awaiting `clindav migrate`
    return 0
