"""All or nothing: a database transaction and the filesystem steps that go with it.

``services.sessions`` is a :class:`ChangeSessions`.  Its ``begin()`` is
SQLAlchemy's, with one addition: a filesystem step taken inside the
transaction (:func:`replace`, :func:`make_dir`) leaves an undo, and when the
transaction does not commit (an error, or the commit itself failing) the undos
run, newest first.  So a step done after the flush and before the commit (the
rename of a PUT, a DELETE's move into the trash) does not stay when the
client is told 503.

A request's change (:class:`RequestChange`): WsgiDAV carries out MKCOL, COPY,
MOVE, PROPPATCH, LOCK and UNLOCK in several steps (a folder, its files, their
dead properties, a lock) and the middleware learns the outcome only at the
end.  For these the middleware opens one change per request: while it is
open, every ``begin()`` on the request's thread joins its transaction instead
of committing on its own, and the middleware appends the request's audit
event and commits once WsgiDAV has answered.  The change and its event are
committed together or not at all; the first write of the change takes the
audit chain's lock (as every committing transaction does), so it holds that
lock until the request is answered.  While a change is open its thread must
not write a stand-alone audit event (``AuditLog.record``): the event, and
those of other requests committed in the same group, would join the change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gateway.storage.backing import TEMP_PREFIX, fsync_dir

log = logging.getLogger("clindav.change")

_UNDO = "clindav.undo"
_DONE = "clindav.done"
_OPEN = threading.local()


def on_failure(session: Session, undo: Callable[[], None]) -> None:
    """Run ``undo`` if ``session``'s transaction does not commit."""
    session.info.setdefault(_UNDO, []).append(undo)


def on_commit(session: Session, done: Callable[[], None]) -> None:
    """Run ``done`` once ``session``'s transaction has committed (clean-up only)."""
    session.info.setdefault(_DONE, []).append(done)


def _finish(session: Session, *, committed: bool) -> None:
    undos, dones = session.info.pop(_UNDO, []), session.info.pop(_DONE, [])
    for step in dones if committed else reversed(undos):
        try:
            step()
        except Exception:  # the others must still run; fsck reports what is left
            log.exception("%s step failed", "clean-up" if committed else "undo")


def _discard(session: Session) -> None:
    """Roll back, undo the file steps, close; never raising (the request's own error counts)."""
    try:
        session.rollback()
    except Exception:  # the database went away: nothing of the transaction was committed
        log.warning("rollback failed", exc_info=True)
    _finish(session, committed=False)
    try:
        session.close()
    except Exception:
        log.warning("closing a session failed", exc_info=True)


class ChangeSessions(sessionmaker[Session]):
    """A sessionmaker whose transactions undo their filesystem steps when they fail."""

    def begin(self) -> contextlib.AbstractContextManager[Session]:
        """A transaction of its own, or inside a request's change that change's."""
        change = getattr(_OPEN, "change", None)
        if change is not None:
            return change.joined()
        return self._own()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads that sees what this thread's open change has written.

        WsgiDAV reads back what a step wrote (a LOCK answers with the lock it
        just took) before the change commits.  Until the change has written,
        reads use a session of their own and take no lock.
        """
        change = getattr(_OPEN, "change", None)
        if change is not None and change.has_written:
            yield change.session()
            return
        with self() as session:
            yield session

    @contextlib.contextmanager
    def _own(self) -> Iterator[Session]:
        with self() as session:
            try:
                with session.begin():
                    yield session
            except BaseException:
                _finish(session, committed=False)
                raise
            _finish(session, committed=True)


class RequestChange:
    """One transaction for everything a request changes (see the module doc).

    Opening one makes it the current change of this thread until it is
    committed, abandoned or closed.  ``lock_head`` is the audit log's: the
    transaction takes the chain's lock first, as every committing transaction
    does.
    """

    def __init__(self, sessions: ChangeSessions, lock_head: Callable[[Session], None]) -> None:
        self._sessions = sessions
        self._lock_head = lock_head
        self._session: Session | None = None
        self.failure: BaseException | None = None
        _OPEN.change = self

    @property
    def has_written(self) -> bool:
        return self._session is not None

    def session(self) -> Session:
        """The change's session, its transaction begun (and the chain locked) on first use."""
        if self._session is None:
            session = self._sessions()
            self._session = session
            session.begin()
            self._lock_head(session)
        return self._session

    @contextlib.contextmanager
    def joined(self) -> Iterator[Session]:
        try:
            session = self.session()
            yield session
            session.flush()
        except BaseException as exc:
            # Whoever called may carry on (WsgiDAV reports a member's failure
            # inside a 207), but the change as a whole will not commit.
            self.failure = self.failure or exc
            raise

    def commit(self) -> None:
        """Commit the change; if anything in it failed, or the commit does, undo it and raise."""
        if self.failure is not None:
            self.abandon()
            raise self.failure
        session, self._session = self._session, None
        self.close()
        if session is None:
            return
        try:
            session.commit()
        except BaseException:
            _discard(session)
            raise
        _finish(session, committed=True)
        session.close()

    def abandon(self) -> None:
        """Roll back and undo whatever the request did (it failed, or was refused)."""
        session, self._session = self._session, None
        self.close()
        if session is not None:
            _discard(session)

    def close(self) -> None:
        """From here on ``begin()`` on this thread commits on its own again."""
        if getattr(_OPEN, "change", None) is self:
            _OPEN.change = None


def replace(session: Session, source: Path, target: Path) -> None:
    """``os.replace(source, target)`` (durable) that the transaction's failure undoes.

    An existing file at ``target`` is kept under a hidden temp name (a hard
    link) until the commit, so that the undo can put it back; the undo moves
    ``source`` back where it was.  Neither happens if ``target`` has changed
    since (another request replaced it): then only the kept file goes.
    """
    previous = _keep(target)
    try:
        os.replace(source, target)
        fsync_dir(target.parent)
        ours = os.lstat(target)
    except BaseException:
        if previous is not None:
            previous.unlink(missing_ok=True)
        raise

    def undo() -> None:
        if _still(target, ours):
            os.replace(target, source)
            if previous is not None:
                os.replace(previous, target)
            fsync_dir(target.parent)
            fsync_dir(source.parent)
        elif previous is not None:
            previous.unlink(missing_ok=True)

    on_failure(session, undo)
    if previous is not None:
        on_commit(session, lambda: previous.unlink(missing_ok=True))


def make_dir(session: Session, path: Path) -> None:
    """``mkdir`` (0700, durable) that the transaction's failure undoes."""
    os.mkdir(path, 0o700)
    fsync_dir(path.parent)
    ours = os.lstat(path)

    def undo() -> None:
        if _still(path, ours):
            os.rmdir(path)  # fails (and is logged) if something was put in it since
            fsync_dir(path.parent)

    on_failure(session, undo)


def _keep(target: Path) -> Path | None:
    """A second name for the file at ``target`` (none for a folder or nothing)."""
    try:
        if not os.path.isfile(target) or os.path.islink(target):
            return None
    except OSError:
        return None
    kept = target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        os.link(target, kept, follow_symlinks=False)
    except OSError:
        # A share without hard links: a copy of the ciphertext instead.
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out, open(target, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
    return kept


def _still(path: Path, ours: os.stat_result) -> bool:
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino)
