"""The benchmark's one command: ``python -m bench [--quick] [--peers rclone,apache]``.

Order of work: the in-process pipeline costs (nothing else running); start
plain WsgiDAV, clindav and the optional peers; prepare each (folders, photos,
the listing folder); warm up; then for each repetition run every load on
every peer in turn (A B C A B C ...); then the very large body once per peer;
optionally profile clindav; then the block-size sweep.  Results:
``bench/results/<timestamp>.json`` and ``.md``; the markdown is also printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`: import from the repo root,
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # not from bench/ itself

from bench import compare, loads, peers, report
from bench.media import phone_jpeg

RESULTS = Path(__file__).resolve().parent / "results"
SKIPPABLE = (
    "loads",
    "pipeline",
    "sweep",
    "huge",
    "ldap",
    "consent",
    "audit",
    "cli",
    "idle",
    "migrate",
    "console",
    "put",
    "nextcloud",
)
# Parts that need the main loads' servers (skipped with them).
NEEDS_LOADS = ("sweep", "huge")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="clindav beside plain WsgiDAV (and rclone crypt / Apache mod_dav) on loopback.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny loads (<60 s): a harness check")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, quick 2)")
    parser.add_argument(
        "--peers",
        default="rclone,apache",
        help="optional peers, comma-separated: rclone, apache, or none (default: both, "
        "each when installed)",
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated parts to skip: {', '.join(SKIPPABLE)}"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated parts to run, the others skipped (e.g. --only ldap,consent)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile clindav with py-spy under PUT, PROPFIND and GET loads",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    return parser.parse_args(argv)


def code_fingerprint() -> str:
    """SHA-256 over clindav's code and policies (gateway/, plugins/, policies/)."""
    digest = hashlib.sha256()
    repo = RESULTS.parent.parent
    for folder in ("gateway", "plugins", "policies"):
        for path in sorted((repo / folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                digest.update(str(path.relative_to(repo)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory and kernel of this machine."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def versions(started: list[peers.Peer]) -> dict[str, str]:
    """Versions of Python, the libraries and every peer that ran."""
    import cheroot
    import cryptography
    import PIL
    import wsgidav

    from gateway import __version__

    out = {
        "python": platform.python_version(),
        "wsgidav": wsgidav.__version__,
        "cheroot": cheroot.__version__,
        "clindav": __version__,
        "cryptography": cryptography.__version__,
        "pillow": PIL.__version__,
    }
    for peer in started:
        if peer.name not in ("wsgidav", "clindav"):
            out[peer.name] = peer.version
    return out


def start_peers(work: Path, optional: list[str], skipped: dict[str, str]) -> list[peers.Peer]:
    """WsgiDAV and clindav always; optional peers when installed (else a hint in ``skipped``)."""
    started = [peers.start_wsgidav(work), peers.start_clindav(peers.init_clindav(work))]
    starters = {"rclone": peers.start_rclone, "apache": peers.start_apache}
    for name in optional:
        try:
            started.append(starters[name](work))
        except peers.PeerUnavailable as exc:
            skipped[name] = str(exc)
            print(f"[bench] skipping {name}: {exc}", flush=True)
    return started


def prepare_all(
    started: list[peers.Peer], scale: loads.Scale, photo: bytes
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set up and warm up every peer; a peer that fails is reported and left out.

    Without the baseline there is nothing to compare with, so its failure is fatal.
    """
    setup: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    for peer in started:
        try:
            setup[peer.name] = loads.prepare(peer, scale, photo)
            loads.warm_up(peer, photo)
        except Exception as exc:
            if peer.name == report.BASELINE:
                raise
            failures[peer.name] = {"error": str(exc), "log_tail": peer.log_tail()}
            print(f"[bench] {peer.name} left out, setup failed: {exc}", flush=True)
            peer.stop()
    return setup, failures


def run_reps(
    started: list[peers.Peer], scale: loads.Scale, reps: int, photo: bytes, piece: bytes
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every load on every peer, interleaved per load, ``reps`` times; raw per-run figures."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rep in range(reps):
        for spec in loads.phases(scale, photo, piece, rep):
            for peer in started:
                if not peer.alive():
                    continue
                run = loads.run_record(loads.measure(peer, spec), rep)
                raw.setdefault(spec.name, {}).setdefault(peer.name, []).append(run)
                compare.progress(rep, spec.name, peer.name, run)
    return raw


def log_findings(started: list[peers.Peer], work: Path) -> dict[str, list[str]]:
    """Error and traceback lines in each server's log (clindav: every log it wrote)."""
    findings: dict[str, list[str]] = {}
    names = {p.name: [p.log_path] for p in started if p.name != "clindav"}
    names["clindav"] = sorted(work.glob("clindav*.log"))  # every instance, extra ones too
    for name, paths in names.items():
        lines: list[str] = []
        for path in paths:
            for line in path.read_text(errors="replace").splitlines():
                if any(m in line for m in (" ERROR ", "Traceback", "CRITICAL", " 500 ")):
                    lines.append(f"{path.name}: {line.strip()}")
        findings[name] = lines[:50]
    return findings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = loads.QUICK if args.quick else loads.FULL
    reps = args.reps or scale.reps
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if (skip | only) - set(SKIPPABLE):
        print(
            f"unknown parts {sorted((skip | only) - set(SKIPPABLE))}; choose from "
            f"{', '.join(SKIPPABLE)}",
            file=sys.stderr,
        )
        return 2
    if only:
        skip |= set(SKIPPABLE) - only
    if "loads" in skip:
        skip |= set(NEEDS_LOADS)
    optional = [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"]
    unknown = [p for p in optional if p not in peers.OPTIONAL_PEERS]
    if unknown:
        print(f"unknown peers {unknown}; choose from {peers.OPTIONAL_PEERS}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="clindav-bench-"))
    try:
        result = run_all(args, scale, reps, skip, optional, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"[bench] work folder kept: {work}")
    paths = write_results(result, args.out)
    print(report.markdown(result))
    print(f"[bench] wrote {paths[0]} and {paths[1]}")
    return 0


def run_all(
    args: argparse.Namespace,
    scale: loads.Scale,
    reps: int,
    skip: set[str],
    optional: list[str],
    work: Path,
) -> dict[str, Any]:
    """Every part of the benchmark; returns the whole result document."""
    started_at = time.monotonic()
    fingerprint = code_fingerprint()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    photo = phone_jpeg(scale.photo_size, scale.photo_target)
    piece = loads.new_piece()
    print(f"[bench] photo {len(photo)} bytes; work folder {work}", flush=True)
    result: dict[str, Any] = {}
    if "pipeline" not in skip:
        from bench.pipeline_cost import measure_pipeline

        result["pipeline"] = measure_pipeline(photo, scale.pipeline_n, work)
    skipped: dict[str, str] = {}
    started: list[peers.Peer] = []
    main_config: Path | None = None
    if "loads" in skip:
        result.update(setup={}, failures={}, raw={})
    else:
        started, main_config = _main_loads(
            args, scale, reps, skip, optional, work, photo, piece, stamp, result, skipped
        )
    result["summary"] = report.summarise_loads(result["raw"])
    result["ratios"] = report.paired_ratios(result["raw"])
    _issue_loads(result, skip, work, photo, scale, reps, main_config)
    result["server_log_findings"] = log_findings(started, work)
    main_targets = (
        report.check_targets(
            result["ratios"], result.get("huge", {}), result.get("pipeline"), result["summary"]
        )
        if result["raw"]
        else []
    )
    result["targets"] = main_targets + report.issue_targets(result)
    result["meta"] = _meta(args, stamp, reps, scale, photo, started, skipped, started_at)
    end_fingerprint = code_fingerprint()
    result["meta"]["code"] = {
        "fingerprint_at_start": fingerprint,
        "fingerprint_at_end": end_fingerprint,
        "changed_during_run": fingerprint != end_fingerprint,
    }
    return result


def _main_loads(
    args: argparse.Namespace,
    scale: loads.Scale,
    reps: int,
    skip: set[str],
    optional: list[str],
    work: Path,
    photo: bytes,
    piece: bytes,
    stamp: str,
    result: dict[str, Any],
    skipped: dict[str, str],
) -> tuple[list[peers.Peer], Path | None]:
    """WsgiDAV, clindav and the optional peers: the main loads, the profile, the very
    large body, then the block-size sweep.  Returns the peers that ran and clindav's yaml."""
    started = start_peers(work, optional, skipped)
    clindav = next(p for p in started if p.name == "clindav")
    try:
        result["setup"], result["failures"] = prepare_all(started, scale, photo)
        ready = [p for p in started if p.name in result["setup"]]
        result["raw"] = run_reps(ready, scale, reps, photo, piece)
        if args.profile and clindav in ready:
            result["profile"] = _profile(clindav, scale, photo, piece, args.out, stamp)
        assert clindav.config_path is not None
        result["server_settings"] = {"clindav": peers.server_settings(clindav.config_path)}
        if "huge" not in skip:
            result["huge"] = {}
            for peer in ready:
                fresh = peers.restart(peer, work)
                started[started.index(peer)] = fresh
                result["huge"][peer.name] = _huge(fresh, scale, piece)
                fresh.stop()
    finally:
        for peer in started:
            peer.stop()
    if "sweep" not in skip and "clindav" in result["setup"]:
        from bench.sweep import block_size_sweep

        print("[bench] block-size sweep", flush=True)
        result["block_size_sweep"] = block_size_sweep(work, photo, scale)
    return started, clindav.config_path


def _issue_loads(
    result: dict[str, Any],
    skip: set[str],
    work: Path,
    photo: bytes,
    scale: loads.Scale,
    reps: int,
    main_config: Path | None,
) -> None:
    """The issue-specific comparisons (LDAP, consent stage, audit at scale, command-line
    start, an idle worker's memory, migration, the console, the Nextcloud apps' listings),
    each on its own fresh instances after the main servers stopped; a part that fails is
    reported, not fatal."""
    parts = {
        "ldap": lambda: _ldap(work, photo, scale, reps),
        "consent": lambda: _consent(work, photo, scale, max(reps, scale.consent_reps)),
        "audit": lambda: _audit(work, scale, main_config, result["summary"]),
        "cli": lambda: _cli(work, scale),
        "idle": lambda: _idle(work, photo),
        "migrate": lambda: _migrate(work, scale),
        "console": lambda: _console(work, photo, scale),
        "put": lambda: _put(work, photo, scale, reps),
        "nextcloud": lambda: _nextcloud(work, scale),
    }
    for name, part in parts.items():
        if name in skip:
            continue
        began = time.monotonic()
        try:
            result[name] = part()
        except Exception as exc:
            print(f"[bench] {name} part failed: {type(exc).__name__}: {exc}", flush=True)
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        result[name]["part_seconds"] = time.monotonic() - began
        print(f"[bench] {name} part took {result[name]['part_seconds']:.0f} s", flush=True)


def _ldap(work: Path, photo: bytes, scale: loads.Scale, reps: int) -> dict[str, Any]:
    from bench.ldap_load import ldap_comparison

    return ldap_comparison(work, photo, scale, reps)


def _consent(work: Path, photo: bytes, scale: loads.Scale, reps: int) -> dict[str, Any]:
    from bench.consent_load import consent_comparison

    return consent_comparison(work, photo, scale, reps)


def _audit(
    work: Path, scale: loads.Scale, main_config: Path | None, summary: dict[str, Any]
) -> dict[str, Any]:
    from bench.audit_load import audit_benchmark

    return audit_benchmark(work, scale, main_config, summary)


def _cli(work: Path, scale: loads.Scale) -> dict[str, Any]:
    from bench.cli_start import cli_start

    return cli_start(work, scale)


def _idle(work: Path, photo: bytes) -> dict[str, Any]:
    from bench.idle_worker import idle_worker

    return idle_worker(work, photo)


def _migrate(work: Path, scale: loads.Scale) -> dict[str, Any]:
    from bench.migrate_load import migrate_benchmark

    return migrate_benchmark(work, scale)


def _console(work: Path, photo: bytes, scale: loads.Scale) -> dict[str, Any]:
    from bench.console_load import console_benchmark

    return console_benchmark(work, photo, scale)


def _put(work: Path, photo: bytes, scale: loads.Scale, reps: int) -> dict[str, Any]:
    from bench.put_load import put_comparison

    return put_comparison(work, photo, scale, reps)


def _nextcloud(work: Path, scale: loads.Scale) -> dict[str, Any]:
    from bench.nextcloud_load import nextcloud_benchmark

    return nextcloud_benchmark(work, scale)


def _huge(peer: peers.Peer, scale: loads.Scale, piece: bytes) -> dict[str, Any]:
    print(f"[bench] very large body ({scale.huge_bytes / 1e6:.0f} MB) on {peer.name}", flush=True)
    try:
        return loads.huge_transfer(peer, scale.huge_bytes, piece)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "bytes": scale.huge_bytes}


def _profile(
    clindav: peers.Peer, scale: loads.Scale, photo: bytes, piece: bytes, out: Path, stamp: str
) -> dict[str, Any]:
    from bench.profiling import profile_load

    out.mkdir(parents=True, exist_ok=True)
    profiles = {}
    for name in ("put_4mb_c8", "propfind_2000_c1", "get_4mb_c8"):
        print(f"[bench] profiling clindav under {name}", flush=True)

        def make_spec(round_: int, name: str = name) -> loads.PhaseSpec:
            specs = loads.phases(scale, photo, piece, 500 + round_)
            return next(s for s in specs if s.name == name)

        raw_file = out / f"{stamp}-profile-{name}.txt"
        profiles[name] = profile_load(clindav, make_spec, scale.profile_seconds, raw_file)
    return profiles


def _meta(
    args: argparse.Namespace,
    stamp: str,
    reps: int,
    scale: loads.Scale,
    photo: bytes,
    started: list[peers.Peer],
    skipped: dict[str, str],
    started_at: float,
) -> dict[str, Any]:
    return {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "reps": reps,
        "scale": {k: v for k, v in vars(scale).items()},
        "photo_bytes": len(photo),
        "listing_files": scale.listing_files,
        "machine": machine_info(),
        "versions": versions(started),
        "peers": {p.name: {"notes": p.notes, "version": p.version} for p in started},
        "skipped_peers": skipped,
        "baseline": report.BASELINE,
        "duration_s": time.monotonic() - started_at,
    }


def write_results(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``<out>/<timestamp>.json`` (every figure) and ``.md`` (the report)."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = result["meta"]["timestamp"]
    json_path, md_path = out / f"{stamp}.json", out / f"{stamp}.md"
    json_path.write_text(json.dumps(result, indent=1, default=str))
    md_path.write_text(report.markdown(result))
    return json_path, md_path


if __name__ == "__main__":
    sys.exit(main())
