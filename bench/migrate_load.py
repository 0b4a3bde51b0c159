"""Issue 21: how ``clindav migrate --jobs N`` scales with processes.

One legacy tree of ``migrate_photos`` distinct phone JPEGs (320x240 with a
phone's EXIF and GPS, as `clindav migrate` meets them on a practice's share),
25 per patient folder, is generated once; each run copies it into the
clinical share of a fresh instance (the default policy) and runs ``python -m
gateway.cli migrate clinical --jobs N`` as an admin would, for N = 1 and N =
2, interleaved, ``migrate_reps`` times.  The rate is files migrated per second
of the run (the report's own time: planning, every file, the folders tidied);
the figure held against the target is the median over repetitions of the
2-process rate over the 1-process rate of the same repetition.  Target: at
least 1.8 on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import loads, peers
from bench.console_load import patient_number
from bench.media import phone_jpeg
from bench.report import target_row

TARGET_RATIO = 1.8
PER_FOLDER = 25
JOBS = (1, 2)


def legacy_tree(root: Path, count: int) -> int:
    """``count`` distinct phone JPEGs in patient folders under ``root``; returns bytes."""
    total = 0
    for i in range(count):
        folder = root / patient_number(i // PER_FOLDER)
        folder.mkdir(parents=True, exist_ok=True)
        data = phone_jpeg((320, 240), 0)  # sensor noise: every photo differs
        (folder / f"IMG_{i:05d}.jpg").write_bytes(data)
        total += len(data)
    return total


def migrate_benchmark(work: Path, scale: loads.Scale) -> dict[str, Any]:
    """Rates of every run, per-repetition ratios and the target row."""
    source = work / "legacy-tree"
    size = legacy_tree(source, scale.migrate_photos)
    runs: dict[str, list[dict[str, Any]]] = {str(n): [] for n in JOBS}
    for rep in range(scale.migrate_reps):
        for jobs in JOBS:
            runs[str(jobs)].append(_run(work / f"migrate-{rep}-j{jobs}", source, jobs))
    ratios = [
        two["files_s"] / one["files_s"] for one, two in zip(runs["1"], runs["2"], strict=True)
    ]
    result = {
        "photos": scale.migrate_photos,
        "tree_bytes": size,
        "cpus": len(os.sched_getaffinity(0)),
        "runs": runs,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
    }
    result["targets"] = [_target(result)]
    return result


def _run(folder: Path, source: Path, jobs: int) -> dict[str, Any]:
    config = peers.new_instance(folder, "instance")
    share = config.parent / "shares" / "clinical"
    shutil.copytree(source, share, dirs_exist_ok=True)
    report = folder / "report.json"
    cmd = [*peers.CLINDAV, "migrate", "clinical", "--jobs", str(jobs)]
    cmd += ["--report", str(report), "--config", str(config)]
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=peers.REPO, env=peers._clindav_env(), capture_output=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(
            f"migrate --jobs {jobs} exited {proc.returncode}: {proc.stderr[-800:]!r}"
        )
    done = json.loads(report.read_text())
    migrated = len(done["migrated"])
    figures = {
        "jobs": jobs,
        "migrated": migrated,
        "left": len(done["left"]),
        "seconds": done["seconds"],
        "wall_s": wall,
        "files_s": migrated / done["seconds"],
        "loadavg_1min": os.getloadavg()[0],
    }
    shutil.rmtree(folder, ignore_errors=True)  # 2,000 photos a run: keep the work folder small
    return figures


def _target(result: dict[str, Any]) -> dict[str, Any]:
    one = statistics.median(r["files_s"] for r in result["runs"]["1"])
    two = statistics.median(r["files_s"] for r in result["runs"]["2"])
    return target_row(
        f"issue 21: migrate {result['photos']:,} photos, --jobs 2 / --jobs 1 files/s",
        result["ratio_median"],
        f">= {TARGET_RATIO} on 2 cores",
        result["ratio_median"] >= TARGET_RATIO,
        f"{one:.0f} and {two:.0f} files/s (medians); {result['cpus']} CPUs; "
        f"per-repetition {min(result['ratios']):.2f}-{max(result['ratios']):.2f}",
    )
