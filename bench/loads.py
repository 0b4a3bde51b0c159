"""The workloads, identical for every peer: setup, timed phases and clean-up.

Paths (the same URL layout on every server)::

    /clinical/9434765919/get-c<k>.jpg     photos the GET phases read
    /clinical/9434765919/IMG_r<rep>_...   photos the PUT phases write (deleted after)
    /documents/listing/doc-<n>.txt        the folder PROPFIND Depth 1 lists
    /documents/large.bin, huge.bin        memory phases (100 MB / 1 GB in full mode)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.client import DavClient, PhaseResult, RequestFn, count_responses, run_phase
from bench.media import body_pieces, random_piece, small_document
from bench.peers import Peer

PATIENT = "/clinical/9434765919"
LISTING = "/documents/listing"
LARGE = "/documents/large.bin"
HUGE = "/documents/huge.bin"
PUT_OK = (200, 201, 204)
ALLPROP = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
)
PROPFIND_HEADERS = {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'}
MAX_CLIENTS = 8


@dataclass(frozen=True)
class Scale:
    """How much work each phase does; ``FULL`` and ``QUICK`` are the two presets."""

    photo_size: tuple[int, int]
    photo_target: int
    reps: int
    put_c1: int  # requests by the single client
    put_c8: int  # requests per client, 8 clients
    get_c1: int
    get_c8: int
    listing_files: int
    propfind_c1: int
    propfind_c8: int
    burst_c8: int  # requests per client, each on a new connection
    large_bytes: int
    huge_bytes: int
    sweep_requests: int
    sweep_reps: int  # repetitions of the block-size sweep (each restarts clindav 4 times)
    pipeline_n: int
    profile_seconds: int
    login_c1: int  # PROPFIND Depth 0 (a login each without the LDAP cache), 1 client
    login_c8: int  # the same, requests per client, 8 clients
    audit_events: int  # audit table exported for peak RSS (issue 8)
    audit_events_small: int  # the smaller table, to show memory is flat
    audit_small_reps: int  # exports of the smaller table (the big one: once)
    audit_record_n: int  # AuditLog.record calls timed per database
    consent_puts: int  # 4 MB PUTs per phase with and without the consent stage
    consent_reps: int  # interleaved repetitions of that comparison (a small effect: more)
    cli_runs: int  # timed starts of each command-line command (issue 21)
    cli_events: int  # audit events in the table `audit tail` starts on
    console_held: int  # held images the console's inbox lists (issue 18)
    console_requests: int  # timed GETs of the inbox and of a thumbnail
    nextcloud_files: int  # files in the folder the apps' listings are timed on (issue 20)
    nextcloud_requests: int  # timed PROPFINDs of each listing
    migrate_photos: int  # legacy photos `clindav migrate --jobs 1|2` protects (issue 21)
    migrate_reps: int


FULL = Scale(
    photo_size=(3000, 2000),
    photo_target=4 * 1024 * 1024,
    reps=5,
    put_c1=12,
    put_c8=3,
    get_c1=16,
    get_c8=4,
    listing_files=2000,
    propfind_c1=4,
    propfind_c8=1,
    burst_c8=4,
    large_bytes=100 * 1000 * 1000,
    huge_bytes=1000 * 1000 * 1000,
    sweep_requests=16,
    sweep_reps=5,
    pipeline_n=15,
    profile_seconds=12,
    login_c1=40,
    login_c8=10,
    audit_events=1_000_000,
    audit_events_small=100_000,
    audit_small_reps=2,
    audit_record_n=50,
    consent_puts=12,
    consent_reps=8,
    cli_runs=21,
    cli_events=100_000,
    console_held=500,
    console_requests=30,
    nextcloud_files=2000,
    nextcloud_requests=21,
    migrate_photos=2000,
    migrate_reps=2,
)
QUICK = Scale(
    photo_size=(600, 400),
    photo_target=0,
    reps=2,
    put_c1=2,
    put_c8=1,
    get_c1=2,
    get_c8=1,
    listing_files=40,
    propfind_c1=2,
    propfind_c8=1,
    burst_c8=2,
    large_bytes=4 * 1000 * 1000,
    huge_bytes=8 * 1000 * 1000,
    sweep_requests=2,
    sweep_reps=1,
    pipeline_n=3,
    profile_seconds=3,
    login_c1=3,
    login_c8=1,
    audit_events=3000,
    audit_events_small=300,
    audit_small_reps=1,
    audit_record_n=5,
    consent_puts=2,
    consent_reps=2,
    cli_runs=3,
    cli_events=300,
    console_held=40,
    console_requests=3,
    nextcloud_files=50,
    nextcloud_requests=3,
    migrate_photos=50,
    migrate_reps=1,
)


@dataclass(frozen=True)
class PhaseSpec:
    """One timed load: who sends what, how many, and which statuses count as success."""

    name: str
    clients: int
    per_client: int
    fn: RequestFn
    ok: tuple[int, ...]
    cleanup: Callable[[Peer], list[str]] | None = None


def _photo_name(rep: int, client: int, index: int) -> str:
    return f"{PATIENT}/IMG_r{rep}_c{client}_{index:03d}.jpg"


def put_photo(photo: bytes, rep: int) -> RequestFn:
    """PUT of the 4 MB phone JPEG to a new name in the patient folder."""

    def fn(c: DavClient, k: int, i: int) -> Any:
        return c.request(
            "PUT", _photo_name(rep, k, i), body=photo, headers={"Content-Type": "image/jpeg"}
        )

    return fn


def get_photo(c: DavClient, k: int, _i: int) -> Any:
    """GET of a stored 4 MB photo (each client reads its own file)."""
    return c.request("GET", f"{PATIENT}/get-c{k}.jpg")


def propfind_listing(c: DavClient, _k: int, _i: int) -> Any:
    """PROPFIND Depth 1 (allprop) of the folder of small documents."""
    return c.request("PROPFIND", LISTING + "/", body=ALLPROP, headers=PROPFIND_HEADERS)


def propfind_new_connection(c: DavClient, _k: int, _i: int) -> Any:
    """PROPFIND Depth 0 of the patient folder on a fresh connection (a connection burst)."""
    c.close()
    reply = c.request(
        "PROPFIND", PATIENT + "/", body=ALLPROP, headers={**PROPFIND_HEADERS, "Depth": "0"}
    )
    c.close()
    return reply


def put_large(total: int, piece: bytes, path: str = LARGE) -> RequestFn:
    """PUT of a large body streamed from a repeated 1 MiB random piece."""

    def fn(c: DavClient, _k: int, _i: int) -> Any:
        return c.put_stream(path, total, body_pieces(total, piece))

    return fn


def get_path(path: str) -> RequestFn:
    """GET of one path, body counted and discarded."""

    def fn(c: DavClient, _k: int, _i: int) -> Any:
        return c.request("GET", path)

    return fn


def delete_photos(rep: int, clients: int, per_client: int) -> Callable[[Peer], list[str]]:
    """Clean-up after a PUT phase: delete what it wrote (not timed); returns failures."""

    def cleanup(peer: Peer) -> list[str]:
        failures = []
        c = DavClient(peer.url, peer.auth)
        for k in range(clients):
            for i in range(per_client):
                path = _photo_name(rep, k, i)
                reply = c.request("DELETE", path, keep_body=True)
                if reply.status not in (200, 204):
                    failures.append(
                        f"DELETE {path}: {reply.status} {reply.error} {reply.body[:160]!r}"
                    )
        c.close()
        return failures

    return cleanup


def put_specs(scale: Scale, photo: bytes, first: int) -> list[PhaseSpec]:
    """PUT of the photo at C=1 and C=8, named from ``first`` and ``first + 100``
    (each run's own names), every photo deleted again untimed."""
    return [
        PhaseSpec(
            "put_4mb_c1",
            1,
            scale.put_c1,
            put_photo(photo, first),
            PUT_OK,
            delete_photos(first, 1, scale.put_c1),
        ),
        PhaseSpec(
            "put_4mb_c8",
            8,
            scale.put_c8,
            put_photo(photo, first + 100),
            PUT_OK,
            delete_photos(first + 100, 8, scale.put_c8),
        ),
    ]


def get_specs(scale: Scale) -> list[PhaseSpec]:
    """GET of the prepared photo at C=1 and C=8."""
    return [
        PhaseSpec("get_4mb_c1", 1, scale.get_c1, get_photo, (200,)),
        PhaseSpec("get_4mb_c8", 8, scale.get_c8, get_photo, (200,)),
    ]


def phases(scale: Scale, photo: bytes, piece: bytes, rep: int) -> list[PhaseSpec]:
    """The timed phases of one repetition, in the order they run."""
    return [
        *put_specs(scale, photo, rep),
        *get_specs(scale),
        PhaseSpec("propfind_2000_c1", 1, scale.propfind_c1, propfind_listing, (207,)),
        PhaseSpec("propfind_2000_c8", 8, scale.propfind_c8, propfind_listing, (207,)),
        PhaseSpec("connect_burst_c8", 8, scale.burst_c8, propfind_new_connection, (207,)),
        PhaseSpec("put_large", 1, 1, put_large(scale.large_bytes, piece), PUT_OK),
        PhaseSpec("get_large", 1, 1, get_path(LARGE), (200,)),
    ]


def measure(peer: Peer, spec: PhaseSpec) -> PhaseResult:
    """Run one phase against one peer (then its untimed clean-up)."""
    result = run_phase(
        peer.url, peer.auth, peer.pid, spec.clients, spec.per_client, spec.fn, spec.ok
    )
    if spec.cleanup is not None:
        result.extra["cleanup_errors"] = spec.cleanup(peer)[:10]
    return result


def run_record(result: PhaseResult, rep: int) -> dict[str, Any]:
    """One phase's figures as the JSON keeps them (``raw[load][peer]`` entries)."""
    return {
        **result.figures(),
        "rep": rep,
        "wall_s": result.wall_s,
        "requests": result.requests,
        "bytes": result.bytes,
        "statuses": result.statuses,
        "error_samples": result.errors,
        "server_cpu_s": result.server_cpu_s,
        "cleanup_errors": result.extra.get("cleanup_errors", []),
        "rss_timeline_mib": result.extra.get("rss_timeline_mib", []),
    }


# --- setup ----------------------------------------------------------------


def prepare(peer: Peer, scale: Scale, photo: bytes) -> dict[str, Any]:
    """Folders, the photos GET reads and the listing folder; returns setup figures."""
    prepare_photos(peer, photo, MAX_CLIENTS)
    upload = fill_listing(peer, scale.listing_files)
    listed = count_listing(peer)
    if listed != scale.listing_files + 1:
        raise RuntimeError(
            f"{peer.name}: PROPFIND lists {listed}, expected {scale.listing_files + 1}"
        )
    return {"small_put": upload, "listing_entries": listed}


def prepare_photos(peer: Peer, photo: bytes, count: int) -> None:
    """The folders, and the ``count`` photos the GET phases read."""
    c = DavClient(peer.url, peer.auth)
    try:
        for folder in ("/clinical/", PATIENT + "/", "/documents/", LISTING + "/"):
            reply = c.request("MKCOL", folder)
            if reply.status not in (201, 405):
                raise RuntimeError(f"{peer.name}: MKCOL {folder} -> {reply.status} {reply.error}")
        for k in range(count):
            reply = c.request(
                "PUT", f"{PATIENT}/get-c{k}.jpg", body=photo, headers={"Content-Type": "image/jpeg"}
            )
            if reply.status not in PUT_OK:
                raise RuntimeError(f"{peer.name}: PUT photo -> {reply.status} {reply.body[:200]!r}")
    finally:
        c.close()


def fill_listing(peer: Peer, files: int) -> dict[str, Any]:
    """PUT ``files`` 2 KiB documents into the listing folder with 8 clients; small-PUT figures."""
    errors: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        c = DavClient(peer.url, peer.auth)
        for n in range(k, files, MAX_CLIENTS):
            reply = c.request(
                "PUT",
                f"{LISTING}/doc-{n:05d}.txt",
                body=small_document(n),
                headers={"Content-Type": "text/plain"},
            )
            if reply.status not in PUT_OK:
                with lock:
                    errors.append(f"{reply.status} {reply.error} {reply.body[:120]!r}")
        c.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(MAX_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{peer.name}: {len(errors)} listing PUTs failed, e.g. {errors[0]}")
    return {"files": files, "clients": MAX_CLIENTS, "wall_s": wall, "req_s": files / wall}


def count_listing(peer: Peer) -> int:
    """Entries a PROPFIND Depth 1 of the listing folder returns (the folder itself included)."""
    c = DavClient(peer.url, peer.auth)
    reply = c.request(
        "PROPFIND", LISTING + "/", body=ALLPROP, headers=PROPFIND_HEADERS, keep_body=True
    )
    c.close()
    return count_responses(reply.body) if reply.status == 207 else -1


def warm_up(peer: Peer, photo: bytes) -> None:
    """One untimed request of each kind (imports, caches, first connections)."""
    c = DavClient(peer.url, peer.auth)
    c.request("PUT", f"{PATIENT}/warm-up.jpg", body=photo, headers={"Content-Type": "image/jpeg"})
    c.request("GET", f"{PATIENT}/warm-up.jpg")
    c.request("DELETE", f"{PATIENT}/warm-up.jpg")
    c.request("PROPFIND", LISTING + "/", body=ALLPROP, headers=PROPFIND_HEADERS)
    c.close()


def huge_transfer(peer: Peer, total: int, piece: bytes) -> dict[str, Any]:
    """PUT then GET of one very large body (1 GB full mode) with memory sampled; then DELETE."""
    put = run_phase(peer.url, peer.auth, peer.pid, 1, 1, put_large(total, piece, HUGE), PUT_OK)
    put_status = next(iter(put.statuses), "0")
    out: dict[str, Any] = {"bytes": total, "put": _huge_figures(put)}
    if not put.errors:
        get = run_phase(peer.url, peer.auth, peer.pid, 1, 1, get_path(HUGE), (200,))
        out["get"] = _huge_figures(get)
        c = DavClient(peer.url, peer.auth)
        c.request("DELETE", HUGE)
        c.close()
    else:
        out["get"] = {"skipped": f"nothing stored (PUT answered {put_status})"}
    return out


def _huge_figures(result: PhaseResult) -> dict[str, Any]:
    figures = result.figures()
    return {
        "statuses": result.statuses,
        "errors": result.errors,
        "wall_s": result.wall_s,
        "mb_s": figures["mb_s"] if not result.errors else None,
        "peak_rss_mib": figures["peak_rss_mib"],
        "rss_before_mib": figures["rss_before_mib"],
        "rss_growth_mib": figures["rss_growth_mib"],
        "rss_timeline_mib": result.extra.get("rss_timeline_mib", []),
        "server_cpu_s": result.server_cpu_s,
    }


def new_piece() -> bytes:
    """The 1 MiB random piece large bodies are made of."""
    return random_piece()
