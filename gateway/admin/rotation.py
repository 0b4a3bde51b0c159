"""Master-key rotation: a new master key, every key row re-wrapped, no file rewritten.

``rotate`` is resumable: when rows wrapped by older master keys remain (an
interrupted run, or a gateway that kept wrapping with the old key before it
noticed the new key file), it finishes re-wrapping them under the active key
instead of making yet another key.  Only when no row is left under an older
key does it append a new key to the key file.  Running gateways notice the
changed key file on their next write and wrap with the new key from then on.

``retire_unused`` removes keys that no row uses from the key file (never the
active key); it is a separate step, run once every gateway uses the new key.
Database backups taken before a rotation still need the old key: keep old
key files with those backups.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from gateway.admin.progress import Progress
from gateway.crypto.keywrap import unwrap_data_key, wrap_data_key
from gateway.db import DataKey, ShareKey
from gateway.errors import ConfigError
from gateway.storage.keys import FileKeySource, MasterKeys, parse_keys
from gateway.storage.keystore import KeyStore, share_binding

BATCH = 500


@dataclass(frozen=True)
class RotationReport:
    new_key_id: str | None
    rewrapped: int


def key_usage(sessions: sessionmaker) -> Counter[str]:
    """How many key rows each master key id wraps."""
    usage: Counter[str] = Counter()
    with sessions() as session:
        for table in (DataKey, ShareKey):
            rows = session.execute(
                select(table.master_key_id, func.count()).group_by(table.master_key_id)
            )
            for key_id, count in rows:
                usage[key_id] += count
    return usage


def rotate(source: FileKeySource, sessions: sessionmaker) -> RotationReport:
    masters = source.load()
    KeyStore(sessions, masters, source).verify()  # never re-wrap under a wrong key
    usage = key_usage(sessions)
    stale = sum(n for key_id, n in usage.items() if key_id != masters.active_id)
    new_key_id = None
    if stale == 0:
        new_key_id = _next_key_id(masters)
        _write_key_file(
            source.path, {**masters.keys, new_key_id: secrets.token_bytes(32)}, new_key_id
        )
        masters = source.load()
        KeyStore(sessions, masters, source).verify()  # records the new key's check value
        stale = sum(usage.values())
    progress = Progress("re-wrapping keys", stale)
    rewrapped = _rewrap_table(sessions, masters, DataKey, progress)
    rewrapped += _rewrap_table(sessions, masters, ShareKey, progress)
    progress.finish()
    return RotationReport(new_key_id, rewrapped)


def _next_key_id(masters: MasterKeys) -> str:
    numbers = [int(k[1:]) for k in masters.keys if k[:1] == "k" and k[1:].isdigit()]
    return f"k{max(numbers, default=0) + 1}"


def _rewrap_table(
    sessions: sessionmaker,
    masters: MasterKeys,
    table: type[DataKey] | type[ShareKey],
    progress: Progress,
) -> int:
    done = 0
    while True:
        with sessions.begin() as session:
            rows = session.scalars(
                select(table).where(table.master_key_id != masters.active_id).limit(BATCH)
            ).all()
            for row in rows:
                bound = (
                    uuid.UUID(row.file_id) if isinstance(row, DataKey) else share_binding(row.share)
                )
                old = masters.keys.get(row.master_key_id)
                if old is None:
                    raise ConfigError.single(
                        str(table.__tablename__),
                        row.master_key_id,
                        "master key not in the key file",
                    )
                plain = unwrap_data_key(old, row.master_key_id, bound, row.wrapped)
                row.wrapped = wrap_data_key(masters.active, masters.active_id, bound, plain)
                row.master_key_id = masters.active_id
        if not rows:
            return done
        done += len(rows)
        progress.advance(len(rows))


def retire_unused(source: FileKeySource, sessions: sessionmaker) -> list[str]:
    """Drop master keys no key row uses from the key file; returns their ids."""
    masters = source.load()
    usage = key_usage(sessions)
    retired = [k for k in masters.keys if k != masters.active_id and usage[k] == 0]
    if retired:
        kept = {k: v for k, v in masters.keys.items() if k not in retired}
        _write_key_file(source.path, kept, masters.active_id)
    return retired


def _write_key_file(path: Path, keys: dict[str, bytes], active_id: str) -> None:
    """Replace the key file atomically; the active key is written last."""
    order = [k for k in keys if k != active_id] + [active_id]
    text = "# clindav master keys: keep this file secret and backed up separately.\n"
    text += "".join(f"{k} {keys[k].hex()}\n" for k in order)
    parse_keys(text, str(path))  # never write a file we could not read back
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
