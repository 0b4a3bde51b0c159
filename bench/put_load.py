"""Issue 21, the PUT path: a phone photo through the full default pipeline against
``rclone serve webdav`` over crypt, and the memory of a streamed photo.

Three servers take the same PUTs of the 4 MB phone JPEG into
``/clinical/9434765919/``, at C=1 and C=8, interleaved (order alternating
per repetition):

* ``clindav``: the default policy (``filetype`` with its structural check,
  ``consent`` with ``missing: hold``, ``scrub``; encryption, fsync, audit);
* ``clindav-full-decode``: the same with ``filetype: {decode: full}`` (every
  pixel decoded, as before issue 21);
* ``rclone``: rclone crypt, which encrypts and checks nothing.

Then, on a fresh default ``clindav``, one PUT of a structurally valid JPEG
of 100 MB (and 1 GB at full scale: ``Scale.huge_bytes``) into the same
folder, the server's process tree sampled for its RSS: the photo streams
through the structural check and the scrub into the sealer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench import compare, loads, peers, report
from bench.client import DavClient, run_phase
from bench.loads import PUT_OK, Scale
from bench.media import jpeg_pieces

DEFAULT, FULL, RCLONE = "clindav", "clindav-full-decode", "rclone"
LOADS = ("put_4mb_c1", "put_4mb_c8")
# Issue 21: clindav's PUT MB/s over rclone crypt's, per load; and the RSS bound.
NEEDED = {"put_4mb_c1": 1.0, "put_4mb_c8": 1.5}
RSS_MIB = 32


def decode_fully(config: Path) -> None:
    """The clinical share's filetype stage with ``decode: full`` (the instance's policy.yaml)."""
    path = config.parent / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    for stage in policy["shares"]["clinical"]["stages"]:
        if "filetype" in stage:
            stage["filetype"]["decode"] = "full"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


def put_comparison(work: Path, photo: bytes, scale: Scale, reps: int) -> dict[str, Any]:
    """PUT 4 MB at C=1 and C=8 on clindav (both decode modes) and rclone crypt; the
    ratios to rclone with their spread; the RSS growth of streamed photo PUTs."""
    began = time.monotonic()
    # Folders of their own: the main loads' instance is already ``clindav`` in a full run.
    default_config = peers.new_instance(work, f"put-{DEFAULT}")
    full_config = peers.new_instance(work, f"put-{FULL}")
    decode_fully(full_config)
    auth = (peers.USER, peers.PASSWORD)
    running = peers.start_many([(default_config, DEFAULT, auth), (full_config, FULL, auth)])
    try:
        running.append(peers.start_rclone(work))
    except peers.PeerUnavailable as exc:
        for peer in running:
            peer.stop()
        return {"unavailable": str(exc)}
    try:
        for peer in running:
            loads.prepare_photos(peer, photo, 1)
            loads.warm_up(peer, photo)
        print("[bench] PUT path (issue 21): clindav, clindav-full-decode, rclone", flush=True)
        raw = compare.interleaved(
            running, lambda rep: loads.put_specs(scale, photo, 4000 + rep), reps
        )
    finally:
        for peer in running:
            peer.stop()
    ratios = {
        load: {
            peer: compare.ratio_summary(raw, load, peer, RCLONE, "mb_s") for peer in (DEFAULT, FULL)
        }
        for load in LOADS
    }
    memory = streamed_photo_memory(work, photo, scale)
    return {
        "instances": {
            DEFAULT: "default policy: filetype (structural check), consent (hold), scrub",
            FULL: "default policy with filetype decode: full",
            RCLONE: "rclone serve webdav over crypt",
        },
        "raw": raw,
        "summary": report.summarise_loads(raw),
        "ratios": ratios,
        "memory": memory,
        "targets": targets(ratios, memory),
        "errors": compare.errors_in(raw),
        "duration_s": time.monotonic() - began,
    }


def streamed_photo_memory(work: Path, photo: bytes, scale: Scale) -> dict[str, Any]:
    """Peak RSS growth of a fresh default clindav (warmed up with the phone photo) while it
    takes one very large JPEG.

    The connection logs in first (unmeasured): the serving process is one of several
    workers, and a worker's first login of the user runs scrypt (32 MiB for ~50 ms, then
    cached), which is the login's memory, not the body's."""
    sizes = sorted({scale.large_bytes, scale.huge_bytes})
    config = peers.new_instance(work, "clindav-stream")
    peer = peers.start_clindav(config, tag="-stream", name="clindav-stream")
    out: dict[str, Any] = {}
    try:
        loads.prepare_photos(peer, photo, 1)
        loads.warm_up(peer, photo)
        for total in sizes:
            path = f"{loads.PATIENT}/streamed-{total}.jpg"
            result = run_phase(
                peer.url,
                peer.auth,
                peer.pid,
                1,
                1,
                _put_jpeg(path, total),
                PUT_OK,
                first=_log_in,
            )
            figures = result.figures()
            out[str(total)] = {
                "bytes": total,
                "statuses": result.statuses,
                "errors": result.errors[:3],
                "mb_s": figures["mb_s"] if not result.errors else None,
                "rss_before_mib": figures["rss_before_mib"],
                "rss_growth_mib": figures["rss_growth_mib"],
            }
    finally:
        peer.stop()
    return out


def _log_in(c: DavClient) -> None:
    c.request("PROPFIND", loads.PATIENT, headers={"Depth": "0"})


def _put_jpeg(path: str, total: int) -> Any:
    def fn(c: Any, _k: int, _i: int) -> Any:
        return c.put_stream(path, total, _views(jpeg_pieces(total)))

    return fn


def _views(pieces: Iterator[bytes]) -> Iterator[memoryview]:
    return (memoryview(piece) for piece in pieces)


def _two(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def targets(ratios: dict[str, Any], memory: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 21's PUT rows: the ratio to rclone crypt per load, the RSS growth per size."""
    rows = []
    for load, needed in NEEDED.items():
        mine = ratios.get(load, {}).get(DEFAULT) or {}
        full = ratios.get(load, {}).get(FULL) or {}
        value = mine.get("median")
        rows.append(
            report.target_row(
                f"issue 21: {load} MB/s, clindav (full default pipeline) / rclone crypt",
                value,
                f">= {needed}",
                value is not None and value >= needed,
                f"per-repetition {_two(mine.get('min'))}-{_two(mine.get('max'))}; "
                f"with decode: full {_two(full.get('median'))}",
            )
        )
    for figures in memory.values():
        growth = figures.get("rss_growth_mib")
        ok = not figures.get("errors") and growth is not None
        rows.append(
            report.target_row(
                f"issue 21: RSS growth MiB during a {figures['bytes'] / 1e6:.0f} MB JPEG PUT "
                "(streamed through filetype and scrub)",
                growth if ok else None,
                f"< {RSS_MIB}",
                ok and growth < RSS_MIB,
                "" if ok else f"PUT failed: {figures.get('statuses')} {figures.get('errors')}",
            )
        )
    return rows
