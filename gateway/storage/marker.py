"""Share markers: a backing folder is served only while it is this instance's share.

A share's mount point is an ordinary empty folder while the share is not
mounted: unchecked, the gateway would list it as empty and store uploads on
the local disk.  And a deleted database file would be replaced by a new,
empty one with a new audit chain, over shares full of stored files it does
not know.  So:

* each backing folder holds an empty folder
  ``.clindav-share.<instance id>.<mac>``, the MAC an HMAC of the instance id
  and the share name under the ``@instance`` seed (a seed in the key table,
  wrapped by the master key like every seed).  A folder, not a file: it
  holds no content, and nothing that counts or hashes a share's files sees
  it; its name is all there is to check;
* the database records the instance id (``instance_identity``);
* at start (:func:`check_instance`) every share must carry the marker of
  this instance and of that share; a new database (no instance id, no
  stored object, no audit event) takes empty shares over and marks them,
  but refuses shares that hold stored files;
* while serving, :class:`MarkerWatch` re-checks the marker at most once a
  second per share (one ``stat`` of the expected name): while it is gone,
  requests to the share answer ``503 share-unavailable``.

``clindav init`` marks the shares of a new instance; ``clindav upgrade``
(``mode="upgrade"``) marks the shares of an instance from before markers,
and a share added to the settings later: every share without a marker that
holds files, or of which the registry knows nothing.  An empty folder where
the registry expects files is refused (it is the unmounted case).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from gateway.crypto.fileformat import MAGIC
from gateway.db import AuditEvent, InstanceIdentity, StoredObject
from gateway.errors import ConfigError, ConfigProblem, ShareUnavailable
from gateway.storage.backing import INTERNAL_PREFIX, fsync_dir
from gateway.storage.keystore import KeyStore

log = logging.getLogger("clindav.shares")

MARKER_PREFIX = INTERNAL_PREFIX + "share."
INSTANCE_SEED = "@instance"
CHECK_INTERVAL = 1.0  # seconds between two stats of a share's marker


@dataclass(frozen=True)
class Marker:
    instance_id: str
    mac: str  # binds the instance id to the share's name

    @classmethod
    def make(cls, seed: bytes, instance_id: str, share: str) -> Marker:
        text = f"clindav-share-marker\0{instance_id}\0{share}".encode()
        return cls(instance_id, hmac.new(seed, text, hashlib.sha256).hexdigest()[:32])

    @property
    def name(self) -> str:
        return f"{MARKER_PREFIX}{self.instance_id}.{self.mac}"


def read_markers(root: Path) -> list[Marker]:
    """The markers in ``root`` (normally one; none when the share is not mounted)."""
    try:
        with os.scandir(root) as entries:
            names = [e.name for e in entries if e.name.startswith(MARKER_PREFIX) and e.is_dir()]
    except OSError:
        return []
    return [Marker(*n[len(MARKER_PREFIX) :].rsplit(".", 1)) for n in names if n.count(".") >= 3]


def write_marker(root: Path, marker: Marker) -> None:
    """Make ``marker`` the only marker in ``root``."""
    for old in read_markers(root):
        if old != marker:
            os.rmdir(root / old.name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root / marker.name, 0o700)
    fsync_dir(root)


class MarkerWatch:
    """Per request: is the share's marker (still) there?  See the module doc."""

    def __init__(
        self,
        share: str,
        root: Path,
        expected: Marker,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = share
        self._path = root / expected.name
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._valid_until = 0.0
        self._failing = False

    def check(self) -> None:
        """Raise ShareUnavailable unless the marker was seen within the interval."""
        now = self._clock()
        if now < self._valid_until:
            return
        with self._lock:
            try:
                present = stat.S_ISDIR(os.stat(self._path).st_mode)
            except OSError:
                present = False
            if not present:
                self._valid_until = 0.0
                if not self._failing:
                    log.error(
                        "share %s unavailable: %s is gone (not mounted?)", self.share, self._path
                    )
                self._failing = True
                raise ShareUnavailable(f"share {self.share}: {self._path} is gone")
            if self._failing:
                log.warning("share %s available again", self.share)
            self._failing = False
            self._valid_until = now + self._interval


Mode = Literal["serve", "upgrade"]


def check_instance(
    sessions: sessionmaker, keys: KeyStore, roots: dict[str, Path], mode: Mode = "serve"
) -> dict[str, MarkerWatch]:
    """Start-up: every share is this instance's (see the module doc); its watches.

    Raises ConfigError naming each share that is not.  With ``mode="upgrade"``
    unmarked shares are marked where that is safe.
    """
    seed = keys.seed(INSTANCE_SEED)
    instance_id = recorded_instance(sessions)
    markers = {name: read_markers(root) for name, root in roots.items()}
    if instance_id is None:
        instance_id = _take_over(sessions, seed, roots, markers, mode)
    problems = []
    watches = {}
    for name, root in roots.items():
        expected = Marker.make(seed, instance_id, name)
        found = markers[name]
        if not found and mode == "upgrade":
            problem = _unsafe_to_mark(sessions, name, root)
            if problem is None:
                write_marker(root, expected)
                log.warning("share %s: marked %s as this instance's", name, root)
        else:
            problem = _marker_problem(root, found, expected)
        if problem is not None:
            problems.append(ConfigProblem("settings", f"shares.{name}.path", problem))
        watches[name] = MarkerWatch(name, root, expected)
    if problems:
        raise ConfigError(problems)
    return watches


def _marker_problem(root: Path, found: list[Marker], expected: Marker) -> str | None:
    if expected in found:
        return None
    if not found:
        return (
            f"{root} has no {MARKER_PREFIX}* marker: the share is not mounted, or it is "
            "new to this instance or from a clindav before share markers "
            "(then back up the database and run `clindav upgrade`)"
        )
    others = sorted({m.instance_id for m in found} - {expected.instance_id})
    if others:
        return (
            f"{root} is a share of another clindav instance ({', '.join(others)}; "
            f"this one is {expected.instance_id}): wrong path, mount or database"
        )
    return (
        f"{root} is marked for this instance, but not as this share (or not with this "
        "instance's key): wrong path or mount"
    )


def recorded_instance(sessions: sessionmaker) -> str | None:
    with sessions() as session:
        return session.scalar(select(InstanceIdentity.instance_id))


def _take_over(
    sessions: sessionmaker,
    seed: bytes,
    roots: dict[str, Path],
    markers: dict[str, list[Marker]],
    mode: Mode,
) -> str:
    """A database without an instance id: record one and mark the shares, or refuse.

    A database that holds data came from a clindav before instance ids: only
    ``clindav upgrade`` takes it forward.  A new database (deleted, or a
    ``database_url`` pointing elsewhere) must not start a new audit chain over
    shares that hold stored files.
    """
    with sessions() as session:
        has_data = (
            session.scalar(select(StoredObject.id).limit(1)) is not None
            or session.scalar(select(AuditEvent.seq).limit(1)) is not None
        )
    if has_data and mode != "upgrade":
        raise ConfigError.single(
            "database",
            "instance",
            "this database is from a clindav before share markers: "
            "back it up and run `clindav upgrade`",
        )
    if not has_data:
        stored = {name: found for name, root in roots.items() if (found := _a_stored_file(root))}
        if stored:
            raise ConfigError(
                [
                    ConfigProblem(
                        "settings",
                        f"shares.{name}.path",
                        f"holds stored files this database does not know (e.g. {found}): the "
                        "database is new (deleted, or database_url names another one). "
                        "Restore the instance's database from its backup; clindav does not "
                        "start a new audit chain over existing files",
                    )
                    for name, found in stored.items()
                ]
            )
    # A new instance's shares keep the id their markers name (the database was
    # made after `clindav init`); an older instance gets a new one.
    named = {m.instance_id for found in markers.values() for m in found}
    instance_id = named.pop() if len(named) == 1 and not has_data else str(uuid.uuid4())
    try:
        with sessions.begin() as session:
            session.add(InstanceIdentity(id=1, instance_id=instance_id))
    except IntegrityError:  # another process took it over first: its id, the same markers
        instance_id = recorded_instance(sessions) or instance_id
    if not has_data:  # (an upgraded instance's shares are marked share by share, if safe)
        for name, root in roots.items():
            marker = Marker.make(seed, instance_id, name)
            write_marker(root, marker)
            markers[name] = [marker]
    return instance_id


def _a_stored_file(root: Path) -> str | None:
    """A file in ``root`` (trash included) that clindav stored, if there is one."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            try:
                with open(path, "rb") as f:
                    if f.read(len(MAGIC)) == MAGIC:
                        return os.path.relpath(path, root)
            except OSError:
                continue
    return None


def _unsafe_to_mark(sessions: sessionmaker, share: str, root: Path) -> str | None:
    """Why ``clindav upgrade`` must not mark ``root`` (None: it may)."""
    if not root.is_dir():
        return f"{root} is not a folder"
    if any(True for _ in os.scandir(root)):
        return None
    with sessions() as session:
        known = session.scalar(
            select(func.count()).select_from(StoredObject).where(StoredObject.share == share)
        )
    if known:
        return (
            f"{root} is empty but the database knows {known} files of share {share}: "
            "mount the share, then run `clindav upgrade` again"
        )
    return None
