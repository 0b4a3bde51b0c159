"""Wiring: the one place that builds a running clindav from its settings.

:func:`build_services` turns validated settings into the running parts
(database, policy, authenticator, shares) for ``clindav serve`` and every
command alike, and performs every start-up check that must fail closed: the
master key, the backing folders, the database.  :func:`readonly_services`
builds the same parts without writing anything (dry runs, ``check-config``).
This is the only module that builds WsgiDAV's configuration:
:func:`build_app` generates the WsgiDAV config from ours: Basic auth only (our
middleware; digest cannot work with directory binds), no directory browser,
locks in memory or Redis, dead properties in our database, our provider per
share and a read-only virtual root.  :func:`build_app` also mounts the staff
console at ``/app/`` (gateway/console/) and the Nextcloud apps' door
(gateway/nextcloud/).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from gateway import decoding
from gateway.auth.base import Authenticator, LocalAuthenticator
from gateway.change import ChangeSessions
from gateway.clock import instance_clock
from gateway.console.mount import CSRF_SEED, ConsoleMount
from gateway.crypto.names import NameCipher
from gateway.dav.guard import PathGuard
from gateway.dav.locks import DatabaseLockStorage, MemoryLockStorage
from gateway.dav.middleware import GatewayMiddleware
from gateway.dav.props import PROPERTY_SEED, DatabasePropertyManager, PropertyCipher
from gateway.dav.provider import ShareProvider
from gateway.dav.root import RootProvider
from gateway.db import ShareKey, make_engine, make_sessions, prepare_database, schema_state
from gateway.errors import ConfigError, ConfigProblem
from gateway.nextcloud.mount import NextcloudMount
from gateway.pipeline import StageOptionsError
from gateway.policy import Policy, load_policy
from gateway.records.audit import AUDIT_SEED, AuditLog
from gateway.server.health import Operations
from gateway.server.lazy import LazyApp, WsgiApp
from gateway.services import Services, ShareRuntime
from gateway.settings import Settings
from gateway.stages import ENTRY_POINT_GROUP, StageRegistry, check_upload_formats
from gateway.storage.backing import BackingStore, NameCodec, PlainNames, write_temp
from gateway.storage.content import EncryptedContent, EncryptedNames
from gateway.storage.keys import MasterKeys, key_source, wrong_key_error
from gateway.storage.keystore import KeyStore
from gateway.storage.legacy import log_unmigrated
from gateway.storage.marker import MarkerWatch, Mode, check_instance
from gateway.uploads.mount import UploadMount

log = logging.getLogger("clindav")


def load_checked_policy(settings: Settings) -> Policy:
    """The policy, its stages and their options checked, and the settings that name rows of
    the format table (``uploads.formats``): what every serving process, ``check-config``
    and ``reload`` check before they act."""
    check_upload_formats(settings)
    try:
        registry = StageRegistry.default()
    except StageOptionsError as exc:
        problems = [ConfigProblem(ENTRY_POINT_GROUP, key, text) for key, text in exc.problems]
        raise ConfigError(problems) from None
    return load_policy(settings.resolve(settings.policy), registry, list(settings.shares))


def check_backing_folders(settings: Settings) -> None:
    problems = []
    for name, share in settings.shares.items():
        folder = settings.resolve(share.path)
        problem = _folder_problem(folder)
        if problem:
            problems.append(ConfigProblem("settings", f"shares.{name}.path", problem))
    if problems:
        raise ConfigError(problems)


def _folder_problem(folder: Path) -> str | None:
    """Why the gateway cannot store into ``folder``, found by trying (root ignores modes)."""
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        temp = write_temp(folder, [b""])
        temp.unlink()
    except OSError as exc:
        return f"{folder} is not writable ({exc.strerror})"
    return None


def load_master_keys(settings: Settings) -> MasterKeys:
    return key_source(settings).load()


def check_identity(
    settings: Settings, sessions: sessionmaker, keys: KeyStore, mode: Mode = "serve"
) -> dict[str, MarkerWatch]:
    """The master keys and the shares are this instance's (or ConfigError); the watches.

    A key with a known id and other bytes is refused (gateway/storage/keystore.py);
    so is a share without this instance's marker (gateway/storage/marker.py).
    """
    keys.verify()
    roots = {name: settings.resolve(conf.path) for name, conf in settings.shares.items()}
    return check_instance(sessions, keys, roots, mode)


def compare_keys_offline(settings: Settings) -> str:
    """``check-config``: the master keys against the database, changing nothing.

    Raises ConfigError for a key that is not this instance's; returns a line
    saying what was compared (a database that cannot be reached is no error
    here: the gateway refuses to start without it anyway).
    """
    source = key_source(settings)
    masters = source.load()
    url = settings.sqlalchemy_url()
    if _sqlite_file_missing(url):
        return "no database yet: the master keys are compared with it when it is created"
    engine = make_engine(url)
    try:
        state = schema_state(url)
        if state.current is None:
            return "the database is empty: the master keys are recorded when the gateway starts"
        wrong = KeyStore(make_sessions(engine), masters, source).mismatched(masters, record=False)
    except SQLAlchemyError as exc:
        return f"database not reachable ({type(exc).__name__}): master keys not compared with it"
    finally:
        engine.dispose()
    if wrong:
        raise wrong_key_error(source, wrong)
    if state.current != state.head:
        return (
            f"the master keys match this instance; the database is at schema {state.current} "
            f"(this clindav needs {state.head}): back it up and run `clindav upgrade`"
        )
    return "the master keys match this instance"


def _sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist yet."""
    database = make_url(url)
    return database.drivername.startswith("sqlite") and not Path(database.database or "").exists()


