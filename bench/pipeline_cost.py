"""In-process cost of the per-photo pipeline steps, median of N runs each.

Measured on the 4 MB phone JPEG, in this process, with the gateway's own
functions: the at-rest encryption (``encrypt_bytes``, and ``EncryptedContent.
seal`` which adds the data-key wrap), SHA-256 of the body (the registry
digest), the audit row commit (``AuditLog.record`` into a fresh SQLite
instance), the JPEG metadata scrubber when ``plugins.formats`` imports, and,
for scale, ``piexif.remove`` and decryption.  Both CPU time of the calling
thread and wall time are kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import piexif

Step = Callable[[], object]


def time_step(step: Step, n: int) -> dict[str, Any]:
    """Median and spread of CPU and wall milliseconds of ``step`` over ``n`` runs."""
    cpu: list[float] = []
    wall: list[float] = []
    step()  # warm-up (imports, caches)
    for _ in range(n):
        c0, w0 = time.thread_time(), time.perf_counter()
        step()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return {
        "n": n,
        "cpu_ms_median": statistics.median(cpu),
        "wall_ms_median": statistics.median(wall),
        "wall_ms_min": min(wall),
        "wall_ms_max": max(wall),
    }


def measure_pipeline(photo: bytes, n: int, work: Path) -> dict[str, Any]:
    """Every step's figures plus the pipeline total (scrub + seal + sha256 + audit)."""
    steps: dict[str, Any] = {}
    _crypto_steps(photo, n, steps)
    steps["sha256"] = time_step(lambda: hashlib.sha256(photo).digest(), n)
    steps["piexif_remove"] = time_step(lambda: piexif.remove(photo, io.BytesIO()), n)
    steps["scrub_jpeg"] = _scrub_step(photo, n)
    steps.update(_instance_steps(photo, n, work))
    return {
        "photo_bytes": len(photo),
        "steps": steps,
        "total": _total(steps),
        "target_total": _target_total(steps),
    }


def _crypto_steps(photo: bytes, n: int, steps: dict[str, Any]) -> None:
    from gateway.crypto.fileformat import decrypt_bytes, encrypt_bytes

    key = os.urandom(32)
    file_id = uuid.uuid4()
    steps["encrypt_bytes"] = time_step(lambda: encrypt_bytes(key, file_id, "bench-key", photo), n)
    stored = encrypt_bytes(key, file_id, "bench-key", photo)
    steps["decrypt_bytes"] = time_step(lambda: decrypt_bytes(key, stored), n)


def _scrub_step(photo: bytes, n: int) -> dict[str, Any]:
    try:
        from plugins.formats import scrubber_for
        from plugins.scrub.base import ScrubOptions

        scrubber = scrubber_for("jpeg")
        options = ScrubOptions()
        scrubber.clean(photo, options)
    except Exception as exc:  # report why, the rest of the bench still runs
        return {"unavailable": f"{type(exc).__name__}: {exc}"}
    result = time_step(lambda: scrubber.clean(photo, options), n)
    result["output_bytes"] = len(scrubber.clean(photo, options).data)
    return result


def _instance_steps(photo: bytes, n: int, work: Path) -> dict[str, Any]:
    """Steps that need a real instance: sealing with a wrapped data key, the audit commit."""
    try:
        services = _services(work / "pipeline-instance")
    except Exception as exc:
        reason = {"unavailable": f"{type(exc).__name__}: {exc}"}
        return {"policy_stages": reason, "seal": reason, "audit_commit": reason}
    from gateway.auth.base import Principal
    from gateway.pipeline import RequestInfo

    content = services.shares["clinical"].content
    request = RequestInfo(
        "bench", Principal("bench", frozenset({"clinicians"})), "127.0.0.1", "bench", "PUT"
    )
    steps = _stage_steps(services, request, photo, n)
    steps["streamed_body"] = _streamed_step(services, request, photo, n)

    def seal() -> bytes:
        return b"".join(content.seal(uuid.uuid4(), photo).chunks)

    def audit() -> None:
        services.audit.record(
            request,
            action="PUT",
            share="clinical",
            path="/9434765919/IMG_0001.jpg",
            status=201,
            code="stored",
        )

    steps["seal"] = time_step(seal, n)
    steps["audit_commit"] = time_step(audit, n)
    return steps


