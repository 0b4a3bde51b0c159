"""One reading of every path: Destination, NFC names, client junk, Windows names,
and what every response carries (HSTS under TLS, no server product or version).

All against the real gateway on loopback.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import sqlalchemy
from sqlalchemy.pool import NullPool

from gateway.dav.limits import MAX_REQUEST_HEADERS
from gateway.settings import load_settings
from tests.conftest import (
    CLINDAV,
    Gateway,
    _env,
    make_instance,
    read_answer,
    start_in_process,
)
from tests.integration.test_consent import consent
from tests.integration.test_dav_methods import LOCK_BODY, small_jpeg

PATIENT, OTHER, HELD = "9434765919", "4010232137", "9434765870"
HSTS = "Strict-Transport-Security"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    instance = make_instance(tmp_path_factory.mktemp("destination-and-names"))
    instance.add_user("bob", "clinicians")
    for patient, extra in ((PATIENT, ()), (OTHER, ("--intimate",))):
        consent(instance, "--scope", "record", *extra, patient=patient)
    gateway = start_in_process(instance)
    yield gateway
    gateway.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def query(gw: Gateway, sql: str, **params: Any) -> list[tuple]:
    engine = sqlalchemy.create_engine(
        load_settings(gw.instance.config).sqlalchemy_url(), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()


def audited(gw: Gateway, response: requests.Response) -> list[tuple[str, int, str]]:
    return [
        tuple(row)  # type: ignore[misc]
        for row in query(
            gw,
            "SELECT action, status, code FROM audit_event WHERE request_id = :id",
            id=response.headers["X-Request-Id"],
        )
    ]


# --- issue 15 point 1: the Destination is read once ------------------------


def test_destination_is_read_once_and_handed_on_as_judged(gw: Gateway) -> None:
    """Destinations the gate and WsgiDAV once read differently are refused, audited.

    ``x#/../intimate`` was ``x`` to the gate and ``intimate`` to WsgiDAV, and
    ``intimate%3Bx`` was a name ``intimate;x`` to the gate and ``intimate`` with
    a parameter to WsgiDAV: with Overwrite a clinician replaced (trashed)
    another patient's intimate folder.
    """
    ivy, alice = gw.session("ivy"), gw.session("alice")
    other = f"{gw.url}/clinical/{OTHER}"
    assert ivy.request("MKCOL", other).status_code == 201
    assert ivy.request("MKCOL", f"{other}/intimate").status_code == 201
    intimate = small_jpeg()
    assert ivy.put(f"{other}/intimate/a.jpg", data=intimate).status_code == 201
    mine = f"{gw.url}/clinical/{PATIENT}"
    assert alice.request("MKCOL", mine).status_code == 201
    assert alice.put(f"{mine}/arm.jpg", data=small_jpeg()).status_code == 201

    base = f"/clinical/{OTHER}"
    for destination in (
        f"{base}/x#/../intimate",
        f"{base}/x#/../intimate/a.jpg",
        f"{base}/intimate%3Bx",
        f"{base}/intimate%3bx/a.jpg",
        f"{base}/intimate;x",
        f"{base}/intimate?x",
        f"{base}/x?/../intimate",
    ):
        for form in (destination, f"http://127.0.0.1:{gw.port}{destination}"):
            for method in ("COPY", "MOVE"):
                r = alice.request(
                    method, f"{mine}/arm.jpg", headers={"Destination": form, "Overwrite": "T"}
                )
                assert r.status_code == 400, (method, form, r.status_code)
                assert r.headers["X-Clindav-Error"] == "ambiguous-destination", (method, form)
                assert audited(gw, r) == [(method, 400, "ambiguous-destination")]
    # Dot segments, raw or encoded, and encoded slashes are refused as in request paths.
    for destination, code in (
        (f"{base}/x/%2e%2e/intimate", "invalid-path"),
        (f"{base}/x/%2E/intimate", "invalid-path"),
        (f"{base}/x%2f..%2fintimate", "forbidden-character"),
    ):
        r = alice.request(
            "MOVE", f"{mine}/arm.jpg", headers={"Destination": destination, "Overwrite": "T"}
        )
        assert (r.status_code, r.headers["X-Clindav-Error"]) == (400, code), destination
    # A host part WsgiDAV would read differently once decoded is malformed.
    r = alice.request(
        "COPY",
        f"{mine}/arm.jpg",
        headers={"Destination": f"http://127.0.0.1%2fclinical%2f{OTHER}{base}/y.jpg"},
    )
    assert (r.status_code, r.headers["X-Clindav-Error"]) == (400, "bad-header")

    assert ivy.get(f"{other}/intimate/a.jpg").content == intimate
    listing = ivy.request("PROPFIND", other, headers={"Depth": "1"}).text
    assert "arm.jpg" not in listing and "/intimate/" in listing
    assert alice.get(f"{mine}/arm.jpg").status_code == 200
    assert query(gw, "SELECT count(*) FROM trash_item WHERE share = 'clinical'") == [(0,)]


def test_the_judged_destination_is_the_one_used(gw: Gateway) -> None:
    """Escapes, an NFD name, a '#' inside a name and the share's case: WsgiDAV gets
    exactly the NFC path the gate judged."""
    s = gw.session()
    folder = unique("dest")
    assert s.request("MKCOL", f"{gw.url}/documents/{folder}").status_code == 201
    assert s.put(f"{gw.url}/documents/{folder}/a.txt", data=b"source").status_code == 201
    nfd = unicodedata.normalize("NFD", "café")
    cases = {
        f"/documents/{folder}/{quote(nfd)}.txt": "café.txt",
        f"/Documents/{folder}/%62.txt": "b.txt",
        f"/documents/{folder}/c%23d.txt": "c#d.txt",
        f"/documents/{folder}/e%25f.txt": "e%f.txt",
    }
    for destination, name in cases.items():
        r = s.request(
            "COPY",
            f"{gw.url}/documents/{folder}/a.txt",
            headers={"Destination": f"http://127.0.0.1:{gw.port}{destination}"},
        )
        assert r.status_code == 201, (destination, r.status_code, r.text)
        assert s.get(f"{gw.url}/documents/{folder}/{quote(name)}").content == b"source", name
    paths = {p for (p,) in query(gw, "SELECT logical_path FROM stored_object")}
    expected = {f"/{folder}/{name}" for name in cases.values()}
    assert expected <= paths
    assert not [p for p in paths if unicodedata.normalize("NFC", p) != p]


# --- issue 15 point 4: NFD names ----------------------------------------------


def test_an_nfd_name_is_stored_in_nfc_and_a_held_image_stays_private(gw: Gateway) -> None:
    """A Mac sends decomposed names; a held image so named stays its uploader's."""
    alice, bob = gw.session("alice"), gw.session("bob")
    folder = f"{gw.url}/clinical/{HELD}"  # no consent for this patient: images are held
    assert alice.request("MKCOL", folder).status_code == 201
    nfc = "mole-é.jpg"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert alice.put(f"{folder}/{nfd}", data=small_jpeg()).status_code == 201
    rows = query(
        gw,
        "SELECT logical_path, held_until IS NOT NULL FROM stored_object WHERE share = 'clinical'"
        " AND logical_path LIKE :p",
        p=f"/{HELD}/mole%",
    )
    assert rows == [(f"/{HELD}/{nfc}", 1)]
    for name in (nfc, nfd):
        assert alice.get(f"{folder}/{name}").status_code == 200
        assert bob.get(f"{folder}/{name}").status_code == 404
        assert bob.head(f"{folder}/{name}").status_code == 404
        for destination in (f"{folder}/stolen.jpg", f"{gw.url}/referrals/stolen.jpg"):
            r = bob.request("COPY", f"{folder}/{name}", headers={"Destination": destination})
            assert r.status_code in (403, 404), (name, destination, r.status_code)
    assert bob.get(f"{folder}/stolen.jpg").status_code == 404
    listing = bob.request("PROPFIND", folder, headers={"Depth": "1"})
    assert listing.status_code == 207 and "mole" not in listing.text
    assert "mole" in alice.request("PROPFIND", folder, headers={"Depth": "1"}).text


