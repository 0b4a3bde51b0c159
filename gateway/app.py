"""Wiring: the only module that builds WsgiDAV's configuration.

:func:`build_services` turns validated settings into the running parts
(database, policy, authenticator, shares) and performs every start-up check
that must fail closed: the master key, the backing folders, the database.
:func:`build_app` generates the WsgiDAV config from ours: Basic auth only (our
middleware; digest cannot work with directory binds), no directory browser,
locks in memory or Redis, dead properties in our database, our provider per
share and a read-only virtual root.  :func:`build_app` also mounts the staff
console at ``/app/`` (gateway/console/).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from gateway import decoding
from gateway.auth.base import Authenticator, LocalAuthenticator
from gateway.clock import instance_clock
from gateway.console.mount import ConsoleMount
from gateway.crypto.names import NameCipher
from gateway.dav.guard import PathGuard
from gateway.dav.locks import DatabaseLockStorage, MemoryLockStorage, RedisLockStorage
from gateway.dav.middleware import GatewayMiddleware
from gateway.dav.props import PROPERTY_SEED, DatabasePropertyManager, PropertyCipher
from gateway.dav.provider import ShareProvider
from gateway.dav.root import RootProvider
from gateway.db import make_engine, make_sessions, prepare_database, schema_state
from gateway.errors import ConfigError, ConfigProblem
from gateway.pipeline import ENTRY_POINT_GROUP, StageOptionsError, StageRegistry
from gateway.policy import Policy, load_policy
from gateway.records.audit import AUDIT_SEED, AuditLog
from gateway.server.health import Operations
from gateway.services import Services, ShareRuntime
from gateway.settings import Settings
from gateway.storage.backing import BackingStore, NameCodec, PlainNames, write_temp
from gateway.storage.content import EncryptedContent, EncryptedNames
from gateway.storage.keys import MasterKeys, key_source, wrong_key_error
from gateway.storage.keystore import KeyStore
from gateway.storage.marker import MarkerWatch, Mode, check_instance

log = logging.getLogger("clindav")


def load_checked_policy(settings: Settings) -> Policy:
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
    database = make_url(url)
    if database.drivername.startswith("sqlite") and not Path(database.database or "").exists():
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


def build_services(settings: Settings, *, sweep_temp_files: bool = True) -> Services:
    """Everything a serving process needs.

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
    content = EncryptedContent(keys)
    shares = {
        name: ShareRuntime(
            name=name,
            url=conf.url,
            store=BackingStore(settings.resolve(conf.path), _names(policy, keys, name)),
            content=content,
        )
        for name, conf in settings.shares.items()
    }
    for share in shares.values() if sweep_temp_files else ():
        swept = share.store.sweep_temp_files()
        if swept:
            log.warning(
                "share %s: removed %d temp files left by an interrupted write", share.name, swept
            )
    services = Services(
        settings=settings,
        sessions=sessions,
        policy=policy,
        audit=AuditLog(sessions, keys.seed(AUDIT_SEED)),
        authenticator=_authenticator(settings, sessions, policy),
        keys=keys,
        shares=shares,
        clock=instance_clock(),
        markers=markers,
    )
    policy.attach(services)
    return services


def _authenticator(settings: Settings, sessions: sessionmaker, policy: Policy) -> Authenticator:
    if settings.auth.backend == "ldap" and settings.auth.ldap is not None:
        from gateway.auth.ldap import LdapAuthenticator, group_map_warnings  # ldap3 when configured

        for warning in group_map_warnings(settings.auth.ldap.group_map, policy.named_groups()):
            log.warning("settings: %s", warning)
        return LdapAuthenticator(settings.auth.ldap, settings.resolve)
    return LocalAuthenticator(sessions, settings.auth.throttle)


def _names(policy: Policy, keys: KeyStore, share: str) -> NameCodec:
    if policy.share(share).names == "plain":
        return PlainNames()
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
    from gateway.console.app import create_console  # Flask is loaded by serving processes only

    report_unmigrated(services)
    dav = WsgiDAVApp(wsgidav_config(services))
    locks = dav.lock_manager.storage if dav.lock_manager is not None else None
    console = create_console(services, dav.lock_manager)
    return Operations(PathGuard(ConsoleMount(dav, console), services), services, locks)


def report_unmigrated(services: Services) -> None:
    """Warn, per share, of legacy files awaiting `clindav migrate` (counted in the background)."""
    from gateway.admin.migrate import log_unmigrated

    threading.Thread(
        target=log_unmigrated, args=(services,), name="clindav-legacy-count", daemon=True
    ).start()
