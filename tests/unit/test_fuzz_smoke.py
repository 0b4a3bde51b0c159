"""The atheris fuzz target for the scrubbers runs, bounded, and finds nothing.

Runs ``tests/fuzz_scrub.py`` (libFuzzer via atheris) as a subprocess for
about 20 s with a fresh seed corpus, so CI exercises the target on every run:
exit status 0 means only MalformedImage/ScrubRefused were raised (anything
else makes libFuzzer stop, save a ``crash-*`` reproducer and exit non-zero),
and the run count libFuzzer prints proves inputs were actually executed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "tests" / "fuzz_scrub.py"
SECONDS = 20
MIN_RUNS = 1000
# libFuzzer's last lines: "#12345\tDONE   cov: ..." and "Done 12345 runs in 20 second(s)".
DONE_LINE = re.compile(r"^#(\d+)\s+DONE\b", re.MULTILINE)
DONE_RUNS = re.compile(r"^Done (\d+) runs in \d+ second", re.MULTILINE)


def _env(corpus: Path) -> dict[str, str]:
    extra = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{extra}" if extra else str(REPO),
        "CLINDAV_FUZZ_SECONDS": str(SECONDS),
        "CLINDAV_FUZZ_CORPUS": str(corpus),
    }


def _require_atheris() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import atheris"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.fail(
            f"atheris is not importable by {sys.executable} "
            f"({(probe.stderr.strip().splitlines() or ['?'])[-1]}): "
            "install the test extras, e.g. `pip install -e '.[test]'` (atheris is listed there)"
        )


def test_scrubber_fuzz_target_runs_clean_for_a_bounded_time(tmp_path: Path) -> None:
    _require_atheris()
    corpus = tmp_path / "corpus"  # fresh each run: the seed is the generated dirty corpus
    proc = subprocess.run(
        [sys.executable, str(TARGET), f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=2048"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(corpus),
        timeout=SECONDS + 120,
    )
    output = proc.stdout + proc.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-")))
    assert proc.returncode == 0, (
        f"fuzz target exited {proc.returncode}; reproducers in {tmp_path}: {crashes}\n"
        + output[-4000:]
    )
    assert not crashes, crashes
    runs = [int(n) for n in DONE_LINE.findall(output) + DONE_RUNS.findall(output)]
    assert runs, f"no libFuzzer DONE line in the output:\n{output[-2000:]}"
    assert max(runs) > MIN_RUNS, f"only {max(runs)} inputs executed:\n{output[-2000:]}"
    assert any(corpus.iterdir()), "the seed corpus was not written"
