"""What a running ``clindav`` command is given: its arguments and the instance, built lazily.

:class:`CommandContext` builds the settings, the database or the running
services the first time a command asks, and only up to the level its spec
declares (:class:`~gateway.cli.spec.Needs`): a command that reads the audit
trail never loads the master key, the shares or the WebDAV layer.  Asking for
more than declared is a programming error, raised at once.  Light on import:
the parser is built before any command runs, so what a level needs is
imported when it is first built.
"""

from __future__ import annotations

import argparse
import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.spec import DEFAULT_CONFIG, Command, Needs

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from gateway.services import Services
    from gateway.settings import Settings


class CommandContext:
    """The instance as one command may see it (``needs`` of its spec)."""

    def __init__(self, command: Command, args: argparse.Namespace, words: str) -> None:
        self.command = command
        self.args = args
        self.words = words  # "trash purge": for messages

    @property
    def config_path(self) -> Path:
        return self.args.config or DEFAULT_CONFIG

    def _allow(self, level: Needs) -> None:
        if self.command.needs < level:
            raise RuntimeError(
                f"`clindav {self.words}` declares needs={self.command.needs.name} "
                f"but asked for {level.name}"
            )

    @cached_property
    def settings(self) -> Settings:
        self._allow(Needs.SETTINGS)
        from gateway.settings import load_settings

        _check_settings_path(self.config_path, given=self.args.config is not None)
        return load_settings(self.config_path)

    @cached_property
    def sessions(self) -> sessionmaker:
        """The database, its schema created when new; an older schema is refused
        (`clindav upgrade` brings it forward)."""
        self._allow(Needs.DATABASE)
        from gateway.db import make_engine, make_sessions, prepare_database

        url = self.settings.sqlalchemy_url()
        prepare_database(url)
        return make_sessions(make_engine(url))

    @cached_property
    def services(self) -> Services:
        self._allow(Needs.SERVICES)
        from gateway.app import build_services

        return build_services(self.settings)

    def close(self) -> None:
        """Release the database connections this command opened.

        A process ends after its command, but ``main`` may also run inside a
        longer-lived one (the test suite): no pooled connection outlives it.
        """
        built = self.__dict__  # the cached properties this command asked for
        if "services" in built:
            self.services.sessions.kw["bind"].dispose()
        if "sessions" in built:
            self.sessions.kw["bind"].dispose()

    def audit_chain_key(self) -> bytes:
        """The audit chain key, derived from the master key on the gateway host."""
        from gateway.app import load_master_keys
        from gateway.records.audit import AUDIT_SEED
        from gateway.storage.keystore import KeyStore

        return KeyStore(self.sessions, load_master_keys(self.settings)).seed(AUDIT_SEED)

    def show(self, data: Any, lines: list[str]) -> None:
        """``data`` as JSON with ``--json``, else ``lines`` for people."""
        print(json.dumps(data, indent=1, default=str) if self.args.json else "\n".join(lines))


def _check_settings_path(path: Path, *, given: bool) -> None:
    """Refuse a folder given for the settings file, or the default one missing, saying
    what to type instead (a missing file named with --config is the reader's to report)."""
    from gateway.errors import ConfigError

    if path.is_dir():
        raise ConfigError.single(
            str(path),
            "(file)",
            f"is a folder: name the settings file in it, --config {path / DEFAULT_CONFIG.name}",
        )
    if not given and not path.exists():
        raise ConfigError.single(
            str(path),
            "(file)",
            f"not found in {Path.cwd()}: run the command in the folder that holds "
            f"{DEFAULT_CONFIG.parent}/, or name the settings file with --config FILE",
        )
