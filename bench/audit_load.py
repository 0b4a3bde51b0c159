"""Issue 8: the audit trail at scale, and what one audit event costs a request.

(a) Export memory.  A fresh instance (``clindav init``'s own function) gets
``audit_events`` events generated straight into its database: SQLAlchemy
core inserts in batches, each event's ``mac`` computed with
``gateway.records.audit.AuditLog.mac`` (``canonical``) over its predecessor's, the
instance's own ``@audit`` key, and the ``audit_head`` row set at the end, so
the result is a valid chain (``clindav audit verify`` is run on the smaller
table to prove it).  The secondary indexes are dropped for the load and
recreated from their own ``CREATE INDEX`` text afterwards (same schema, built
in one pass).  Then ``clindav audit export --format jsonl --config ...``
runs as a subprocess writing to /dev/null; its peak RSS is the ``ru_maxrss``
of that one process (``getrusage(RUSAGE_CHILDREN)`` in a minimal wrapper
process, what ``/usr/bin/time -v`` reports), with VmRSS sampled every 50 ms
for the shape.  The same for a table a tenth the
size: equal peaks mean memory does not grow with the table.

(b) Per-request cost.  ``AuditLog.record`` (one stand-alone event, as a GET
writes before its first byte) timed in this process against the main
clindav instance's database after the loads (the GETs' own database) and
against the big table; set beside clindav's GET median latency and server
CPU per GET from the main loads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

from bench import loads, peers
from bench.client import percentile
from bench.pipeline_cost import time_step
from bench.procstat import RssSampler

BATCH = 10_000
GET_LOAD = "get_4mb_c1"


class _Event(dict[str, Any]):
    """A row for the core insert that ``canonical`` can read like an AuditEvent."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _open(config: Path) -> tuple[Any, Any, Any, bytes]:
    """(engine, sessions, AuditLog, chain key) of an instance, keyed like the gateway's."""
    from gateway.app import load_master_keys
    from gateway.db import make_engine, make_sessions
    from gateway.records.audit import AUDIT_SEED, AuditLog
    from gateway.settings import load_settings
    from gateway.storage.keystore import KeyStore

    settings = load_settings(config)
    engine = make_engine(settings.sqlalchemy_url())
    sessions = make_sessions(engine)
    key = KeyStore(sessions, load_master_keys(settings)).seed(AUDIT_SEED)
    return engine, sessions, AuditLog(sessions, key), key


def _event(seq: int, when: dt.datetime, prev_mac: str) -> _Event:
    """A plausible event: mostly reads, some uploads with details, listings, deletes,
    failed logins; patients and photo names vary."""
    kind = seq % 20
    patient = f"94347{(seq * 7919) % 100000:05d}"
    photo = f"/{patient}/IMG_{seq % 10000:04d}.jpg"
    row = _Event(
        seq=seq,
        occurred_at=when,
        request_id=f"{seq * 2654435761 % (1 << 64):016x}",
        actor=("alice", "bob", "frank", "gina")[seq % 4],
        client=f"10.0.0.{seq % 200 + 2}",
        user_agent="Microsoft-WebDAV-MiniRedir/10.0.19045",
        action="GET",
        share="clinical",
        logical_path=photo,
        patient_id=None,
        status=200,
        code="ok",
        reason="",
        details={},
        prev_mac=prev_mac,
    )
    if 12 <= kind < 16:
        row.update(
            action="PUT",
            status=201,
            code="stored",
            details={
                "format": "jpeg",
                "scrub": {"removed": ["GPS", "MakerNote", "BodySerialNumber"], "kept": ["Date"]},
                "consent": seq % 5000,
            },
        )
    elif kind in (16, 17):
        row.update(action="PROPFIND", status=207, logical_path=f"/{patient}/")
    elif kind == 18:
        row.update(action="DELETE", status=204, code="trashed", details={"trash": seq, "files": 1})
    elif kind == 19:
        row.update(
            actor=row["actor"],
            action="LOGIN",
            share=None,
            logical_path=None,
            status=401,
            code="login-failed",
            reason="wrong password",
        )
    return row


