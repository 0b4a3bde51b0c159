"""Shared fixtures for the scrubber tests: the dirty corpus, its cleaned copies
and exiftool's view of both (one exiftool run per set, to stay fast)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from plugins.formats import scrubber_for
from plugins.scrub.base import ScrubOptions, ScrubResult
from tests.scrub_corpus import DirtyFile, dirty_corpus

EXIFTOOL = shutil.which("exiftool")


def exiftool_json(files: dict[str, bytes], directory: Path) -> dict[str, dict[str, object]]:
    """``exiftool -a -G1 -ee -j`` over ``files`` (name -> bytes), keyed by name."""
    if EXIFTOOL is None:
        pytest.skip("exiftool is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    paths = [str(directory / name) for name in files]
    run = subprocess.run(
        [EXIFTOOL, "-a", "-G1", "-ee", "-j", *paths], capture_output=True, check=False, timeout=60
    )
    return {Path(entry["SourceFile"]).name: entry for entry in json.loads(run.stdout)}


@pytest.fixture(scope="session")
def corpus() -> dict[str, DirtyFile]:
    return {dirty.name: dirty for dirty in dirty_corpus()}


@pytest.fixture(scope="session")
def cleaned(corpus: dict[str, DirtyFile]) -> dict[str, ScrubResult]:
    return {
        name: scrubber_for(dirty.format).clean(dirty.data, ScrubOptions())
        for name, dirty in corpus.items()
    }


@pytest.fixture(scope="session")
def exif_in(corpus: dict[str, DirtyFile], tmp_path_factory: pytest.TempPathFactory) -> dict:
    files = {name: dirty.data for name, dirty in corpus.items()}
    return exiftool_json(files, tmp_path_factory.mktemp("dirty"))


@pytest.fixture(scope="session")
def exif_out(cleaned: dict[str, ScrubResult], tmp_path_factory: pytest.TempPathFactory) -> dict:
    files = {name: result.data for name, result in cleaned.items()}
    return exiftool_json(files, tmp_path_factory.mktemp("clean"))