# --- issue 15 point 6: junk is never a destination ---------------------------


def test_junk_names_are_never_a_destination(gw: Gateway) -> None:
    s = gw.session()
    folder = unique("junkdest")
    assert s.request("MKCOL", f"{gw.url}/documents/{folder}").status_code == 201
    source = f"{gw.url}/documents/{folder}/keep.txt"
    assert s.put(source, data=b"keep me").status_code == 201
    for name in ("Thumbs.db", ".DS_Store", "._keep.txt", "desktop.ini", "~$keep.docx"):
        for method in ("MOVE", "COPY"):
            for share in ("documents", "referrals"):
                destination = f"{gw.url}/{share}/{folder}/{quote(name)}"
                r = s.request(method, source, headers={"Destination": destination})
                assert r.status_code == 403, (method, name, r.status_code)
                assert r.headers["X-Clindav-Error"] == "junk-destination"
                assert audited(gw, r) == [(method, 403, "junk-destination")]
    assert s.get(source).content == b"keep me"
    assert query(
        gw, "SELECT logical_path FROM stored_object WHERE logical_path LIKE :p", p=f"/{folder}/%"
    ) == [(f"/{folder}/keep.txt",)]
    # Finder moving its own AppleDouble files along is still answered as junk.
    assert s.put(f"{gw.url}/documents/{folder}/._a", data=b"meta").status_code == 201
    r = s.request(
        "MOVE",
        f"{gw.url}/documents/{folder}/._a",
        headers={"Destination": f"{gw.url}/documents/{folder}/._b"},
    )
    assert r.status_code == 201