def _when(start: dt.datetime, seq: int) -> dt.datetime:
    return start + dt.timedelta(seconds=20 * seq, microseconds=seq % 997)


def _mac_worker() -> None:
    """The chain's MACs, in order, one per line on stdout (run as its own process).

    Arguments as JSON in argv[1]: the chain key (hex), the first seq, the count,
    the time base and the MAC before the first event.  ``AuditLog.mac`` needs only
    the key; the rows are rebuilt from ``seq`` exactly as the inserting process
    builds them.  The last line is the CPU seconds spent.
    """
    from gateway.records.audit import AuditLog

    args = json.loads(sys.argv[1])
    audit = AuditLog(None, bytes.fromhex(args["key"]))  # type: ignore[arg-type]  # no session
    start = dt.datetime.fromisoformat(args["start"])
    mac, first = args["prev_mac"], args["first"]
    began = time.process_time()
    out = sys.stdout
    for seq in range(first, first + args["events"]):
        mac = audit.mac(cast(Any, _event(seq, _when(start, seq), mac)))
        out.write(mac + "\n")
    out.write(f"{time.process_time() - began}\n")
    out.flush()


def fill_audit(config: Path, events: int) -> dict[str, Any]:
    """Append ``events`` chained events to the instance's audit table; figures of the load.

    A second process (:func:`_mac_worker`) computes the MACs: the chain is
    sequential, but the insert can overlap it.  This one builds the same rows,
    checks the first MAC of every batch itself, and inserts.
    """
    from sqlalchemy import insert, text, update

    from gateway.db import AuditEvent, AuditHead

    engine, _sessions, audit, key = _open(config)
    seq, mac = audit.head()
    first = seq + 1
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=20 * (first + events))
    spec = {"key": key.hex(), "first": first, "events": events, "start": start.isoformat()}
    began = time.perf_counter()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from bench.audit_load import _mac_worker; _mac_worker()",
            json.dumps({**spec, "prev_mac": mac}),
        ],
        stdout=subprocess.PIPE,
        cwd=peers.REPO,
        env=peers._clindav_env(),
        text=True,
    )
    assert worker.stdout is not None
    with contextlib.suppress(OSError, AttributeError):  # let the worker run ~1 batch ahead
        fcntl.fcntl(worker.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    macs_in = worker.stdout
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")  # this connection only; reset below
            indexes = conn.execute(
                text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = 'audit_event' AND sql IS NOT NULL"
                )
            ).all()
            for name, _sql in indexes:
                conn.exec_driver_sql(f'DROP INDEX "{name}"')
            conn.commit()
            while seq < first - 1 + events:
                rows: list[_Event] = []
                for _ in range(min(BATCH, first - 1 + events - seq)):
                    next_mac = macs_in.readline().rstrip("\n")
                    if len(next_mac) != 64:
                        raise RuntimeError(f"MAC worker stopped before event {seq + 1}")
                    seq += 1
                    row = _event(seq, _when(start, seq), mac)
                    if not rows and audit.mac(cast(Any, row)) != next_mac:
                        raise RuntimeError(f"MAC worker disagrees at event {seq}")
                    mac = row["mac"] = next_mac
                    rows.append(row)
                conn.execute(insert(AuditEvent), rows)  # core executemany
                conn.commit()
            mac_cpu_s = float(macs_in.readline())
            inserted = time.perf_counter()
            for _name, sql in indexes:
                conn.exec_driver_sql(sql)
            done = conn.execute(
                update(AuditHead).where(AuditHead.id == 1).values(seq=seq, mac=mac)
            ).rowcount
            if not done:
                conn.execute(insert(AuditHead), [{"id": 1, "seq": seq, "mac": mac}])
            conn.commit()
            conn.exec_driver_sql("PRAGMA synchronous=FULL")
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        engine.dispose()
    total = time.perf_counter() - began
    db = config.parent / "clindav.db"
    return {
        "events": events,
        "head_seq": seq,
        "seconds": total,
        "events_s": events / total if total else None,
        "mac_cpu_s": mac_cpu_s,
        "index_seconds": total - (inserted - began),
        "db_mib": db.stat().st_size / 2**20 if db.exists() else None,
    }


