"""Stand-alone audit events of concurrent requests commit together (gateway/records/audit.py
``GroupCommit``), on the instance's real database, and the chain stays whole."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy

from gateway.app import load_master_keys
from gateway.auth.base import Principal
from gateway.db import AuditEvent, make_engine, make_sessions
from gateway.pipeline import RequestInfo
from gateway.records.audit import AUDIT_SEED, AuditLog, AuditUnavailable, verify_chain
from gateway.settings import load_settings
from gateway.storage.keystore import KeyStore
from tests.conftest import Instance

THREADS, PER_THREAD = 8, 30


def _audit(instance: Instance) -> tuple[Any, Any, AuditLog]:
    settings = load_settings(instance.config)
    engine = make_engine(settings.sqlalchemy_url())
    sessions = make_sessions(engine)
    key = KeyStore(sessions, load_master_keys(settings)).seed(AUDIT_SEED)
    return engine, sessions, AuditLog(sessions, key)


def _read(audit: AuditLog, thread: int, n: int) -> None:
    request = RequestInfo(
        f"t{thread}-{n}", Principal("alice", frozenset({"clinicians"})), "127.0.0.1", "t", "GET"
    )
    audit.record(request, action="GET", share="documents", path=f"/f{n}", status=200, code="ok")


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_concurrent_reads_share_commits_and_keep_one_chain(instance: Instance) -> None:
    engine, sessions, audit = _audit(instance)
    commits = 0

    @sqlalchemy.event.listens_for(engine, "commit")
    def slow_commit(_conn: Any) -> None:
        # A commit that takes a while (a busy disk): requests arriving meanwhile queue.
        nonlocal commits
        commits += 1
        time.sleep(0.005)

    barrier = threading.Barrier(THREADS)

    def client(thread: int) -> None:
        barrier.wait()
        for n in range(PER_THREAD):
            _read(audit, thread, n)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        with sessions() as session:
            seqs = list(session.scalars(sqlalchemy.select(AuditEvent.seq).order_by(AuditEvent.seq)))
            ids = set(session.scalars(sqlalchemy.select(AuditEvent.request_id)))
        total = THREADS * PER_THREAD
        assert len(ids & {f"t{t}-{n}" for t in range(THREADS) for n in range(PER_THREAD)}) == total
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
        assert verify_chain(audit, sessions) == []
        assert commits <= total // 2, f"{commits} commits for {total} events: no grouping"
    finally:
        engine.dispose()


def test_a_failed_group_commit_fails_every_waiter_and_the_next_one_works(
    instance: Instance,
) -> None:
    engine, sessions, audit = _audit(instance)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER audit_off BEFORE INSERT ON audit_event "
            "BEGIN SELECT RAISE(ABORT, 'audit off'); END"
        )
    failures: list[str] = []

    def client(thread: int) -> None:
        try:
            _read(audit, thread, 0)
        except AuditUnavailable as exc:
            failures.append(exc.code)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not any(t.is_alive() for t in threads), "a waiter hung after a failed commit"
        assert failures == ["audit-unavailable"] * THREADS
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER audit_off")
        _read(audit, 99, 1)
        assert verify_chain(audit, sessions) == []
    finally:
        engine.dispose()