# --- issue 15 point 21: names Windows cannot hold ----------------------------

NAMES = [
    ("\u00a0", "trailing-dot-or-space"),
    ("\u2003", "trailing-dot-or-space"),
    ("\u3000", "trailing-dot-or-space"),
    ("report\u3000", "trailing-dot-or-space"),
    ("a\u200bb.txt", "control-character"),
    ("\ufeffbom.txt", "control-character"),
    ("a\u200db.txt", "control-character"),
    ("line\u2028break.txt", "control-character"),
    ("CON .txt", "reserved-name"),
    ("COM\u00b9", "reserved-name"),
    ("lpt\u00b3.jpg", "reserved-name"),
    ("CONIN$", "reserved-name"),
    ("conout$.txt", "reserved-name"),
    ("COM0", "reserved-name"),
]


@pytest.mark.parametrize(("name", "code"), NAMES)
def test_names_windows_cannot_hold_are_refused(gw: Gateway, name: str, code: str) -> None:
    s = gw.session()
    source = f"{gw.url}/documents/{unique('src')}.txt"
    assert s.put(source, data=b"source").status_code == 201
    target = f"{gw.url}/documents/{quote(name)}"
    attempts = [
        s.put(target, data=b"x"),
        s.request("MKCOL", target),
        s.request("LOCK", target, data=LOCK_BODY),
        s.request("COPY", source, headers={"Destination": target}),
        s.request("MOVE", source, headers={"Destination": target}),
    ]
    for r in attempts:
        assert (r.status_code, r.headers.get("X-Clindav-Error")) == (400, code), r.request.method
        assert audited(gw, r) == [(r.request.method, 400, code)]
    assert s.get(source).content == b"source"
    assert s.get(target).status_code in (400, 404)


# --- issue 15 point 21: HSTS, product and version -----------------------------


def _tls_raw(gw: Gateway, request: bytes) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    with context.wrap_socket(raw) as sock:
        sock.sendall(request)
        return read_answer(sock)