def build_services(settings: Settings, *, sweep_temp_files: bool = True) -> Services:
    """Everything a serving process or a command needs.

    ``sweep_temp_files``: remove temp files left by interrupted writes; only
    when no other process can be writing (not in a worker started beside others).
    """
    source = key_source(settings)
    masters = source.load()
    decoding.configure(settings.limits)
    check_backing_folders(settings)
    policy = load_checked_policy(settings)
    url = settings.sqlalchemy_url()
    prepare_database(url)
    sessions = make_sessions(make_engine(url))
    keys = KeyStore(sessions, masters, source)
    markers = check_identity(settings, sessions, keys)
    shares = _shares(settings, keys, lambda name: _names(policy, keys, name))
    for share in shares.values() if sweep_temp_files else ():
        swept = share.store.sweep_temp_files()
        if swept:
            log.warning(
                "share %s: removed %d temp files left by an interrupted write", share.name, swept
            )
    audit = AuditLog(sessions, keys.seed(AUDIT_SEED))
    authenticator = _authenticator(settings, sessions, policy)
    services = _services(settings, policy, sessions, keys, shares, audit, authenticator, markers)
    authenticator.app_passwords = services.app_passwords  # the Nextcloud apps' devices
    return services


def readonly_services(settings: Settings) -> Services:
    """Services that write nothing: for ``clindav migrate --dry-run`` and ``check-config``.

    Unlike :func:`build_services` this creates no seed, sweeps no temp file,
    runs no schema migration and checks no share marker.  A share whose name
    seed does not exist yet has never had a name written by clindav: every
    entry in it is legacy, and a throwaway name key stands in for length checks.
    """
    masters = key_source(settings).load()
    policy = load_checked_policy(settings)
    url = settings.sqlalchemy_url()
    sessions = make_sessions(make_engine(url))
    keys = KeyStore(sessions, masters)
    seeded: set[str] = set()
    if not _sqlite_file_missing(url):  # (connecting would create it)
        with sessions() as session:
            seeded = set(session.scalars(select(ShareKey.share)))
    shares = _shares(settings, keys, lambda name: _names(policy, keys, name, seeded))
    audit = AuditLog(sessions, os.urandom(32))  # never appends: nothing is written
    authenticator = LocalAuthenticator(sessions)  # never asked: nothing is served
    return _services(settings, policy, sessions, keys, shares, audit, authenticator, {})


def _services(
    settings: Settings,
    policy: Policy,
    sessions: ChangeSessions,
    keys: KeyStore,
    shares: dict[str, ShareRuntime],
    audit: AuditLog,
    authenticator: Authenticator,
    markers: dict[str, MarkerWatch],
) -> Services:
    """The services of one process, handed to the policy's stages."""
    services = Services(
        settings=settings,
        sessions=sessions,
        policy=policy,
        clock=instance_clock(),
        keys=keys,
        shares=shares,
        audit=audit,
        authenticator=authenticator,
        markers=markers,
    )
    policy.attach(services)
    return services


