"""Wiring: the only module that builds WsgiDAV's configuration.

:func:`build_services` turns validated settings into the running parts
(database, policy, authenticator, shares) and performs every start-up check
that must fail closed: the master key, the backing folders, the database.
:func:`build_app` generates the WsgiDAV config from ours: Basic auth only (our
middleware; digest cannot work with directory binds), no directory browser,
locks in memory or Redis, dead properties in our database, our provider per
share and a read-only virtual root.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.orm import sessionmaker
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from gateway.auth import Authenticator, LocalAuthenticator
from gateway.clock import SystemClock
from gateway.content import EncryptedContent, EncryptedNames
from gateway.crypto.names import NameCipher
from gateway.db import make_engine, make_sessions, migrate
from gateway.errors import ConfigError, ConfigProblem
from gateway.guard import PathGuard
from gateway.keys import MasterKeys, key_source
from gateway.keystore import KeyStore
from gateway.locks import DatabaseLockStorage, MemoryLockStorage, RedisLockStorage
from gateway.middleware import GatewayMiddleware
from gateway.pipeline import ENTRY_POINT_GROUP, StageOptionsError, StageRegistry
from gateway.policy import Policy, load_policy
from gateway.props import PROPERTY_SEED, DatabasePropertyManager, PropertyCipher
from gateway.provider import ShareProvider
from gateway.root import RootProvider
from gateway.services import Services, ShareRuntime
from gateway.settings import Settings
from gateway.storage import BackingStore, NameCodec, PlainNames, write_temp
from plugins.audit import AUDIT_SEED, AuditLog

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


def build_services(settings: Settings, *, sweep_temp_files: bool = True) -> Services:
    """Everything a serving process needs.

    ``sweep_temp_files``: remove temp files left by interrupted writes; only
    when no other process can be writing (not in a worker started beside others).
    """
    source = key_source(settings)
    masters = source.load()
    check_backing_folders(settings)
    policy = load_checked_policy(settings)
    url = settings.sqlalchemy_url()
    migrate(url)
    sessions = make_sessions(make_engine(url))
    keys = KeyStore(sessions, masters, source)
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
        authenticator=_authenticator(settings, sessions),
        keys=keys,
        shares=shares,
        clock=SystemClock(),
    )
    policy.attach(services)
    return services


def _authenticator(settings: Settings, sessions: sessionmaker) -> Authenticator:
    if settings.auth.backend == "ldap" and settings.auth.ldap is not None:
        from gateway.ldapauth import LdapAuthenticator  # ldap3 only when configured

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


def build_app(services: Services) -> PathGuard:
    report_unmigrated(services)
    return PathGuard(WsgiDAVApp(wsgidav_config(services)), services)


def report_unmigrated(services: Services) -> None:
    """Warn, per share, of legacy files awaiting `clindav migrate` (counted in the background)."""
    from gateway.migrate import log_unmigrated

    threading.Thread(
        target=log_unmigrated, args=(services,), name="clindav-legacy-count", daemon=True
    ).start()
