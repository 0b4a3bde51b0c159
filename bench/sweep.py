"""Block-size sweep: clindav's ``server.block_size`` against 4 MB PUT/GET at C=1.

For each of ``scale.sweep_reps`` rounds and each size (interleaved: 8K 64K
256K 1M 8K ...), the instance's clindav.yaml is edited, clindav is
restarted, and one PUT phase and one GET phase are measured.  The size with
the best combined throughput (each figure relative to the best size for it,
summed) is the recommendation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.client import median
from bench.loads import (
    PUT_OK,
    PhaseSpec,
    Scale,
    delete_photos,
    get_photo,
    measure,
    prepare_photos,
    put_photo,
    warm_up,
)
from bench.peers import new_instance, set_server_setting, start_clindav

KiB = 1024
SIZES = (8 * KiB, 64 * KiB, 256 * KiB, 1024 * KiB)


def block_size_sweep(work: Path, photo: bytes, scale: Scale) -> dict[str, Any]:
    """MB/s for PUT and GET 4 MB at C=1 per block size, medians and the best size.

    The sweep has its own fresh instance (``clindav init``'s function), so its schema
    matches the code it runs; its clindav.yaml is edited between runs.
    """
    config = new_instance(work, "clindav-sweep")
    original = config.read_text()
    runs: dict[int, dict[str, list[float | None]]] = {s: {"put": [], "get": []} for s in SIZES}
    errors: list[str] = []
    try:
        for rep in range(scale.sweep_reps):
            for size in SIZES:
                _one_run(config, photo, scale, rep, size, runs[size], errors)
    finally:
        config.write_text(original)
    return _summarise(runs, errors)


def _one_run(
    config: Path,
    photo: bytes,
    scale: Scale,
    rep: int,
    size: int,
    into: dict[str, list[float | None]],
    errors: list[str],
) -> None:
    set_server_setting(config, "block_size", size)
    peer = start_clindav(config, tag=f"-bs{size // KiB}k")
    try:
        if rep == 0 and size == SIZES[0]:
            prepare_photos(peer, photo, 1)
        warm_up(peer, photo)
        put = PhaseSpec(
            "sweep_put",
            1,
            scale.sweep_requests,
            put_photo(photo, 1000 + rep),
            PUT_OK,
            delete_photos(1000 + rep, 1, scale.sweep_requests),
        )
        get = PhaseSpec("sweep_get", 1, scale.sweep_requests, get_photo, (200,))
        for key, spec in (("put", put), ("get", get)):
            result = measure(peer, spec)
            errors.extend(f"{size}: {key}: {e}" for e in result.errors)
            errors.extend(f"{size}: clean-up: {e}" for e in result.extra.get("cleanup_errors", []))
            into[key].append(result.figures()["mb_s"] if not result.errors else None)
    finally:
        peer.stop()


def _summarise(runs: dict[int, dict[str, list[float | None]]], errors: list[str]) -> dict[str, Any]:
    put = {size: median(r["put"]) or 0.0 for size, r in runs.items()}
    get = {size: median(r["get"]) or 0.0 for size, r in runs.items()}
    best_put, best_get = max(put.values()) or 1.0, max(get.values()) or 1.0
    score = {size: put[size] / best_put + get[size] / best_get for size in runs}
    table = {
        str(size): {
            "put_mb_s": put[size],
            "get_mb_s": get[size],
            "score": score[size],
            "put_runs": r["put"],
            "get_runs": r["get"],
        }
        for size, r in runs.items()
    }
    return {
        "sizes": table,
        "best_block_size": max(score, key=lambda s: score[s]),
        "best_put_block_size": max(put, key=lambda s: put[s]),
        "best_get_block_size": max(get, key=lambda s: get[s]),
        "errors": errors[:20],
    }
