"""Hostile or malformed requests get bounded, clear answers (issue: hardening).

Each case runs against the real gateway: the documented status and code,
nothing stored, the refusal audited, and a normal request served afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import time
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, Gateway, ProcessGateway, read_answer
from tests.integration.test_audit import events_by_request
from tests.integration.test_dav_methods import LOCK_BODY, small_jpeg

AUTH = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


def stored_files(gateway: Gateway) -> list[str]:
    root = gateway.instance.share_dir("documents")
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def still_serving(gateway: Gateway) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/alive.txt", data=b"ok").status_code in (201, 204)
    assert s.get(f"{gateway.url}/documents/alive.txt").content == b"ok"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("CON", "reserved-name"),
        ("aux.jpg", "reserved-name"),
        ("LPT1.txt", "reserved-name"),
        ("report.", "trailing-dot-or-space"),
        ("report ", "trailing-dot-or-space"),
        ("a:Zone.Identifier", "forbidden-character"),
        ("what?.txt", "forbidden-character"),
        ("bell\x07.txt", "control-character"),
        ("invoice\u202egpj.exe", "control-character"),
        (".clindav-tmp-x", "reserved-name"),
    ],
)
def test_names_windows_cannot_store_are_refused(gateway: Gateway, name: str, code: str) -> None:
    s = gateway.session()
    from urllib.parse import quote

    r = s.put(f"{gateway.url}/documents/{quote(name)}", data=b"x")
    assert r.status_code == 400, r.text
    assert r.headers["X-Clindav-Error"] == code
    assert stored_files(gateway) == []
    events = events_by_request(gateway.instance)[r.headers["X-Request-Id"]]
    assert [(e.status, e.code) for e in events] == [(400, code)]
    still_serving(gateway)


def test_nfc_and_nfd_are_one_name(gateway: Gateway) -> None:
    s = gateway.session()
    nfd, nfc = unicodedata.normalize("NFD", "café.txt"), unicodedata.normalize("NFC", "café.txt")
    assert nfd != nfc
    assert s.put(f"{gateway.url}/documents/{nfd}", data=b"from a Mac").status_code == 201
    assert s.put(f"{gateway.url}/documents/{nfc}", data=b"from Windows").status_code == 204
    assert s.get(f"{gateway.url}/documents/{nfd}").content == b"from Windows"
    assert len(stored_files(gateway)) == 1


def raw(gateway: Gateway, request: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(request)
        return read_answer(sock) if read else b""


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("method", "headers", "status", "code"),
    [
        ("PROPFIND", {"Depth": "infinity"}, 403, "propfind-finite-depth"),
        ("PROPFIND", {"Depth": "2"}, 400, "bad-header"),
        ("LOCK", {"Timeout": "Second-abc"}, 400, "bad-header"),
        ("UNLOCK", {"Lock-Token": "not-in-brackets"}, 400, "bad-header"),
        ("PUT", {"If": "<broken"}, 400, "bad-header"),
        ("COPY", {"Destination": "/documents/b.txt", "Overwrite": "maybe"}, 400, "bad-header"),
        ("PUT", {"Content-Encoding": "gzip"}, 415, "content-encoding-refused"),
        (
            "PROPFIND",
            {"Content-Length": str(256 * 1024 * 1024), "Depth": "0"},
            413,
            "xml-body-too-large",
        ),
    ],
)
def test_malformed_dav_headers(
    gateway: Gateway, method: str, headers: dict, status: int, code: str
) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/a.txt", data=b"a").status_code == 201
    lines = [f"{method} /documents/a.txt HTTP/1.1", "Host: x", f"Authorization: {AUTH}"]
    headers = dict(headers)
    headers.setdefault("Content-Length", "0")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    response = raw(gateway, ("\r\n".join(lines) + "\r\n\r\n").encode())
    assert status_of(response) == status, response[:300]
    assert f"X-Clindav-Error: {code}".encode() in response
    assert s.get(f"{gateway.url}/documents/a.txt").content == b"a"
    still_serving(gateway)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_bodies_and_headers_do_not_grow_memory(process_gateway: ProcessGateway) -> None:
    gateway = process_gateway  # its own process: its pid is looked at
    still_serving(gateway)
    pid = gateway.process.pid
    idle = rss_kib(pid)
    head = (
        f"PROPFIND /documents/ HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nDepth: 1\r\n"
        f"Content-Length: {256 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(head)
        try:
            for _ in range(64):  # 4 MiB of the promised 256 MiB; the answer comes first
                sock.sendall(b"<" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(4096)
    assert status_of(answer) == 413
    flood = (
        b"GET /documents/ HTTP/1.1\r\nHost: x\r\n"
        + b"X-Junk: "
        + b"a" * (20 * 1024 * 1024)
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(flood)
        answer = sock.recv(4096)
    # 431 (RFC 6585), not cheroot's 413, which would blame a body; refused before WSGI.
    assert status_of(answer) == 431, answer[:300]
    assert b"X-Clindav-Error: header-fields-too-large\r\n" in answer
    request_id = answer.split(b"X-Request-Id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    events = events_by_request(gateway.instance)[request_id]
    assert [(e.action, e.status, e.code, e.actor) for e in events] == [
        ("GET", 431, "header-fields-too-large", "-")
    ]
    time.sleep(0.5)
    assert rss_kib(pid) - idle < 20 * 1024
    still_serving(gateway)


def test_locks_are_capped_and_bounded(gateway: Gateway) -> None:
    alice, admin = gateway.session("alice"), gateway.session("root-admin")
    url = f"{gateway.url}/documents/locked.txt"
    assert alice.put(url, data=b"x").status_code == 201
    lock = alice.request(
        "LOCK", url, data=LOCK_BODY, headers={"Timeout": "Infinite, Second-99999999"}
    )
    assert lock.status_code == 200
    import re

    granted = re.search(rb"<D:timeout>Second-(\d+)</D:timeout>", lock.content)
    assert granted and 3500 < int(granted.group(1)) <= 3600, lock.content
    root = alice.request(
        "LOCK", f"{gateway.url}/documents/", data=LOCK_BODY, headers={"Depth": "infinity"}
    )
    assert root.status_code == 403 and root.headers["X-Clindav-Error"] == "infinite-lock-refused"
    assert admin.request("MKCOL", f"{gateway.url}/documents/tree").status_code == 201
    tree = admin.request(
        "LOCK",
        f"{gateway.url}/documents/tree",
        data=LOCK_BODY,
        headers={"Depth": "infinity", "Timeout": "Second-60"},
    )
    assert tree.status_code == 200


def test_lock_on_unmapped_url_creates_nothing_others_see(gateway: Gateway) -> None:
    alice, ivy = gateway.session("alice"), gateway.session("ivy")
    url = f"{gateway.url}/documents/reserved.txt"
    assert alice.request("LOCK", url, data=LOCK_BODY).status_code in (200, 201)
    assert (
        "reserved.txt"
        not in ivy.request("PROPFIND", f"{gateway.url}/documents/", headers={"Depth": "1"}).text
    )
    assert ivy.get(url).status_code == 404


def test_forwarded_host_from_a_client_is_ignored(gateway: Gateway) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/src.txt", data=b"x").status_code == 201
    r = s.request(
        "COPY",
        f"{gateway.url}/documents/src.txt",
        headers={
            "Destination": "http://evil.example/documents/dst.txt",
            "X-Forwarded-Host": "evil.example",
        },
    )
    assert r.status_code in (400, 403, 502)
    assert s.get(f"{gateway.url}/documents/dst.txt").status_code == 404
    r = s.get(f"{gateway.url}/documents/src.txt", headers={"X-Forwarded-For": "10.9.8.7"})
    events = events_by_request(gateway.instance)[r.headers["X-Request-Id"]]
    assert events[0].client == "127.0.0.1"


def test_content_is_never_rendered_inline_unless_an_image(gateway: Gateway) -> None:
    s = gateway.session()
    assert (
        s.put(f"{gateway.url}/documents/page.html", data=b"<script>alert(1)</script>").status_code
        == 201
    )
    page = s.get(f"{gateway.url}/documents/page.html")
    assert page.headers["Content-Disposition"] == "attachment"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in page.headers["Content-Security-Policy"]
    assert s.request("MKCOL", f"{gateway.url}/documents/p").status_code == 201
    assert s.put(f"{gateway.url}/documents/p/photo.jpg", data=small_jpeg()).status_code == 201
    photo = s.get(f"{gateway.url}/documents/p/photo.jpg")
    assert "Content-Disposition" not in photo.headers


def test_admins_list_and_break_locks(gateway: Gateway) -> None:
    from tests.conftest import run_cli

    alice, ivy = gateway.session("alice"), gateway.session("ivy")
    url = f"{gateway.url}/documents/stuck.txt"
    assert alice.put(url, data=b"x").status_code == 201
    token = alice.request("LOCK", url, data=LOCK_BODY).headers["Lock-Token"].strip("<>")
    assert ivy.put(url, data=b"y").status_code == 423
    # Another user cannot use alice's token either: locks are bound to their owner.
    assert ivy.put(url, data=b"y", headers={"If": f"(<{token}>)"}).status_code in (412, 423)
    import json

    listed = json.loads(run_cli("locks", "list", "--json", config=gateway.instance.config).stdout)
    assert [(lock["path"], lock["principal"], lock["token"]) for lock in listed] == [
        ("/documents/stuck.txt", "alice", token)
    ]
    run_cli(
        "locks",
        "break",
        token,
        "--as",
        "dr-admin",
        "--reason",
        "client crashed",
        config=gateway.instance.config,
    )
    assert (
        json.loads(run_cli("locks", "list", "--json", config=gateway.instance.config).stdout) == []
    )
    assert ivy.put(url, data=b"y").status_code == 204
    events = [e for rows in events_by_request(gateway.instance).values() for e in rows]
    assert [(e.actor, e.code, e.reason) for e in events if e.code == "lock-broken"] == [
        ("dr-admin", "lock-broken", "client crashed")
    ]
