"""Issue 21: how fast the command line starts.

``clindav --help`` and ``clindav audit tail --no-follow`` (on a fresh instance
whose audit table holds ``cli_events`` generated events, as an instance in use
does) each run ``cli_runs`` times as ``python -m gateway.cli ...`` from this
checkout, interleaved round by round with two floors: the bare interpreter
(``python -c pass``) and the libraries any database command needs
(``python -c "import sqlalchemy.orm, pydantic, yaml"``).  Bytecode caches are
warm, as an installed clindav has them (written once to a folder of the work
tree, never into the checkout).  Wall time of each run (the median is held
against the 0.3 s target) and its CPU time, which a busy machine inflates less.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import loads, peers
from bench.audit_load import fill_audit
from bench.report import target_row

TARGET_S = 0.3
FLOOR_LIBRARIES = "import sqlalchemy.orm, pydantic, yaml"


def commands(config: Path) -> dict[str, list[str]]:
    """What is timed, by name: the two commands and the two floors."""
    clindav = [sys.executable, "-m", "gateway.cli"]
    return {
        "clindav --help": [*clindav, "--help"],
        "clindav audit tail --no-follow": [
            *clindav,
            *("audit", "tail", "--no-follow", "--config", str(config)),
        ],
        "python -c pass": [sys.executable, "-c", "pass"],
        f'python -c "{FLOOR_LIBRARIES}"': [sys.executable, "-c", FLOOR_LIBRARIES],
    }


def _env(work: Path) -> dict[str, str]:
    env = {**peers._clindav_env(), "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=peers.REPO, env=env, capture_output=True, timeout=120)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[2:]} exited {proc.returncode}: {proc.stderr[-500:]!r}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def cli_start(work: Path, scale: loads.Scale) -> dict[str, Any]:
    """Timings of every command in :func:`commands`; the targets as report rows (the
    markdown: ``bench.report``)."""
    config = peers.new_instance(work, "clindav-cli")
    filled = fill_audit(config, scale.cli_events)
    env = _env(work)
    timed = commands(config)
    for cmd in timed.values():  # writes the bytecode caches
        _once(cmd, env)
    walls: dict[str, list[float]] = {name: [] for name in timed}
    cpus: dict[str, list[float]] = {name: [] for name in timed}
    loadavg = [os.getloadavg()[0]]
    for _round in range(scale.cli_runs):
        for name, cmd in timed.items():
            wall, cpu = _once(cmd, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
        loadavg.append(os.getloadavg()[0])
    figures = {
        name: {
            "median_s": statistics.median(runs),
            "min_s": min(runs),
            "max_s": max(runs),
            "cpu_median_s": statistics.median(cpus[name]),
            "runs": runs,
        }
        for name, runs in walls.items()
    }
    return {
        "runs": scale.cli_runs,
        "audit_events": filled["head_seq"],
        "loadavg_1min": {"min": min(loadavg), "max": max(loadavg)},
        "commands": figures,
        "targets": [_target(name, figures[name]) for name in list(timed)[:2]],
    }


def _target(name: str, figure: dict[str, Any]) -> dict[str, Any]:
    median = figure["median_s"]
    return target_row(
        f"issue 21: `{name}` start, median s",
        median,
        f"< {TARGET_S}",
        median < TARGET_S,
        f"runs {figure['min_s']:.3f}-{figure['max_s']:.3f} s",
    )
