"""Master keys: where they come from, and refusing to run without a safe one.

Contract of a key source: :meth:`KeySource.load` returns the master keys by
key id and names the active one, or raises
:class:`~gateway.errors.ConfigError` (missing, unreadable, malformed, or a
key file that group or others can read).  The gateway refuses to start then:
it never runs unprotected.  Sources: a key file (default) or an environment
variable; a KMS can be added behind the same interface.

Key file format: one key per line, ``<key-id> <64 hex digits>``; the last
line is the active key (``clindav keys rotate`` appends).  Blank lines and
lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.errors import ConfigError, ServiceUnavailable
from gateway.settings import Settings

_LINE = re.compile(r"^([a-z0-9][a-z0-9-]{0,31})\s+([0-9a-f]{64})$")


@dataclass(frozen=True)
class MasterKeys:
    keys: dict[str, bytes]
    active_id: str

    @property
    def active(self) -> bytes:
        return self.keys[self.active_id]


class KeySource(Protocol):
    def load(self) -> MasterKeys: ...


def parse_keys(text: str, origin: str) -> MasterKeys:
    keys: dict[str, bytes] = {}
    active = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError.single(
                origin, f"line {number}", "expected '<key-id> <64 hex digits>'"
            )
        keys[match.group(1)] = bytes.fromhex(match.group(2))
        active = match.group(1)
    if active is None:
        raise ConfigError.single(origin, "(file)", "holds no key")
    return MasterKeys(keys, active)


@dataclass(frozen=True)
class FileKeySource:
    path: Path

    def load(self) -> MasterKeys:
        return parse_keys(read_private_file(self.path, "keys.file"), str(self.path))


def read_private_file(path: Path, key: str) -> str:
    """The text of a key file only its owner can read; ConfigError naming it otherwise."""
    origin = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError.single(origin, key, "key file not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError.single(
            origin,
            key,
            f"key file is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            "run: chmod 600 " + origin,
        )
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single(origin, key, f"cannot be read: {exc}") from None


@dataclass(frozen=True)
class EnvKeySource:
    variable: str

    def load(self) -> MasterKeys:
        text = os.environ.get(self.variable)
        if not text:
            raise ConfigError.single(f"${self.variable}", "keys.env", "environment variable unset")
        return parse_keys(text.replace(";", "\n"), f"${self.variable}")


def key_source(settings: Settings) -> KeySource:
    if settings.keys.env:
        return EnvKeySource(settings.keys.env)
    if settings.keys.file is None:
        raise ConfigError.single("settings", "keys", "set keys.file or keys.env")
    return FileKeySource(settings.resolve(settings.keys.file))


_CHECK_LABEL = b"clindav master-key check v1"


def check_value(key: bytes) -> str:
    """The key-check value recorded for a master key: identifies it, reveals nothing."""
    return hmac.new(key, _CHECK_LABEL, hashlib.sha256).hexdigest()


def source_location(source: KeySource | None) -> tuple[str, str]:
    """(where the keys come from, its settings key), for messages."""
    if isinstance(source, FileKeySource):
        return str(source.path), "keys.file"
    if isinstance(source, EnvKeySource):
        return f"${source.variable}", "keys.env"
    return "master keys", "keys"


def wrong_key_error(source: KeySource | None, key_ids: list[str]) -> ConfigError:
    origin, setting = source_location(source)
    return ConfigError.single(
        origin,
        setting,
        f"the master key {', '.join(key_ids)} is wrong: it does not match this instance "
        "(its key-check value differs from the one recorded when the key was created). "
        "Restore this instance's key file from its backup.",
    )


class MasterKeyMismatch(ServiceUnavailable):
    code = "master-key-mismatch"
    message = "The gateway's master key does not match this instance; nothing was stored."


def write_new_key_file(path: Path) -> None:
    """Create a key file with one fresh key, readable by its owner only."""
    key_id = "k1"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write("# clindav master keys: keep this file secret and backed up separately.\n")
        out.write(f"{key_id} {secrets.token_hex(32)}\n")


_AUDIT_KEY_LINE = re.compile(r"^audit-chain ([0-9a-f]{64})$")


def write_audit_key_file(path: Path, chain_key: bytes) -> None:
    """Write the audit chain key alone (``clindav keys export-audit-key``), mode 0600.

    It lets an auditor verify the chain without the master key (docs/AUDIT.md);
    an existing file is never overwritten.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write("# clindav audit chain key: verifies the audit trail, decrypts nothing.\n")
        out.write(f"audit-chain {chain_key.hex()}\n")


def load_audit_key_file(path: Path) -> bytes:
    """The chain key from a file written by :func:`write_audit_key_file`."""
    for line in read_private_file(path, "--audit-key").splitlines():
        match = _AUDIT_KEY_LINE.match(line.strip())
        if match:
            return bytes.fromhex(match.group(1))
    raise ConfigError.single(str(path), "--audit-key", "holds no 'audit-chain <64 hex>' line")
