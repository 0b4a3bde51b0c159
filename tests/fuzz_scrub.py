"""Atheris (libFuzzer) target: any bytes to every scrubber; only documented errors.

The first input byte picks the scrubber, the rest is the file.  The seed
corpus is the generated dirty corpus (:mod:`tests.scrub_corpus`), written to
``$CLINDAV_FUZZ_CORPUS`` (default: ``clindav-scrub-fuzz`` in the temp
directory), where libFuzzer also keeps what it finds.  Any exception other
than MalformedImage or ScrubRefused is a crash: libFuzzer stops and saves the
input as ``crash-*``.

Runs for a bounded time: ``CLINDAV_FUZZ_SECONDS`` (default 60) or an explicit
``-max_total_time=N`` argument; other libFuzzer flags pass through::

    PYTHONPATH=. CLINDAV_FUZZ_SECONDS=120 python tests/fuzz_scrub.py
    PYTHONPATH=. python tests/fuzz_scrub.py -max_total_time=30 -rss_limit_mb=2048

Needs ``pip install atheris``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["plugins.scrub"]):
    from plugins.formats import SCRUBBERS
    from plugins.scrub.base import MalformedImage, ScrubOptions, ScrubRefused

# Small enough that a fuzzed header cannot make Pillow allocate much.
OPTIONS = ScrubOptions(max_pixels=4_000_000)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    scrubber = SCRUBBERS[data[0] % len(SCRUBBERS)]
    with contextlib.suppress(MalformedImage, ScrubRefused):
        scrubber.clean(data[1:], OPTIONS)


def _seed_corpus(directory: Path) -> None:
    from tests.scrub_corpus import dirty_corpus

    formats = [scrubber.format_name for scrubber in SCRUBBERS]
    for dirty in dirty_corpus():
        selector = bytes([formats.index(dirty.format)])
        (directory / dirty.name).write_bytes(selector + dirty.data)


def main() -> None:
    args = list(sys.argv)
    if not any(arg.startswith("-max_total_time=") for arg in args):
        args.append(f"-max_total_time={int(os.environ.get('CLINDAV_FUZZ_SECONDS', '60'))}")
    if not any(not arg.startswith("-") for arg in args[1:]):
        # libFuzzer ends the process itself, so no temporary-directory cleanup
        # would run: use one fixed, reusable corpus directory instead.
        default = Path(tempfile.gettempdir()) / "clindav-scrub-fuzz"
        corpus = Path(os.environ.get("CLINDAV_FUZZ_CORPUS", default))
        corpus.mkdir(parents=True, exist_ok=True)
        _seed_corpus(corpus)
        args.append(str(corpus))
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
