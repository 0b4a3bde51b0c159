"""Issue 20: what the Nextcloud apps' listings cost on a large folder.

One fresh clindav instance (the default policy) and plain WsgiDAV hold the
same tree: a folder ``big`` of ``nextcloud_files`` small files (2,000 in
full mode) in clindav's ``documents`` share and at WsgiDAV's root.  Each
listing below is a PROPFIND of Depth 1 with the body ``nextcloudcmd`` 3.7.3
sends (../shared/NEXTCLOUD.md §4.2), ``nextcloud_requests`` times at C=1 on
one keep-alive connection after one warm-up:

* ``folder``: the folder itself (2,000 entries and the folder's own ETag);
* ``parent``: its parent, where ``big`` is one entry whose folder ETag and
  size cover everything below it (the desktop client lists every parent on
  every sync: this is the folder ETag's cost);
* ``root``: the user's root through the apps' door (every share's ETag);
* ``parent_webdav``: the parent through clindav's plain WebDAV (no folder
  ETag walk, no file numbers): what the apps' door adds is the difference.

WsgiDAV answers the same body for ``folder`` and ``parent`` (the ``oc:``
properties as not found): the ratios are clindav's median over WsgiDAV's.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import peers, report
from bench.client import DavClient, count_responses, percentile
from bench.loads import Scale

# The body nextcloudcmd 3.7.3 sends for every folder it lists.
DESKTOP_PROPFIND = b"""<?xml version="1.0" ?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>
<d:resourcetype /><d:getlastmodified /><d:getcontentlength /><d:getetag />
<oc:size /><oc:id /><oc:fileid /><oc:downloadURL /><oc:dDC /><oc:permissions />
<oc:checksums /><oc:data-fingerprint /><oc:share-types /></d:prop></d:propfind>"""
FOLDER = "big"
BODY = b"ward round notes, one line\n"
# Issue 20: the apps' listing of the 2,000-file folder's parent, over the same
# listing by clindav's plain WebDAV: the folder ETag must not grow with the files.
PARENT_RATIO_BOUND = 1.5


def nextcloud_benchmark(work: Path, scale: Scale) -> dict[str, Any]:
    """The listings' figures on clindav (apps' door) and WsgiDAV, and their ratios."""
    config = peers.new_instance(work, "clindav-nextcloud")
    wsgidav_root = work / "wsgidav-root" / FOLDER
    wsgidav_root.mkdir(parents=True, exist_ok=True)
    for n in range(scale.nextcloud_files):
        (wsgidav_root / _name(n)).write_bytes(BODY)
    clindav = peers.start_clindav(config, tag="-nextcloud", name="clindav-nextcloud")
    try:
        stored = _fill(clindav, scale.nextcloud_files)
        apps = f"/remote.php/dav/files/{peers.USER}"
        listings = {
            "folder": _timed(clindav, f"{apps}/documents/{FOLDER}/", scale.nextcloud_requests),
            "parent": _timed(clindav, f"{apps}/documents/", scale.nextcloud_requests),
            "root": _timed(clindav, f"{apps}/", scale.nextcloud_requests),
            "parent_webdav": _timed(clindav, "/documents/", scale.nextcloud_requests),
        }
    finally:
        clindav.stop()
    wsgidav = peers.start_wsgidav(work)
    try:
        plain = {
            "folder": _timed(wsgidav, f"/{FOLDER}/", scale.nextcloud_requests),
            "parent": _timed(wsgidav, "/", scale.nextcloud_requests),
        }
    finally:
        wsgidav.stop()
    ratios = {
        name: listings[name]["median_ms"] / plain[name]["median_ms"]
        for name in plain
        if plain[name]["median_ms"]
    }
    ratios["parent_to_webdav"] = (
        listings["parent"]["median_ms"] / listings["parent_webdav"]["median_ms"]
    )
    result: dict[str, Any] = {
        "files": stored,
        "clindav": listings,
        "wsgidav": plain,
        "ratios": ratios,
    }
    result["targets"] = nextcloud_targets(result)
    return result


def _name(n: int) -> str:
    return f"note-{n:05d}.txt"


def _fill(peer: peers.Peer, count: int) -> int:
    """``count`` small files in ``/documents/big/`` by 8 WebDAV clients; how many stored."""
    setup = DavClient(peer.url, peer.auth)
    setup.request("MKCOL", f"/documents/{FOLDER}")
    setup.close()

    def upload(first: int) -> int:
        client, stored = DavClient(peer.url, peer.auth), 0
        for n in range(first, count, 8):
            stored += client.request("PUT", f"/documents/{FOLDER}/{_name(n)}", BODY).status == 201
        client.close()
        return stored

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(upload, range(8)))


def _timed(peer: peers.Peer, path: str, n: int) -> dict[str, Any]:
    """``n`` Depth 1 PROPFINDs of ``path`` (after one warm-up): their figures."""
    client = DavClient(peer.url, peer.auth)
    headers = {"Depth": "1", "Content-Type": "application/xml"}
    client.request("PROPFIND", path, DESKTOP_PROPFIND, headers)
    times, status, entries = [], 0, 0
    for _ in range(n):
        start = time.perf_counter()
        reply = client.request("PROPFIND", path, DESKTOP_PROPFIND, headers, keep_body=True)
        times.append((time.perf_counter() - start) * 1000)
        status, entries = reply.status, count_responses(reply.body or b"")
    client.close()
    if status != 207:
        raise RuntimeError(f"{peer.name} answered {status} to PROPFIND {path}")
    return {
        "n": n,
        "median_ms": statistics.median(times),
        "p95_ms": percentile(times, 95),
        "min_ms": min(times),
        "max_ms": max(times),
        "entries": entries,
    }


def nextcloud_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 20: the apps' listing of a 2,000-file folder's parent within 1.5x of WebDAV's."""
    ratio = result.get("ratios", {}).get("parent_to_webdav")
    return [
        report.target_row(
            f"issue 20: apps' listing of a {result.get('files')}-file folder's parent / "
            "clindav WebDAV's",
            ratio,
            f"< {PARENT_RATIO_BOUND}",
            ratio is not None and ratio < PARENT_RATIO_BOUND,
            "PROPFIND Depth 1, nextcloudcmd's body, C=1",
        )
    ]