def _shares(
    settings: Settings, keys: KeyStore, names: Callable[[str], NameCodec]
) -> dict[str, ShareRuntime]:
    content = EncryptedContent(keys)
    return {
        name: ShareRuntime(
            name=name,
            url=conf.url,
            store=BackingStore(settings.resolve(conf.path), names(name)),
            content=content,
        )
        for name, conf in settings.shares.items()
    }


def _authenticator(settings: Settings, sessions: sessionmaker, policy: Policy) -> Authenticator:
    if settings.auth.backend == "ldap" and settings.auth.ldap is not None:
        from gateway.auth.ldap import LdapAuthenticator, group_map_warnings  # ldap3 when configured

        for warning in group_map_warnings(settings.auth.ldap.group_map, policy.named_groups()):
            log.warning("settings: %s", warning)
        return LdapAuthenticator(settings.auth.ldap, settings.resolve)
    return LocalAuthenticator(sessions, settings.auth.throttle)


def _names(
    policy: Policy, keys: KeyStore, share: str, seeded: Container[str] | None = None
) -> NameCodec:
    """The share's name codec.  ``seeded``: the shares that have a name seed, for
    services that create none; a share without one gets a throwaway key."""
    if policy.share(share).names == "plain":
        return PlainNames()
    if seeded is not None and share not in seeded:
        return EncryptedNames(NameCipher(os.urandom(64)))
    return EncryptedNames(NameCipher.for_share(keys.seed(share), share))


def wsgidav_config(services: Services) -> dict[str, Any]:
    settings = services.settings
    mapping: dict[str, Any] = {"/": RootProvider(services)}
    for share in services.shares.values():
        mapping[share.url] = ShareProvider(services, share)
    return {
        "provider_mapping": mapping,
        "middleware_stack": [GatewayMiddleware, RequestResolver],
        "http_authenticator": {"accept_basic": True, "accept_digest": False},
        "dir_browser": {"enable": False},
        "lock_storage": _lock_storage(settings.locks.storage, services),
        "property_manager": DatabasePropertyManager(
            services.sessions, PropertyCipher(services.keys.seed(PROPERTY_SEED))
        ),
        "block_size": settings.server.block_size,
        "add_header_MS_Author_Via": True,
        "suppress_version_info": True,
        "verbose": 1,
        "logging": {"enable": False},
        "clindav": {"services": services},
    }


def _lock_storage(storage: str, services: Services) -> Any:
    if storage == "memory":
        return MemoryLockStorage(services.sessions)
    if storage == "database":
        return DatabaseLockStorage(services.sessions)

    from gateway.dav.redislocks import RedisLockStorage  # redis-py only where it is used

    url = urlparse(storage)
    db = int(url.path.strip("/") or 0)
    return RedisLockStorage(
        services.sessions,
        host=url.hostname or "127.0.0.1",
        port=url.port or 6379,
        db=db,
        password=url.password,
    )


def build_app(services: Services) -> Operations:
    report_unmigrated(services)
    dav = WsgiDAVApp(wsgidav_config(services))
    locks = dav.lock_manager.storage if dav.lock_manager is not None else None
    secret = services.keys.seed(CSRF_SEED)  # now: a key or database failure stops the start

    def console() -> WsgiApp:
        from gateway.console.app import create_console  # Flask, at the first console request

        return create_console(services, dav.lock_manager, secret)

    def uploads() -> WsgiApp:
        from gateway.uploads.app import create_uploads  # Flask, at the first patient request

        return create_uploads(services)

    pages = UploadMount(ConsoleMount(dav, LazyApp(console)), LazyApp(uploads))
    return Operations(PathGuard(NextcloudMount(pages, services), services), services, locks)


def report_unmigrated(services: Services) -> None:
    """Warn, per share, of legacy files awaiting `clindav migrate` (counted in the background)."""
    stores = {name: share.store for name, share in services.shares.items()}
    threading.Thread(
        target=log_unmigrated, args=(stores,), name="clindav-legacy-count", daemon=True
    ).start()
