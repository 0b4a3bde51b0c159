"""Interleaved A/B runs between clindav instances, and their paired ratios.

The issue-specific comparisons (LDAP against local auth, the pipeline with
and without the consent stage) run the same phase on two or more clindav
instances in turn within each repetition, alternating the order from one
repetition to the next (A B, B A, A B, ...) so neither instance always runs
first.  Ratios are paired like the main loads: the median over repetitions of
(instance figure / reference figure in the same repetition), with the spread
(lowest and highest per-repetition ratio) beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import loads, report
from bench.client import median
from bench.peers import Peer

Raw = dict[str, dict[str, list[dict[str, Any]]]]


def progress(rep: int, load: str, peer: str, run: dict[str, Any]) -> None:
    """One line per measured phase, so a long run shows where it is."""
    headline = report.HEADLINE.get(load, "req_s" if "propfind" in load else "mb_s")
    value = run.get(headline)
    shown = f"{value:.1f}" if value is not None else "-"
    errors = f" errors={run['errors']}" if run["errors"] else ""
    if run["cleanup_errors"]:
        errors += f" cleanup-errors={len(run['cleanup_errors'])}"
    print(f"[bench] rep {rep} {load:18} {peer:8} {headline}={shown}{errors}", flush=True)


def interleaved(
    instances: list[Peer], specs: Callable[[int], list[loads.PhaseSpec]], reps: int
) -> Raw:
    """Every phase of ``specs(rep)`` on every instance, order alternating per repetition."""
    raw: Raw = {}
    for rep in range(reps):
        order = instances if rep % 2 == 0 else list(reversed(instances))
        for spec in specs(rep):
            for peer in order:
                if not peer.alive():
                    continue
                run = loads.run_record(loads.measure(peer, spec), rep)
                raw.setdefault(spec.name, {}).setdefault(peer.name, []).append(run)
                progress(rep, spec.name, peer.name, run)
    return raw


def ratio_runs(raw: Raw, load: str, peer: str, reference: str, figure: str) -> list[float | None]:
    """Per-repetition ratios ``peer / reference`` of ``figure`` (paired by repetition)."""
    mine = {r["rep"]: r.get(figure) for r in raw.get(load, {}).get(peer, [])}
    base = {r["rep"]: r.get(figure) for r in raw.get(load, {}).get(reference, [])}
    out: list[float | None] = []
    for rep in sorted(mine):
        value, ref = mine[rep], base.get(rep)
        out.append(value / ref if value is not None and ref else None)
    return out


def ratio_summary(raw: Raw, load: str, peer: str, reference: str, figure: str) -> dict[str, Any]:
    """Median paired ratio with its spread: ``{"median", "min", "max", "runs"}``."""
    runs = ratio_runs(raw, load, peer, reference, figure)
    present = [r for r in runs if r is not None]
    return {
        "figure": figure,
        "reference": reference,
        "median": median(present),
        "min": min(present) if present else None,
        "max": max(present) if present else None,
        "runs": runs,
    }


def errors_in(raw: Raw) -> list[str]:
    """Failed requests and clean-up failures of every phase, for the report."""
    found = []
    for load, by_peer in raw.items():
        for peer, runs in by_peer.items():
            for run in runs:
                found += [f"{peer} {load}: {e}" for e in run.get("error_samples", [])]
                found += [f"{peer} {load} clean-up: {e}" for e in run.get("cleanup_errors", [])]
    return found[:20]