def test_every_tls_response_carries_hsts(tmp_path: Path) -> None:
    instance = make_instance(tmp_path)
    plain = start_in_process(instance)
    try:
        r = plain.session().get(f"{plain.url}/documents/none.txt")
        assert r.status_code == 404 and HSTS not in r.headers
    finally:
        plain.stop()
    gw = start_in_process(instance, tls=True)
    try:
        assert gw.url.startswith("https://")
        s, anonymous = gw.session(), gw.session(None)
        responses = [
            s.put(f"{gw.url}/documents/a.txt", data=b"x"),  # WsgiDAV, 201
            s.get(f"{gw.url}/documents/a.txt"),  # 200
            s.request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": "1"}),  # fast path
            s.put(f"{gw.url}/documents/Thumbs.db", data=b"junk"),  # junk handler
            s.get(f"{gw.url}/documents/none.txt"),  # middleware error
            s.get(f"{gw.url}/documents/%ff"),  # PathGuard
            anonymous.get(f"{gw.url}/documents/a.txt"),  # 401
            s.options(f"{gw.url}/"),  # the root
        ]
        for r in responses:
            assert r.headers.get(HSTS) == "max-age=31536000", (r.request.method, r.url)
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert len(r.headers.get(HSTS, "").split(",")) == 1  # once, not twice
        # A header flood is answered by the HTTP server itself, before WSGI.
        flood = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        answer = _tls_raw(
            gw,
            b"GET /documents/a.txt HTTP/1.1\r\nHost: x\r\n"
            + flood * (MAX_REQUEST_HEADERS // len(flood) + 2)
            + b"\r\n",
        )
        head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
        assert head.startswith("HTTP/1.1 431")
        assert "Strict-Transport-Security: max-age=31536000" in head.split("\r\n")
    finally:
        gw.stop()


def test_no_server_product_or_version_in_any_response(gw: Gateway) -> None:
    s = gw.session()
    base = f"{gw.url}/documents/{unique('product')}"
    responses = [
        s.request("MKCOL", base),
        s.put(f"{base}/a.txt", data=b"one"),
        s.put(f"{base}/a.txt", data=b"two"),
        s.request("COPY", f"{base}/a.txt", headers={"Destination": f"{base}/b.txt"}),
        s.request("MOVE", f"{base}/b.txt", headers={"Destination": f"{base}/c.txt"}),
        s.request(
            "MOVE", f"{base}/c.txt", headers={"Destination": f"{base}/a.txt", "Overwrite": "T"}
        ),
        s.request("LOCK", f"{base}/a.txt", data=LOCK_BODY),
        s.get(f"{base}/a.txt"),
        s.request("PROPFIND", base, headers={"Depth": "1"}),
        s.options(f"{gw.url}/"),
        s.get(f"{base}/none.txt"),
    ]
    token = responses[6].headers["Lock-Token"]
    responses += [
        s.request("UNLOCK", f"{base}/a.txt", headers={"Lock-Token": token}),
        s.delete(f"{base}/a.txt"),
    ]
    statuses = [r.status_code for r in responses]
    assert statuses == [201, 201, 204, 201, 201, 204, 200, 200, 207, 200, 404, 204, 204]
    for r in responses:
        text = (r.content + str(r.headers).encode()).lower()
        for word in (b"wsgidav", b"cheroot", b"python/", b"4.4.0"):
            assert word not in text, (r.request.method, r.status_code, word)
        assert r.headers["Server"] == "clindav"
    for r in responses[:6]:
        assert r.content == b"" and r.headers["Content-Length"] == "0"


# --- issue 15 point 21: --no-tls on a public address ---------------------------


def test_no_tls_on_a_public_address_is_refused_before_binding(tmp_path: Path) -> None:
    """The refusal comes before any socket is bound (with several workers the
    listening sockets were bound first): a port someone else holds shows it."""
    instance = make_instance(tmp_path)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        proc = subprocess.run(
            [
                *CLINDAV,
                "serve",
                "--config",
                str(instance.config),
                "--no-tls",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "--no-tls is allowed only on loopback addresses" in output
    assert "in use" not in output and "Traceback" not in output


# --- issue 16 point 10: Finder ---------------------------------------------------


def test_finder_probe_of_dot_underscore_dot_is_404(gw: Gateway) -> None:
    s = gw.session()
    for url in (f"{gw.url}/documents/._.", f"{gw.url}/clinical/._.", f"{gw.url}/._."):
        for method in ("PROPFIND", "GET", "HEAD"):
            r = s.request(method, url, headers={"Depth": "0"})
            assert r.status_code == 404, (method, url, r.status_code)
    # Written and read back like any junk file: answered, never stored.
    assert s.put(f"{gw.url}/documents/._.", data=b"meta").status_code == 201
    assert s.head(f"{gw.url}/documents/._.").status_code == 200
    assert s.get(f"{gw.url}/documents/._.").status_code == 404
    # The folder it sits in still follows the name rules.
    bad = s.request("PROPFIND", f"{gw.url}/documents/CON/._.", headers={"Depth": "0"})
    assert (bad.status_code, bad.headers["X-Clindav-Error"]) == (400, "reserved-name")


def test_lock_refresh_of_junk_keeps_its_token(gw: Gateway) -> None:
    s = gw.session()
    url = f"{gw.url}/documents/._{unique('photo')}.jpg"
    assert s.put(url, data=b"appledouble").status_code == 201
    locked = s.request("LOCK", url, data=LOCK_BODY, headers={"Timeout": "Second-600"})
    assert locked.status_code == 200
    token = locked.headers["Lock-Token"].strip("<>")
    assert token in locked.text
    refreshed = s.request("LOCK", url, headers={"If": f"(<{token}>)", "Timeout": "Second-600"})
    assert refreshed.status_code == 200
    assert token in refreshed.text
    assert "Lock-Token" not in refreshed.headers
    assert refreshed.text.count("opaquelocktoken:") == 1
    # A new lock still gets a new token.
    again = s.request("LOCK", url, data=LOCK_BODY)
    assert again.headers["Lock-Token"].strip("<>") != token