def _stage_steps(services: Any, request: Any, photo: bytes, n: int) -> dict[str, Any]:
    """The clinical share's configured PUT stages (default policy): each stage, timed
    inside whole pipeline runs (a stage may need what an earlier one found), and all."""
    from gateway.pipeline import PutContext

    stages = services.policy.pipeline("clinical").stages
    cpu: dict[str, list[float]] = {s.name: [] for s in stages}
    wall: dict[str, list[float]] = {s.name: [] for s in stages}

    def run_all() -> None:
        ctx = PutContext(request, "clinical", "/9434765919/IMG_0001.jpg", photo, "image/jpeg")
        for stage in stages:
            c0, w0 = time.thread_time(), time.perf_counter()
            stage.on_put(ctx)
            cpu[stage.name].append((time.thread_time() - c0) * 1000)
            wall[stage.name].append((time.perf_counter() - w0) * 1000)

    try:
        total = time_step(run_all, n)
    except Exception as exc:
        return {"policy_stages": {"unavailable": f"{type(exc).__name__}: {exc}"}}
    steps: dict[str, Any] = {}
    for stage in stages:
        samples_cpu, samples_wall = cpu[stage.name][1:], wall[stage.name][1:]  # skip warm-up
        steps[f"stage_{stage.name}"] = {
            "n": len(samples_cpu),
            "cpu_ms_median": statistics.median(samples_cpu),
            "wall_ms_median": statistics.median(samples_wall),
        }
    steps["policy_stages"] = {**total, "stages": [s.name for s in stages]}
    return steps


def _streamed_step(services: Any, request: Any, photo: bytes, n: int) -> dict[str, Any]:
    """What a streamed PUT of the photo runs past HTTP and before the commit: the clinical
    share's stages on its head, then the photo in 1 MiB blocks through their filters
    (structural check, scrub) and the sealer into a temp file (fsynced; deleted)."""
    from gateway.dav.provider import StreamedBody
    from gateway.pipeline import HEAD_BYTES, PutContext

    share = services.shares["clinical"]
    pipeline = services.policy.pipeline("clinical")
    blocks = [photo[i : i + _BLOCK] for i in range(0, len(photo), _BLOCK)]

    def stream() -> None:
        ctx = PutContext(
            request, "clinical", "/9434765919/IMG_0001.jpg", photo[:HEAD_BYTES], "image/jpeg"
        )
        ctx.streamed_size = len(photo)
        body = StreamedBody.open(pipeline, ctx, share.content, share.store.root)
        body.pour(blocks).path.unlink()

    try:
        return time_step(stream, n)
    except Exception as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


# The block size of a streamed body (the default server.block_size).
_BLOCK = 1024 * 1024


def _services(folder: Path) -> Any:
    from gateway.admin.instance import init_instance
    from gateway.app import build_services
    from gateway.settings import load_settings

    return build_services(load_settings(init_instance(folder)))


def _target_total(steps: dict[str, Any]) -> dict[str, Any]:
    """Issue 9's pipeline figure: scrub + encrypt + hash + audit, without the
    filetype stage's structural check and the consent lookup (shown in ``total``)."""
    scrub = "stage_scrub" if "cpu_ms_median" in steps.get("stage_scrub", {}) else "scrub_jpeg"
    return _sum(steps, [scrub, "seal", "sha256", "audit_commit"])


def _sum(steps: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    present = [p for p in parts if "cpu_ms_median" in steps.get(p, {})]
    return {
        "parts": present,
        "missing": [p for p in parts if p not in present],
        "cpu_ms_median_sum": sum(steps[p]["cpu_ms_median"] for p in present),
        "wall_ms_median_sum": sum(steps[p]["wall_ms_median"] for p in present),
    }


def _total(steps: dict[str, Any]) -> dict[str, Any]:
    """The pipeline per photo: the configured stages + scrub + seal + sha256 + audit commit.

    The standalone scrubber is added only while no configured stage is a scrub
    stage (once it is wired into the policy, ``policy_stages`` includes it).
    """
    configured = steps.get("policy_stages", {}).get("stages", [])
    parts = ["policy_stages", "seal", "sha256", "audit_commit"]
    if not any("scrub" in name for name in configured):
        parts.insert(1, "scrub_jpeg")
    return _sum(steps, parts)
