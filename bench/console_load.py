"""Issue 18: what the staff console costs.

One fresh clindav instance (the default policy), its bench user a clinician:

* **Inbox with many held images.**  The bench user PUTs ``console_held``
  small JPEGs (500 in full mode) into 50 patient folders of the clinical
  share with no consent recorded, so every one is held for consent; then
  signs in to the console as a browser does (the sign-in form, its CSRF
  token, the session cookie) and GETs the inbox ``/app/`` that lists them
  all, ``console_requests`` times at C=1.  Target: median under 300 ms.
* **Thumbnail of a 4 MB photo.**  The 4 MB phone JPEG, uploaded to a patient
  whose consent is recorded; its thumbnail (``/app/images/<file id>/thumbnail``,
  made in memory from the decrypted, scrubbed image on every request), the
  same number of times.  Target: median under 60 ms.  Any answer but a
  200 fails the part: the figure is always measured.

Both are timed from the request's first byte to the last byte of the answer,
on a keep-alive connection, with the instance otherwise idle.
"""

from __future__ import annotations

import http.client
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

from bench import peers, report
from bench.client import DavClient, percentile
from bench.consent_load import finish, record_consent
from bench.loads import PATIENT, Scale

INBOX_TARGET_MS = 300.0
THUMBNAIL_TARGET_MS = 60.0
HELD_PATIENTS = 50
PHOTO = f"{PATIENT}/console-photo.jpg"  # in the patient whose consent is recorded


class ConsoleClient:
    """A browser's side of the console: one keep-alive connection and its cookies."""

    def __init__(self, base_url: str) -> None:
        parsed = urlparse(base_url)
        self.conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.cookies: dict[str, str] = {}

    def send(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, bytes]:
        headers = {"Accept": "text/html", "User-Agent": "clindav-bench/1"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = urlencode(form).encode() if form is not None else None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        answer = self.conn.getresponse()
        data = answer.read()
        for header in answer.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return answer.status, data

    def sign_in(self, user: str, password: str) -> None:
        _status, page = self.send("GET", "/app/sign-in")
        token = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page)
        if token is None:
            raise RuntimeError("the sign-in page has no form token")
        form = {"csrf_token": token.group(1).decode(), "user": user, "password": password}
        status, _ = self.send("POST", "/app/sign-in", form)
        if status != 303:
            raise RuntimeError(f"console sign-in answered {status}")

    def timed(self, path: str, n: int) -> tuple[list[float], int, bytes]:
        """``n`` GETs of ``path``: milliseconds each, the last status and body."""
        self.send("GET", path)  # warm-up (templates compiled, caches filled)
        times, status, body = [], 0, b""
        for _ in range(n):
            start = time.perf_counter()
            status, body = self.send("GET", path)
            times.append((time.perf_counter() - start) * 1000)
        return times, status, body

    def close(self) -> None:
        self.conn.close()


def console_benchmark(work: Path, photo: bytes, scale: Scale) -> dict[str, Any]:
    """Both figures on a fresh instance, and their targets."""
    config = peers.new_instance(work, "clindav-console")
    finish(record_consent(config))  # for the photo's patient only: the others' images wait
    peer = peers.start_clindav(config, tag="-console", name="clindav-console")
    try:
        held = _hold_images(peer, scale.console_held)
        dav = DavClient(peer.url, peer.auth)
        dav.request("MKCOL", PATIENT)
        photo_reply = dav.request("PUT", PHOTO, photo)
        dav.close()
        if photo_reply.status != 201:
            raise RuntimeError(f"PUT of the photo answered {photo_reply.status}")
        client = ConsoleClient(peer.url)
        client.sign_in(*peer.auth)
        times, status, page = client.timed("/app/", scale.console_requests)
        inbox = _figures(times, status, page)
        inbox["held_images"] = held
        inbox["tiles_on_page"] = page.count(b'<li class="tile')
        thumbnail = _thumbnail(client, config, len(photo), scale.console_requests)
        client.close()
    finally:
        peer.stop()
    result: dict[str, Any] = {"inbox": inbox, "thumbnail": thumbnail}
    result["targets"] = console_targets(result)
    return result


