"""``clindav init``: a complete, working instance in one folder.

Layout written into DIR::

    clindav.yaml        settings (every path in it relative to DIR)
    policy.yaml         a copy of the shipped default policy, to adapt
    keys/master.key     the master key, mode 0600
    tls/cert.pem, tls/key.pem   a self-signed certificate
    clindav.db          the SQLite database, created by the migrations
    shares/<name>/      backing folders of the practice's usual shares, each
                        marked as this instance's (``.clindav-share.*``, gateway/storage/marker.py)

The share ``inbox`` is the Nextcloud apps' camera inbox (``nextcloud.inbox_share``,
the policy's ``hold`` stage): phones can upload into it as soon as the gateway runs
(docs/NEXTCLOUD-APPS.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from gateway.admin.tls import write_self_signed
from gateway.app import check_identity
from gateway.db import make_engine, make_sessions, migrate
from gateway.errors import ConfigError
from gateway.settings import Settings, dump_settings, load_settings
from gateway.storage.keys import key_source, write_new_key_file
from gateway.storage.keystore import KeyStore
from policies import shipped_policy

CONFIG_NAME = "clindav.yaml"
DEFAULT_SHARES = ("clinical", "referrals", "teaching", "documents", "inbox")
INBOX_SHARE = "inbox"


def init_instance(folder: Path, hostnames: Sequence[str] = ()) -> Path:
    """Create an instance in ``folder`` (new or empty); returns the settings file.

    ``hostnames``: names clients will connect to, put in the certificate.
    """
    folder = folder.resolve()
    if (folder / CONFIG_NAME).is_file():
        raise ConfigError.single(
            str(folder),
            "(folder)",
            f"holds an instance already: serve it with `clindav serve --config "
            f"{folder / CONFIG_NAME}`, or give init a new folder",
        )
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError.single(str(folder), "(folder)", "exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("keys", "tls", "shares"):
        (folder / sub).mkdir(mode=0o700)
    write_new_key_file(folder / "keys" / "master.key")
    write_self_signed(folder / "tls" / "cert.pem", folder / "tls" / "key.pem", hostnames=hostnames)
    shutil.copyfile(shipped_policy(), folder / "policy.yaml")
    for share in DEFAULT_SHARES:
        (folder / "shares" / share).mkdir(mode=0o700)
    settings = {
        "server": {
            "host": "127.0.0.1",
            "port": 8443,
            "tls": {"cert": "tls/cert.pem", "key": "tls/key.pem"},
        },
        "database_url": "sqlite:///clindav.db",
        "keys": {"file": "keys/master.key"},
        "policy": "policy.yaml",
        "shares": {s: {"url": f"/{s}", "path": f"shares/{s}"} for s in DEFAULT_SHARES},
        "nextcloud": {"inbox_share": INBOX_SHARE},
    }
    config = folder / CONFIG_NAME
    config.write_text(_HEADER + dump_settings(settings), encoding="utf-8")
    os.chmod(config, 0o600)
    loaded = load_settings(config)
    migrate(loaded.sqlalchemy_url())
    os.chmod(folder / "clindav.db", 0o600)
    _bind(loaded)
    return config


def _bind(settings: Settings) -> None:
    """Record the key-check value and the instance id; mark each share as this instance's."""
    engine = make_engine(settings.sqlalchemy_url())
    sessions = make_sessions(engine)
    source = key_source(settings)
    try:
        check_identity(settings, sessions, KeyStore(sessions, source.load(), source))
    finally:
        engine.dispose()


_HEADER = """\
# clindav settings. Every key is documented in docs/CONFIGURATION.md;
# `clindav check-config --config THIS_FILE` validates it offline.
"""
