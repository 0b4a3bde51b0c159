"""Database models and session handling (SQLAlchemy 2).

Tables: the registry of stored objects, audit events, local users, dead
properties, the console's sessions, patient upload links and their request counts.  The schema is
created only by Alembic migrations (:func:`migrate`), never by ``create_all``,
so SQLite and PostgreSQL instances evolve the same way.  Every schema change is
a numbered migration; :func:`prepare_database` creates a new database's schema and refuses one at
another revision (``clindav upgrade`` brings an older one forward).  SQLite runs in WAL mode with
``secure_delete`` on (a deleted row must not linger in free pages) and foreign
keys enforced.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
    true,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from gateway.change import ChangeSessions
from gateway.errors import ClindavError


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _CodePointOrder(ColumnElement[str]):
    """A text column compared in code point order.

    SQLite's default collation (BINARY) already is; PostgreSQL's may be a
    locale's, in which a prefix is not a contiguous range, so there the
    comparison is made ``COLLATE "C"``.
    """

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


@compiles(_CodePointOrder)
def _collate_c(element: _CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.column, **kw)} COLLATE "C"'


@compiles(_CodePointOrder, "sqlite")
def _binary(element: _CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


def starts_with(column: Any, prefix: str) -> Any:
    """``column`` begins with ``prefix``, exactly (case counts), as an index range.

    ``LIKE 'prefix%'`` is case-insensitive in SQLite, where it also cannot
    use an index: a folder's rows were found by scanning the share's rows,
    and ``/Photos/`` matched ``/photos/...`` too.
    """
    if not prefix:
        return true()
    ordered = _CodePointOrder(column)
    return (ordered >= prefix) & (ordered < prefix[:-1] + chr(ord(prefix[-1]) + 1))


class Base(DeclarativeBase):
    pass


class StoredObject(Base):
    """One stored file version that clindav wrote, by share and logical path."""

    __tablename__ = "stored_object"
    __table_args__ = (UniqueConstraint("share", "logical_path", name="uq_stored_object_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    share: Mapped[str] = mapped_column(String(64))
    logical_path: Mapped[str] = mapped_column(Text)
    file_id: Mapped[str] = mapped_column(String(36), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(127))
    uploader: Mapped[str] = mapped_column(String(255))
    # A 0-byte file (Explorer's placeholder before the real PUT) is not a
    # finished image: it needs no consent and other users do not see it.
    placeholder: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    modified_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Whose image it is (also on copies whose path must not name the patient),
    # the consent it was kept under, and whether it waits for consent (held:
    # visible only to its uploader and admins until consent comes or it expires).
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    consent_id: Mapped[int | None] = mapped_column(Integer)
    held_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class ConsentRecord(Base):
    """Documented consent for one patient; never deleted (withdrawal is a new row)."""

    __tablename__ = "consent_record"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    given_by: Mapped[str] = mapped_column(String(32))
    given_by_name: Mapped[str | None] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(16))
    form_reference: Mapped[str | None] = mapped_column(Text)
    intimate: Mapped[bool] = mapped_column(default=False)
    date_of_birth: Mapped[dt.date | None] = mapped_column(Date)
    recorded_by: Mapped[str] = mapped_column(String(255))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    valid_from: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    valid_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(255), default="cli")
    note: Mapped[str] = mapped_column(Text, default="")


class ConsentWithdrawal(Base):
    """Withdrawal of some scopes of a consent record, for future use."""

    __tablename__ = "consent_withdrawal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consent_id: Mapped[int] = mapped_column(ForeignKey("consent_record.id"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    withdrawn_by: Mapped[str] = mapped_column(String(255))
    withdrawn_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")


class AuditEvent(Base):
    """One outcome of one request or admin action; never a secret, never content.

    Events form a chain: ``seq`` numbers them without gaps, each carries the
    ``prev_mac`` of its predecessor and its own ``mac`` over its canonical
    encoding (see gateway/records/audit.py).
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_time", "occurred_at"),
        Index("ix_audit_event_actor", "actor"),
        Index("ix_audit_event_path", "share", "logical_path"),
        Index("ix_audit_event_patient", "patient_id"),
        Index("ix_audit_event_status", "status"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    request_id: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    client: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    share: Mapped[str | None] = mapped_column(String(64))
    logical_path: Mapped[str | None] = mapped_column(Text)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The newest link of the audit chain; its row lock serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[str] = mapped_column(String(64))


class LocalUser(Base):
    """An account of the local user store (for practices without LDAP)."""

    __tablename__ = "local_user"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A disabled account keeps its row (audit events name it) but cannot log in.
    disabled: Mapped[bool] = mapped_column(default=False)


class DeadProperty(Base):
    """A client-set WebDAV property (PROPPATCH), keyed by resource URL and name."""

    __tablename__ = "dead_property"
    __table_args__ = (UniqueConstraint("url", "name", name="uq_dead_property"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text, index=True)
    name: Mapped[str] = mapped_column(Text)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class DataKey(Base):
    """A per-file data key, wrapped by a master key (crypto-shred: delete the row).

    ``key_id`` is what the file header names; ``file_id`` is bound into the
    wrapping as associated data, so a row cannot serve another file.
    """

    __tablename__ = "data_key"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(36), index=True)
    master_key_id: Mapped[str] = mapped_column(String(32), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ShareKey(Base):
    """A named random seed (a share's name key, the dead-property key), wrapped.

    Kept apart from the master key so that rotating the master key re-wraps
    this row and no stored name changes.  ``share`` is the seed's name: a
    share name, or ``@``-prefixed for seeds that belong to no share.
    """

    __tablename__ = "share_key"

    share: Mapped[str] = mapped_column(String(64), primary_key=True)
    master_key_id: Mapped[str] = mapped_column(String(32), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)


class TrashItem(Base):
    """A deleted file or folder: restorable until purged, then a tombstone.

    While trashed, its registry rows live under the logical path
    ``@trash/<id>/...`` and its ciphertext under the share's hidden trash
    folder.  Purging deletes the data keys first (crypto-shred), then the
    ciphertext; the row stays as the record that it happened.
    """

    __tablename__ = "trash_item"
    __table_args__ = (Index("ix_trash_item_due", "state", "purge_after"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    share: Mapped[str] = mapped_column(String(64))
    logical_path: Mapped[str] = mapped_column(Text)
    is_folder: Mapped[bool] = mapped_column(default=False)
    files: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="trashed")  # trashed|restored|purged
    trashed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    trashed_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")
    purge_after: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    retained_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_by: Mapped[str | None] = mapped_column(String(255))


class LegalHold(Base):
    """An admin's hold on a path: nothing at or below it is deleted or purged."""

    __tablename__ = "legal_hold"
    __table_args__ = (UniqueConstraint("share", "logical_path", name="uq_legal_hold"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    share: Mapped[str] = mapped_column(String(64))
    logical_path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    held_by: Mapped[str] = mapped_column(String(255))
    held_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class InstanceIdentity(Base):
    """The instance's id (one row): the share markers name it (gateway/storage/marker.py).

    A database without it is new; one that has it knows the instance's shares.
    """

    __tablename__ = "instance_identity"

    # Always 1: two processes taking a new database over cannot record two ids.
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MasterKeyCheck(Base):
    """A key-check value per master key id, recorded when the key is first used.

    A key file whose key has the same id but other bytes is refused
    (gateway/keycheck.py) instead of wrapping data keys nobody can unwrap.
    """

    __tablename__ = "master_key_check"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    check_value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DavLock(Base):
    """A WebDAV lock (gateway/dav/locks.py); in the database so that every gateway
    process and ``clindav locks`` see the same locks."""

    __tablename__ = "dav_lock"

    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    root: Mapped[str] = mapped_column(Text, index=True)
    principal: Mapped[str] = mapped_column(String(255))
    expire: Mapped[float] = mapped_column()
    lock: Mapped[dict[str, Any]] = mapped_column(JSON)


class ConsoleSession(Base):
    """A signed-in session of the staff console (gateway/console/sessions.py).

    In the database so that every gateway process and instance knows it; only
    a hash of the token the browser holds is kept, so a copy of this table
    signs nobody in.
    """

    __tablename__ = "console_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    uid: Mapped[str] = mapped_column(String(255), index=True)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What the console keeps between requests (the form token), never patient data.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class UploadRequest(Base):
    """A patient upload link (gateway/records/upload_requests.py): one patient, one
    submission.  Only hashes of the link's token and of the pass a verified date of
    birth earns are kept, so a copy of this table opens no link."""

    __tablename__ = "upload_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    date_of_birth: Mapped[dt.date] = mapped_column(Date)
    mobile: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str] = mapped_column(Text, default="")
    max_files: Mapped[int] = mapped_column(Integer)
    intimate: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # open -> filing (claimed) -> submitted (one submission; a filing cut short is taken
    # again after FILING_LEASE), locked (too many wrong dates of birth), cancelled
    state: Mapped[str] = mapped_column(String(16), default="open")
    dob_failures: Mapped[int] = mapped_column(Integer, default=0)
    pass_hash: Mapped[str | None] = mapped_column(String(64))
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    consent_id: Mapped[int | None] = mapped_column(Integer)
    # Per photo: name shown to the patient, outcome, message, stored path, format and the
    # SHA-256 of the bytes received (noted as each photo is stored: a retry skips it).
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Per channel (sms, email): sent, or the failure the clinician is shown.
    deliveries: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UploadRate(Base):
    """Requests to the patient upload pages per key (a hash of a client address or of a
    link) and 10-minute period (gateway/uploads/throttle.py): in the database so that
    every gateway process and instance counts together."""

    __tablename__ = "upload_rate"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hits: Mapped[int] = mapped_column(Integer)


class AppPassword(Base):
    """A device's password for the Nextcloud apps (gateway/auth/apppasswords.py).

    Only a SHA-256 of the secret is kept: it is 124 random bits, so a slow hash
    would add nothing but cost on every request.  Deleting the row revokes it.
    """

    __tablename__ = "app_password"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(255), index=True)
    label: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When it last signed a request in (None: never), to within NOTE_USE_EVERY
    # (gateway/auth/apppasswords.py).
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFlow(Base):
    """A Nextcloud Login Flow v2 in progress (gateway/nextcloud/loginflow.py).

    Both tokens are kept as hashes.  Once granted, the new app password waits
    here sealed under a key derived from the poll token, which only the
    polling client knows: a copy of this table reveals no password.
    """

    __tablename__ = "login_flow"

    poll_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    login_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    uid: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class NextcloudFileId(Base):
    """The number the Nextcloud apps know a file or folder by (``oc:fileid``).

    Kept per share and path, moved with a MOVE through the Nextcloud door and
    never reused (AUTOINCREMENT): the desktop client detects renames by it.
    """

    __tablename__ = "nextcloud_file_id"
    __table_args__ = (
        UniqueConstraint("share", "path", name="uq_nextcloud_file_id_path"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    share: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)


# How long a statement waits for a lock another process holds (SQLite's busy
# timeout, PostgreSQL's lock_timeout) or for PostgreSQL to answer a connection
# attempt, before the request fails closed with 503 database-unavailable.
# Commits queue on the audit chain's lock first (gateway/records/audit.py), so a wait
# this long means something outside the gateway holds the database.
DB_WAIT_SECONDS = 5


def make_engine(url: str) -> Engine:
    """An engine with the connection settings clindav relies on."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": DB_WAIT_SECONDS, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {
        "connect_timeout": DB_WAIT_SECONDS,
        "options": f"-c lock_timeout={DB_WAIT_SECONDS * 1000}",
    }
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA secure_delete=ON")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sessions(engine: Engine) -> ChangeSessions:
    return ChangeSessions(engine, expire_on_commit=False)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema with Alembic."""
    from alembic import command

    command.upgrade(_alembic_config(url), "head")


class SchemaOutdated(ClindavError):
    """The database was made by an older clindav: ``clindav upgrade`` brings it forward."""

    status = 503
    code = "schema-outdated"
    message = "The database is at an older (or unknown) schema."


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: a new, empty database
    head: str
    pending: list[str]  # revisions an upgrade applies, oldest first ("0002 instance ...")

    @property
    def known(self) -> bool:
        """False when the database is newer than this clindav (a revision it lacks)."""
        return self.current is None or self.current == self.head or bool(self.pending)


def schema_state(url: str) -> SchemaState:
    """Where the database at ``url`` stands against this clindav's migrations."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    script = ScriptDirectory.from_config(_alembic_config(url))
    head = script.get_current_head() or ""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    pending: list[str] = []
    if current not in (None, head):
        try:
            revisions = list(script.iterate_revisions(head, current))
        except CommandError:
            revisions = []  # a revision this clindav does not have
        pending = [f"{r.revision} {r.doc.splitlines()[0]}" for r in reversed(revisions)]
    return SchemaState(current, head, pending)


def _at_newest_revision(url: str) -> bool:
    """Whether the database is at the newest migration, by one query.

    Migration files are named after their revision (``0002_instance_integrity.py``
    holds revision ``0002``; tests/unit/test_schema_head.py checks it), so the
    newest name is the head.  Anything else (a new database, an older or
    unknown revision) is for :func:`schema_state` to judge.
    """
    versions = Path(__file__).parent / "migrations" / "versions"
    newest = max((p.name.split("_", 1)[0] for p in versions.glob("[0-9]*_*.py")), default=None)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:
        return False  # no schema yet
    finally:
        engine.dispose()
    return newest is not None and current == [newest]


def prepare_database(url: str) -> None:
    """Create a new database's schema; refuse one made by another clindav version.

    An existing database is never changed here: an upgrade changes it for
    good, so it is a separate, confirmed step (``clindav upgrade``) taken
    after a backup, with every gateway of the old version stopped.
    """
    if _at_newest_revision(url):
        return  # the everyday case, answered without loading Alembic
    state = schema_state(url)
    if state.current is None:
        migrate(url)
        return
    if state.current == state.head:
        return
    if not state.known:
        raise SchemaOutdated(
            f"database revision {state.current} unknown",
            public=f"the database is at schema {state.current}, which this clindav does not "
            f"know (it knows up to {state.head}): it was upgraded by a newer clindav; "
            "run that version",
        )
    raise SchemaOutdated(
        f"database at {state.current}, head {state.head}",
        public=f"the database is at schema {state.current}; this clindav needs {state.head}. "
        "Back the database up, then run `clindav upgrade` (with the same --config)",
    )
