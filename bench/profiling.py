"""Where clindav spends its time under load: py-spy samples, summarised.

``py-spy record --format raw`` writes collapsed stacks ("f1;f2;f3 count");
the summary lists the frames with the most samples on top of the stack
(self time) and those present anywhere in the stack (inclusive time), as a
share of all samples taken while the load ran.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import run_phase
from bench.loads import PhaseSpec
from bench.peers import Peer

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SHORTEN = re.compile(r"^.*/(site-packages|lib/python3\.\d+|main)/")


def py_spy() -> str | None:
    """The py-spy executable (next to this interpreter, or on PATH)."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profile_load(
    peer: Peer, make_spec: Callable[[int], PhaseSpec], seconds: int, out: Path
) -> dict[str, Any]:
    """Sample ``peer`` with py-spy for ``seconds`` while the load runs in a bounded loop.

    ``make_spec(round)`` gives each round's phase; clean-ups (deleting what PUT
    rounds wrote) run only after sampling ends, so they are not in the profile.
    """
    exe = py_spy()
    if exe is None:
        return {"unavailable": "py-spy not installed: /tmp/venv/bin/pip install py-spy"}
    cmd = [
        exe,
        "record",
        "--pid",
        str(peer.pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--nonblocking",
        "--duration",
        str(seconds),
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    deadline = time.monotonic() + seconds + 30
    rounds = 0
    cleanups = []
    while proc.poll() is None and time.monotonic() < deadline and rounds < 1000:
        spec = make_spec(rounds)
        run_phase(peer.url, peer.auth, peer.pid, spec.clients, spec.per_client, spec.fn, spec.ok)
        if spec.cleanup is not None:
            cleanups.append(spec.cleanup)
        rounds += 1
    try:
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        output = "py-spy did not finish"
    cleanup_errors = [e for cleanup in cleanups for e in cleanup(peer)]
    if proc.returncode != 0 or not out.exists():
        return {"unavailable": f"py-spy failed ({proc.returncode}): {output[-400:]}"}
    summary = summarise(out.read_text(errors="replace"))
    summary["load"] = make_spec(0).name
    summary["rounds"] = rounds
    summary["raw_file"] = out.name
    summary["cleanup_errors"] = cleanup_errors[:10]
    return summary


def _label(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({_SHORTEN.sub('', match['file'])})"


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """Top self and inclusive frames from collapsed stacks, as % of samples."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_label(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for label in set(frames):
            incl_counts[label] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": label, "pct": 100 * n / total, "samples": n}
            for label, n in counter.most_common(top)
        ]

    ours = Counter({k: v for k, v in incl_counts.items() if _is_ours(k)})
    return {
        "samples": total,
        "self": rows(self_counts),
        "inclusive": rows(incl_counts),
        "inclusive_clindav": rows(ours),
    }


def _is_ours(label: str) -> bool:
    """A frame in clindav's own code (gateway/ or plugins/)."""
    return "(gateway/" in label or "(plugins/" in label or "/gateway/" in label
