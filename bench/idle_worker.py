"""Issue 21: the memory of an idle gateway worker.

A fresh instance (the default policy) is served by ``clindav serve`` with its
default number of worker processes (one per core, forked by a supervisor; one
process serves alone on one core).  Once it answers and has settled for
``SETTLE_S`` seconds, each worker's memory is read from /proc: ``VmRSS`` (the
target, under 60 MiB), and from ``smaps_rollup`` its proportional share
(``Pss``) and what it holds alone (``Private_Clean + Private_Dirty``); a
forked worker shares most of its pages with the supervisor and its siblings,
so RSS counts them once per process.  Then the same after one WebDAV GET of
a photo and a PROPFIND (the stages and the content codec in use).

The floor beside it: a bare interpreter that imports only the libraries a
worker cannot serve without (:data:`FLOOR_LIBRARIES`), measured the same way.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import peers, procstat
from bench.client import DavClient
from bench.loads import PATIENT
from bench.report import target_row

TARGET_MIB = 60.0
SETTLE_S = 2.0
FLOOR_LIBRARIES = (
    "import sqlalchemy.orm, pydantic, yaml, cheroot.wsgi, wsgidav.wsgidav_app, "
    "cryptography.hazmat.primitives.ciphers.aead"
)
_MEASURE = (
    "import pathlib; print(next(l.split()[1] for l in "
    "pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmRSS:')))"
)


def idle_worker(work: Path, photo: bytes) -> dict[str, Any]:
    """Every worker's memory after start and after first use; the floor; the target row."""
    config = peers.new_instance(work, "clindav-idle")
    peer = peers.start_clindav(config, tag="-idle", name="clindav-idle")
    try:
        time.sleep(SETTLE_S)
        idle = [memory(pid) for pid in workers(peer.pid)]
        dav = DavClient(peer.url, peer.auth)
        dav.request("MKCOL", PATIENT)
        dav.request("PUT", f"{PATIENT}/idle.jpg", photo)
        for _ in range(len(idle) * 4):  # reach every worker (the kernel spreads connections)
            fresh = DavClient(peer.url, peer.auth)
            fresh.request("GET", f"{PATIENT}/idle.jpg")
            fresh.request("PROPFIND", PATIENT, headers={"Depth": "1"})
            fresh.close()
        dav.close()
        used = [memory(pid) for pid in workers(peer.pid)]
    finally:
        peer.stop()
    result = {"workers": len(idle), "idle": idle, "after_use": used, "floor": floor()}
    result["targets"] = [_target(result)]
    return result


def workers(supervisor: int) -> list[int]:
    """The serving processes: the supervisor's children, or the process itself."""
    children = [pid for pid in procstat.process_tree(supervisor) if pid != supervisor]
    return children or [supervisor]


def memory(pid: int) -> dict[str, float]:
    """Resident (VmRSS), proportional (Pss) and private memory of one process, MiB."""
    rollup = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        rollup[key] = int(rest.split()[0])
    return {
        "rss_mib": rollup["Rss"] / 1024,
        "pss_mib": rollup["Pss"] / 1024,
        "private_mib": (rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024,
    }


def floor(runs: int = 5) -> dict[str, float]:
    """VmRSS (MiB, median of ``runs``) of the interpreter alone and with the libraries."""
    out = {}
    for name, code in (("python", ""), ("libraries", FLOOR_LIBRARIES + "; ")):
        values = [
            int(
                subprocess.run(
                    [sys.executable, "-c", code + _MEASURE],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            / 1024
            for _ in range(runs)
        ]
        out[f"{name}_rss_mib"] = statistics.median(values)
    return out


def _target(result: dict[str, Any]) -> dict[str, Any]:
    worst = max(w["rss_mib"] for w in result["idle"])
    pss = max(w["pss_mib"] for w in result["idle"])
    private = max(w["private_mib"] for w in result["idle"])
    return target_row(
        f"issue 21: idle worker RSS, MiB ({result['workers']} workers, the largest)",
        worst,
        f"< {TARGET_MIB:.0f}",
        worst < TARGET_MIB,
        f"Pss {pss:.1f} MiB, private {private:.1f} MiB; floor (interpreter and the "
        f"libraries a worker needs): {result['floor']['libraries_rss_mib']:.1f} MiB",
    )