# A minimal parent for the measured command.  Its getrusage(RUSAGE_CHILDREN)
# ru_maxrss is the command's own peak: the bench process cannot ask the kernel
# itself, because a child forked (or vforked) from a big process starts with that
# process's high-water mark, which exec keeps in ru_maxrss.
_WRAPPER = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"returncode": code, "max_rss_kib": use.ru_maxrss,
                  "cpu_s": use.ru_utime + use.ru_stime}))
"""


def run_measured(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` with stdout to /dev/null; wall time, its peak RSS and the RSS shape."""
    with open(log, "ab") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, *cmd],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=peers.REPO,
            env=peers._clindav_env(),
        )
        with RssSampler(proc.pid) as sampler:
            output = proc.communicate(timeout=1800)[0]
        wall = time.perf_counter() - began
    try:
        usage = json.loads(output.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        usage = {"returncode": proc.returncode, "max_rss_kib": 0, "cpu_s": None}
    return {
        "returncode": usage["returncode"],
        "wall_s": wall,
        "max_rss_mib": usage["max_rss_kib"] / 1024,  # KiB on Linux
        "cpu_s": usage["cpu_s"],
        "sampled_peak_mib": sampler.peak_kib() / 1024,  # with the ~10 MiB wrapper
        "rss_timeline_mib": sampler.timeline_mib(),
    }


def export_runs(config: Path, events: int, reps: int, log: Path) -> dict[str, Any]:
    """``clindav audit export --format jsonl`` to /dev/null, ``reps`` times."""
    cmd = [*peers.CLINDAV, "audit", "export", "--format", "jsonl", "--config", str(config)]
    runs = []
    for rep in range(reps):
        run = run_measured(cmd, log)
        run["events_s"] = events / run["wall_s"] if run["wall_s"] else None
        runs.append(run)
        print(
            f"[bench] audit export of {events} events (run {rep}): {run['wall_s']:.1f} s, "
            f"peak RSS {run['max_rss_mib']:.1f} MiB, exit {run['returncode']}",
            flush=True,
        )
    walls = sorted(r["wall_s"] for r in runs)
    return {
        "events": events,
        "command": "clindav audit export --format jsonl --config ... > /dev/null",
        "runs": runs,
        "wall_s": walls[len(walls) // 2],
        "max_rss_mib": max(r["max_rss_mib"] for r in runs),
        "ok": all(r["returncode"] == 0 for r in runs),
    }


def verify(config: Path, log: Path) -> dict[str, Any]:
    """``clindav audit verify`` on a generated table (proves the generator's chain)."""
    began = time.perf_counter()
    proc = subprocess.run(
        [*peers.CLINDAV, "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=peers.REPO,
        env=peers._clindav_env(),
        timeout=600,
    )
    with open(log, "a") as err:
        err.write(proc.stderr)
    return {
        "returncode": proc.returncode,
        "wall_s": time.perf_counter() - began,
        "output": proc.stdout.strip()[-300:],
        "intact": proc.returncode == 0 and "intact" in proc.stdout,
    }


def record_cost(config: Path, n: int) -> dict[str, Any]:
    """``AuditLog.record`` of a GET's event against this instance's database, ``n`` times."""
    from gateway.auth.base import Principal
    from gateway.pipeline import RequestInfo

    engine, sessions, audit, _key = _open(config)
    request = RequestInfo(
        "bench", Principal("bench", frozenset({"clinicians"})), "127.0.0.1", "bench", "GET"
    )
    try:
        with sessions() as session:
            from sqlalchemy import func, select

            from gateway.db import AuditEvent

            rows = session.scalar(select(func.count()).select_from(AuditEvent))

        def one() -> None:
            audit.record(
                request,
                action="GET",
                share="clinical",
                path="/9434765919/get-c0.jpg",
                status=200,
                code="ok",
            )

        figures = time_step(one, n)
    finally:
        engine.dispose()
    figures["events_in_table"] = rows
    return figures


def record_concurrent(config: Path, threads: int, per_thread: int) -> dict[str, Any]:
    """``threads`` threads each calling ``AuditLog.record`` ``per_thread`` times at once.

    What concurrent requests do: each commit takes the ``audit_head`` lock, so
    the others wait (SQLite: its busy handler, which sleeps and retries).
    """
    from gateway.auth.base import Principal
    from gateway.pipeline import RequestInfo

    engine, _sessions, audit, _key = _open(config)
    request = RequestInfo(
        "bench", Principal("bench", frozenset({"clinicians"})), "127.0.0.1", "bench", "GET"
    )
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            audit.record(
                request, action="GET", share="clinical", path="/x.jpg", status=200, code="ok"
            )
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    try:
        for t in pool:
            t.start()
        barrier.wait()
        began = time.perf_counter()
        for t in pool:
            t.join()
        wall = time.perf_counter() - began
    finally:
        engine.dispose()
    return {
        "threads": threads,
        "events": len(latencies),
        "events_s": len(latencies) / wall if wall else None,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "max_ms": max(latencies),
    }


def audit_benchmark(
    work: Path, scale: Any, main_config: Path | None, summary: dict[str, Any]
) -> dict[str, Any]:
    """The per-GET audit cost first (before anything big is written), then export memory
    at two table sizes, then the audit write against the big table."""
    from gateway.admin.instance import init_instance

    began = time.monotonic()
    log = work / "clindav-audit-cli.log"
    out: dict[str, Any] = {"record": {}}
    has_main = main_config is not None and main_config.exists()
    if main_config is not None and has_main:
        out["record"]["main_instance"] = record_cost(main_config, scale.audit_record_n)
        out["record_concurrent"] = {
            "database": "main_instance",
            **{
                str(n): record_concurrent(main_config, n, scale.audit_record_n)
                for n in (1, loads.MAX_CLIENTS)
            },
        }
    small_config = init_instance(work / "audit-small")
    print(f"[bench] audit: generating {scale.audit_events_small} events", flush=True)
    out["small_fill"] = fill_audit(small_config, scale.audit_events_small)
    os.sync()  # the load ran with synchronous=OFF: write it back before timing anything
    out["small_verify"] = verify(small_config, log)
    out["small_export"] = export_runs(
        small_config, scale.audit_events_small, scale.audit_small_reps, log
    )
    big_config = init_instance(work / "audit-big")
    print(f"[bench] audit: generating {scale.audit_events} events", flush=True)
    out["big_fill"] = fill_audit(big_config, scale.audit_events)
    os.sync()
    print(
        f"[bench] audit: {scale.audit_events} events in {out['big_fill']['seconds']:.1f} s",
        flush=True,
    )
    out["big_export"] = export_runs(big_config, scale.audit_events, 1, log)
    small_peak = out["small_export"]["max_rss_mib"]
    big_peak = out["big_export"]["max_rss_mib"]
    out["rss_ratio_big_to_small"] = big_peak / small_peak if small_peak else None
    out["record"]["big_table"] = record_cost(big_config, scale.audit_record_n)
    if not has_main:
        out["record_concurrent"] = {
            "database": "big_table",
            **{
                str(n): record_concurrent(big_config, n, scale.audit_record_n)
                for n in (1, loads.MAX_CLIENTS)
            },
        }
    out["per_get"] = per_get_share(out["record"], summary)
    out["duration_s"] = time.monotonic() - began
    return out


def per_get_share(record: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The audit write as a share of a GET: wall ms / GET p50, CPU ms / server CPU per GET."""
    rows: dict[str, Any] = {}
    for load in (GET_LOAD, "get_4mb_c8"):
        get = summary.get(load, {}).get("clindav", {})
        p50, cpu = get.get("p50_ms"), get.get("cpu_ms_per_req")
        for where, fig in record.items():
            rows[f"{load}/{where}"] = {
                "load": load,
                "database": where,
                "record_wall_ms": fig["wall_ms_median"],
                "record_cpu_ms": fig["cpu_ms_median"],
                "get_p50_ms": p50,
                "get_server_cpu_ms": cpu,
                "share_of_p50": fig["wall_ms_median"] / p50 if p50 else None,
                "share_of_server_cpu": fig["cpu_ms_median"] / cpu if cpu else None,
            }
    return rows