def _hold_images(peer: peers.Peer, count: int) -> int:
    """``count`` small JPEGs in 50 patient folders, no consent: all held.  8 clients."""
    from bench.media import phone_jpeg

    image = phone_jpeg((64, 48), 0)
    folders = [f"/clinical/{patient_number(n)}" for n in range(HELD_PATIENTS)]
    setup = DavClient(peer.url, peer.auth)
    for folder in folders:
        setup.request("MKCOL", folder)
    setup.close()

    def upload(first: int) -> int:
        client, stored = DavClient(peer.url, peer.auth), 0
        for n in range(first, count, 8):
            reply = client.request("PUT", f"{folders[n % HELD_PATIENTS]}/IMG_{n:04d}.jpg", image)
            stored += reply.status == 201
        client.close()
        return stored

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(upload, range(8)))


def patient_number(n: int) -> str:
    """A valid NHS number (modulus 11) for the ``n``-th held patient."""
    base = 943_476_000 + n * 7
    while True:
        digits = [int(d) for d in f"{base:09d}"]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            return f"{base:09d}{check}"
        base += 1


def _thumbnail(client: ConsoleClient, config: Path, size: int, n: int) -> dict[str, Any]:
    file_id = _file_id(config, PHOTO.removeprefix("/clinical"))
    times, status, body = client.timed(f"/app/images/{file_id}/thumbnail", n)
    if status != 200 or not body.startswith(b"\xff\xd8"):
        raise RuntimeError(f"the console answered {status} for a thumbnail, not a JPEG")
    return {**_figures(times, status, body), "photo_bytes": size}


def _file_id(config: Path, path: str) -> str:
    """The registry's file id of the clinical share's ``path`` (the console's image address)."""
    from sqlalchemy import select

    from gateway.db import StoredObject, make_engine, make_sessions
    from gateway.settings import load_settings

    engine = make_engine(load_settings(config).sqlalchemy_url())
    try:
        with make_sessions(engine)() as session:
            found = session.scalar(
                select(StoredObject.file_id).where(
                    StoredObject.share == "clinical", StoredObject.logical_path == path
                )
            )
    finally:
        engine.dispose()
    if found is None:
        raise RuntimeError(f"no registry row for clinical:{path}")
    return str(found)


def _figures(times: list[float], status: int, body: bytes) -> dict[str, Any]:
    return {
        "n": len(times),
        "median_ms": statistics.median(times),
        "p95_ms": percentile(times, 95),
        "min_ms": min(times),
        "max_ms": max(times),
        "status": status,
        "body_bytes": len(body),
    }


def console_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18: inbox of 500 held images under 300 ms, thumbnail of 4 MB under 60 ms."""
    inbox, thumb = result.get("inbox", {}), result.get("thumbnail", {})
    inbox_ms, thumb_ms = inbox.get("median_ms"), thumb.get("median_ms")
    return [
        report.target_row(
            f"issue 18: console inbox with {inbox.get('held_images')} held images, median ms",
            inbox_ms,
            f"< {INBOX_TARGET_MS:.0f}",
            inbox_ms is not None and inbox.get("status") == 200 and inbox_ms < INBOX_TARGET_MS,
            f"{inbox.get('tiles_on_page')} tiles, {inbox.get('body_bytes')} bytes",
        ),
        report.target_row(
            f"issue 18: thumbnail of a {thumb.get('photo_bytes', 0) / 1e6:.1f} MB photo, median ms",
            thumb_ms,
            f"< {THUMBNAIL_TARGET_MS:.0f}",
            thumb_ms is not None and thumb_ms < THUMBNAIL_TARGET_MS,
            f"{thumb.get('body_bytes')} bytes of JPEG",
        ),
    ]
