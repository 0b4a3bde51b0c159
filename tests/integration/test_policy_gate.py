"""Acceptance: the policy gate, and path traversal.

A policy that denies a group makes GET/PUT/PROPFIND/DELETE/COPY/MOVE answer
403 for that group, including a COPY/MOVE whose Destination lies in a share
the user may not write; path traversal (``..``, ``%2e%2e%2f``, encoded
backslashes, NUL) never leaves the backing folder.

Each test writes its own policy into a fresh instance before the gateway
starts, and checks the backing folders byte for byte around the refusals.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import requests
import yaml

from tests.conftest import PASSWORD, Gateway, Instance, start_in_process

ANY = [{"filetype": {"allow": "any"}}]
POLICY = {
    "version": 1,
    "shares": {
        "clinical": {"stages": ANY},
        "referrals": {"stages": ANY},
        "teaching": {"stages": ANY},
        # Plain names, so the symlink test can plant entries the gateway would decode.
        "documents": {"stages": ANY, "names": "plain"},
    },
    "rules": [
        {
            "name": "locum-not-private",
            "share": "clinical",
            "path": "*/private/**",
            "groups": ["locum"],
            "methods": ["read", "write", "delete"],
            "effect": "deny",
        },
        {
            "name": "locum-clinical",
            "share": "clinical",
            "groups": ["locum"],
            "methods": ["read", "write", "delete"],
        },
        {
            "name": "reception-archive-read-only",
            "share": "documents",
            "path": "archive/**",
            "groups": ["reception"],
            "methods": ["write", "delete"],
            "effect": "deny",
        },
        {
            "name": "reception-documents",
            "share": "documents",
            "groups": ["reception"],
            "methods": ["read", "write", "delete"],
        },
        {
            "name": "reception-reads-referrals",
            "share": "referrals",
            "groups": ["reception"],
            "methods": ["read"],
        },
        {
            "name": "clinicians-everything",
            "groups": ["clinicians"],
            "methods": ["read", "write", "delete"],
        },
        # Never reached for clinicians or reception: an earlier rule already matched.
        {
            "name": "too-late-deny",
            "share": "documents",
            "path": "locked/**",
            "groups": ["*"],
            "methods": ["read", "write", "delete"],
            "effect": "deny",
        },
    ],
}
SENTINEL = b"SENTINEL-7f3a9c outside the backing folders"


@pytest.fixture
def policed(instance: Instance) -> Iterator[Gateway]:
    """A gateway on an instance with POLICY, its users, and some files alice stored."""
    (instance.folder / "policy.yaml").write_text(yaml.safe_dump(POLICY, sort_keys=False))
    instance.add_user("rita", "reception")
    instance.add_user("lou", "locum")
    instance.add_user("vic", "visitors")
    (instance.folder / "secret.txt").write_bytes(SENTINEL)
    gw = start_in_process(instance)
    s = gw.session()
    for folder in ("clinical/p1", "clinical/p1/private", "documents/archive", "documents/locked"):
        assert s.request("MKCOL", f"{gw.url}/{folder}").status_code == 201, folder
    for path, body in FILES.items():
        assert s.put(f"{gw.url}{path}", data=body).status_code == 201, path
    yield gw
    gw.stop()


FILES = {
    "/clinical/p1/note.txt": b"clinical note",
    "/clinical/p1/private/secret-note.txt": b"private clinical note",
    "/documents/mine.txt": b"a reception document",
    "/documents/archive/old.txt": b"an archived document",
    "/referrals/ref.txt": b"a referral letter",
}


def _tree(root: Path) -> dict[str, str]:
    """Every entry under root: relative path -> sha256 (files) or 'dir'/'link'."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _denied(r: requests.Response, what: str) -> None:
    assert r.status_code == 403, f"{what}: {r.status_code} {r.text[:200]}"
    assert r.headers.get("X-Clindav-Error") == "policy-denied", f"{what}: {r.headers}"


def _alice_sees_files_unchanged(gw: Gateway) -> None:
    s = gw.session()
    for path, body in FILES.items():
        r = s.get(f"{gw.url}{path}")
        assert r.status_code == 200 and r.content == body, path


# --- a group the policy does not allow ---------------------------------------


def test_denied_group_gets_403_for_every_method(policed: Gateway, instance: Instance) -> None:
    gw = policed
    before = _tree(instance.folder / "shares")
    rita = gw.session("rita")
    base = f"{gw.url}/clinical"
    _denied(rita.get(f"{base}/p1/note.txt"), "GET")
    _denied(rita.head(f"{base}/p1/note.txt"), "HEAD")
    _denied(rita.put(f"{base}/p1/note.txt", data=b"overwritten"), "PUT over")
    _denied(rita.put(f"{base}/p1/new.txt", data=b"new"), "PUT new")
    _denied(rita.request("PROPFIND", f"{base}/", headers={"Depth": "1"}), "PROPFIND share")
    _denied(
        rita.request("PROPFIND", f"{base}/p1/note.txt", headers={"Depth": "0"}), "PROPFIND file"
    )
    _denied(rita.request("PROPPATCH", f"{base}/p1/note.txt", data=b"<x/>"), "PROPPATCH")
    _denied(rita.request("MKCOL", f"{base}/p2"), "MKCOL")
    _denied(rita.delete(f"{base}/p1/note.txt"), "DELETE file")
    _denied(rita.delete(f"{base}/p1"), "DELETE folder")
    _denied(rita.request("LOCK", f"{base}/p1/note.txt"), "LOCK")
    for method in ("COPY", "MOVE"):
        # Within the denied share, and out of it into a share rita may write.
        _denied(
            rita.request(
                method, f"{base}/p1/note.txt", headers={"Destination": f"{base}/p1/copy.txt"}
            ),
            f"{method} inside",
        )
        _denied(
            rita.request(
                method,
                f"{base}/p1/note.txt",
                headers={"Destination": f"{gw.url}/documents/stolen.txt"},
            ),
            f"{method} out",
        )
    # The root lists only shares rita may read.
    root = rita.request("PROPFIND", f"{gw.url}/", headers={"Depth": "1"})
    assert root.status_code == 207
    assert b"/documents/" in root.content and b"/clinical/" not in root.content
    assert _tree(instance.folder / "shares") == before
    assert rita.get(f"{gw.url}/documents/stolen.txt").status_code == 404
    _alice_sees_files_unchanged(gw)


def test_copy_move_into_a_share_not_writable_is_403(policed: Gateway, instance: Instance) -> None:
    gw = policed
    rita = gw.session("rita")
    src = f"{gw.url}/documents/mine.txt"
    # Control: rita may copy within documents, so the refusals below are the destination's.
    assert (
        rita.request(
            "COPY", src, headers={"Destination": f"{gw.url}/documents/copy.txt"}
        ).status_code
        == 201
    )
    assert rita.delete(f"{gw.url}/documents/copy.txt").status_code in (200, 204)
    before = _tree(instance.folder / "shares")
    for method in ("COPY", "MOVE"):
        for dest in (
            "/clinical/p1/mine.txt",
            "/clinical/mine.txt",
            "/referrals/mine.txt",
            "/teaching/mine.txt",
            "/clinical/",
            "/referrals/",
        ):
            r = rita.request(
                method, src, headers={"Destination": f"{gw.url}{dest}", "Overwrite": "T"}
            )
            _denied(r, f"{method} -> {dest}")
        # A Destination outside every share is refused too.
        _denied(
            rita.request(method, src, headers={"Destination": f"{gw.url}/nowhere/mine.txt"}),
            f"{method} -> /nowhere",
        )
    assert _tree(instance.folder / "shares") == before
    assert rita.get(src).content == FILES["/documents/mine.txt"]
    # alice may write clinical, and referrals reads by rita still work.
    assert rita.get(f"{gw.url}/referrals/ref.txt").status_code == 200
    _alice_sees_files_unchanged(gw)


def test_allowed_folder_copy_and_move_work(policed: Gateway) -> None:
    """Control for the gate: recursive COPY/MOVE that the policy allows do their job."""
    gw = policed
    rita = gw.session("rita")
    base = f"{gw.url}/documents"
    assert rita.request("MKCOL", f"{base}/folder").status_code == 201
    assert rita.put(f"{base}/folder/a.txt", data=b"folder member").status_code == 201
    copy = rita.request("COPY", f"{base}/folder", headers={"Destination": f"{base}/copied"})
    assert copy.status_code == 201, copy.text
    assert rita.get(f"{base}/copied/a.txt").content == b"folder member"
    move = rita.request("MOVE", f"{base}/copied", headers={"Destination": f"{base}/moved"})
    assert move.status_code == 201, move.text
    assert rita.get(f"{base}/moved/a.txt").content == b"folder member"
    assert rita.get(f"{base}/copied/a.txt").status_code == 404
    assert rita.get(f"{base}/folder/a.txt").content == b"folder member"


def test_first_matching_rule_wins_and_default_denies(policed: Gateway, instance: Instance) -> None:
    gw = policed
    rita, lou, vic, alice = (gw.session(u) for u in ("rita", "lou", "vic", "alice"))
    before = _tree(instance.folder / "shares")

    # A deny before an allow wins: rita reads the archive but cannot change it.
    assert rita.get(f"{gw.url}/documents/archive/old.txt").status_code == 200
    _denied(rita.put(f"{gw.url}/documents/archive/old.txt", data=b"x"), "PUT archive")
    _denied(rita.put(f"{gw.url}/documents/archive/new.txt", data=b"x"), "PUT archive new")
    _denied(rita.delete(f"{gw.url}/documents/archive/old.txt"), "DELETE archive")
    _denied(
        rita.request(
            "MOVE",
            f"{gw.url}/documents/archive/old.txt",
            headers={"Destination": f"{gw.url}/documents/old.txt"},
        ),
        "MOVE out of archive",
    )
    _denied(
        rita.request(
            "COPY",
            f"{gw.url}/documents/mine.txt",
            headers={"Destination": f"{gw.url}/documents/archive/mine.txt"},
        ),
        "COPY into archive",
    )

    # The locum deny rule precedes the locum allow rule.
    assert lou.get(f"{gw.url}/clinical/p1/note.txt").status_code == 200
    private = f"{gw.url}/clinical/p1/private/secret-note.txt"
    _denied(lou.get(private), "locum GET private")
    _denied(lou.put(private, data=b"x"), "locum PUT private")
    _denied(lou.delete(private), "locum DELETE private")
    _denied(lou.request("PROPFIND", private, headers={"Depth": "0"}), "locum PROPFIND private")
    _denied(
        lou.request("COPY", private, headers={"Destination": f"{gw.url}/clinical/p1/out.txt"}),
        "locum COPY out of private",
    )
    _denied(
        lou.request(
            "MOVE",
            f"{gw.url}/clinical/p1/note.txt",
            headers={"Destination": f"{gw.url}/clinical/p1/private/note.txt"},
        ),
        "locum MOVE into private",
    )
    assert _tree(instance.folder / "shares") == before

    # Default deny: no rule names the visitors group.
    for method, path in (
        ("GET", "/documents/mine.txt"),
        ("PUT", "/documents/v.txt"),
        ("PROPFIND", "/documents/"),
        ("DELETE", "/documents/mine.txt"),
        ("MKCOL", "/documents/v"),
        ("GET", "/referrals/ref.txt"),
    ):
        _denied(
            vic.request(method, f"{gw.url}{path}", data=b"v" if method == "PUT" else None),
            f"visitor {method} {path}",
        )
    _denied(
        vic.request(
            "COPY",
            f"{gw.url}/documents/mine.txt",
            headers={"Destination": f"{gw.url}/documents/v.txt"},
        ),
        "visitor COPY",
    )
    root = vic.request("PROPFIND", f"{gw.url}/", headers={"Depth": "1"})
    assert root.status_code == 207
    for share in (b"/clinical/", b"/documents/", b"/referrals/", b"/teaching/"):
        assert share not in root.content
    assert _tree(instance.folder / "shares") == before

    # An allow before a deny wins too: the later locked/** deny never applies.
    assert alice.put(f"{gw.url}/documents/locked/x.txt", data=b"ok").status_code == 201
    assert rita.get(f"{gw.url}/documents/locked/x.txt").content == b"ok"


def _hrefs(body: bytes) -> set[str]:
    return {unquote(urlparse(h.text or "").path) for h in ET.fromstring(body).iter("{DAV:}href")}


def test_denied_subtree_is_not_reachable_through_its_folder(
    policed: Gateway, instance: Instance
) -> None:
    """lou may not touch */private/**: not by listing, copying, moving or deleting a folder above it."""
    gw = policed
    lou, alice = gw.session("lou"), gw.session()
    private_dir = f"{gw.url}/clinical/p1/private"
    secret = "/clinical/p1/private/secret-note.txt"
    problems = []

    for depth, url in (
        ("1", private_dir),
        ("infinity", f"{gw.url}/clinical/p1"),
        ("infinity", f"{gw.url}/clinical/"),
    ):
        r = lou.request("PROPFIND", url, headers={"Depth": depth})
        if r.status_code == 207 and secret in _hrefs(r.content):
            problems.append(f"PROPFIND Depth {depth} {url} lists {secret}")

    copy = lou.request("COPY", private_dir, headers={"Destination": f"{gw.url}/clinical/p1/leak"})
    leaked = lou.get(f"{gw.url}/clinical/p1/leak/secret-note.txt")
    if leaked.status_code == 200:
        problems.append(
            f"COPY of the denied folder answered {copy.status_code}; lou reads the copy"
        )
    elif copy.status_code != 403:
        problems.append(f"COPY of the denied folder answered {copy.status_code}, expected 403")
    if leaked.status_code == 200:
        alice.delete(f"{gw.url}/clinical/p1/leak")

    for method, url, headers in (
        ("MOVE", private_dir, {"Destination": f"{gw.url}/clinical/p1/public"}),
        ("DELETE", private_dir, {}),
        ("MOVE", f"{gw.url}/clinical/p1", {"Destination": f"{gw.url}/clinical/p2"}),
        ("DELETE", f"{gw.url}/clinical/p1", {}),
    ):
        r = lou.request(method, url, headers=headers)
        still = alice.get(f"{gw.url}{secret}")
        if still.status_code != 200 or still.content != FILES[secret]:
            problems.append(f"lou's {method} {url} answered {r.status_code} and took away {secret}")
            if method == "MOVE":
                moved = headers["Destination"] + secret[len(urlparse(url).path) :]
                reread = lou.get(moved)
                if reread.status_code == 200:
                    problems.append(
                        f"... and lou now reads it at {urlparse(moved).path}: {reread.content!r}"
                    )
            break  # the subtree is gone; later checks would say nothing new
        if r.status_code in (200, 201, 204):
            problems.append(f"lou's {method} {url} answered {r.status_code}")
    assert not problems, "\n".join(problems)


# --- path traversal ------------------------------------------------------------

TRAVERSALS = [
    "/documents/../clindav.yaml",
    "/documents/../secret.txt",
    "/documents/%2e%2e/%2e%2e/clindav.yaml",
    "/documents/%2e%2e/clindav.yaml",
    "/documents/..%2fclindav.yaml",
    "/documents/..%2f..%2fclindav.yaml",
    "/documents/%2e%2e%2fsecret.txt",
    "/documents/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/documents/..%5c..%5csecret.txt",
    "/documents/..%5csecret.txt",
    "/documents/foo%5c..%5c..%5csecret.txt",
    "/documents/a%00b",
    "/documents/%00",
    "/documents/secret.txt%00.jpg",
    "/documents/%252e%252e/secret.txt",
    "/documents/.%2e/secret.txt",
    "/documents/%c0%ae%c0%ae/secret.txt",
    "/documents/%ff",
    "/documents//../secret.txt",
    "/documents/./../../secret.txt",
    "/documents/x/../../../secret.txt",
]


class _Response:
    def __init__(self, status: int, body: bytes, complete: bool) -> None:
        self.status, self.body, self.complete = status, body, complete

    def __iter__(self) -> Iterator[Any]:
        return iter((self.status, self.body))


def _raw(
    gw: Gateway,
    method: str,
    target: str,
    user: str = "alice",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> _Response:
    """A request whose target goes out exactly as written (http.client does not normalise).

    One connection per request (Connection: close), so a response whose body is
    shorter than its Content-Length shows up as incomplete instead of a hang.
    """
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        conn.putheader("Authorization", f"Basic {token}")
        conn.putheader("Connection", "close")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        try:
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return _Response(0, b"", False)  # the server dropped the request unanswered
        try:
            return _Response(response.status, response.read(), True)
        except http.client.IncompleteRead as exc:
            return _Response(response.status, exc.partial, False)
    finally:
        conn.close()


def _raw_bytes(gw: Gateway, request_line_target: bytes, method: bytes = b"GET") -> _Response:
    """A request with bytes in the target that http.client refuses (NUL, backslash)."""
    token = base64.b64encode(f"alice:{PASSWORD}".encode())
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    try:
        sock.sendall(
            method + b" " + request_line_target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Basic " + token + b"\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        data = b""
        for _ in range(1000):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data.startswith(b"HTTP/1."):
        return _Response(0, b"", False)
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    complete = method == b"HEAD" or length is None or int(length.group(1)) == len(body)
    return _Response(int(data.split(b" ", 2)[1]), body, complete)


def _outside_shares(folder: Path) -> dict[str, str]:
    """The instance folder outside shares/ (database files excluded: audit rows change them)."""
    tree = _tree(folder)
    return {
        k: v
        for k, v in tree.items()
        if not k.startswith("shares") and not k.startswith("clindav.db")
    }


RAW_TARGETS = (
    b"/documents/a\x00b",
    b"/documents/..\\..\\secret.txt",
    b"/documents/..\\clindav.yaml",
    b"/documents/%2e%2e\\secret.txt",
)


def _sweep(gw: Gateway) -> list[tuple[str, _Response, bool]]:
    """Every traversal target with every method, as source and as Destination.

    Returns (label, response, is_read) for each request.
    """
    port = gw.port
    doc = f"http://127.0.0.1:{port}/documents/mine.txt"
    restore = gw.session()
    out = []
    for target in TRAVERSALS:
        for method in ("GET", "HEAD", "PROPFIND"):
            out.append(
                (f"{method} {target}", _raw(gw, method, target, headers={"Depth": "1"}), True)
            )
        out.append(
            (f"PUT {target}", _raw(gw, "PUT", target, body=b"overwritten by a traversal"), False)
        )
        for method in ("MKCOL", "DELETE"):
            out.append((f"{method} {target}", _raw(gw, method, target), False))
        for method in ("COPY", "MOVE"):
            # The target as source (reading outside), and as Destination (writing outside).
            r = _raw(
                gw,
                method,
                target,
                headers={"Destination": f"http://127.0.0.1:{port}/documents/got.txt"},
            )
            out.append((f"{method} {target} -> /documents/got.txt", r, True))
            r = _raw(
                gw,
                method,
                "/documents/mine.txt",
                headers={"Destination": f"http://127.0.0.1:{port}{target}", "Overwrite": "T"},
            )
            out.append((f"{method} /documents/mine.txt -> {target}", r, False))
            if r.status in (201, 204) and method == "MOVE":
                # A MOVE to a literal in-share name is fine; restore the source for the next one.
                restore.put(doc, data=FILES["/documents/mine.txt"])
    # Bytes http.client will not send: a literal NUL and backslashes in the target.
    for raw_target in RAW_TARGETS:
        for raw_method in (b"GET", b"PROPFIND", b"PUT", b"DELETE"):
            out.append(
                (
                    f"{raw_method.decode()} {raw_target!r}",
                    _raw_bytes(gw, raw_target, raw_method),
                    raw_method in (b"GET", b"PROPFIND"),
                )
            )
    return out


def test_path_traversal_never_leaves_the_backing_folder(
    policed: Gateway, instance: Instance
) -> None:
    gw = policed
    config_text = instance.config.read_bytes()
    secrets = [SENTINEL, config_text[:60], b"database_url", b"master.key", b"policy.yaml"]
    outside_before = _outside_shares(instance.folder)
    parent_before = set(os.listdir(instance.folder.parent))

    problems = []
    for label, r, is_read in _sweep(gw):
        if any(secret in r.body for secret in secrets):
            problems.append(f"{label}: {r.status} leaks content from outside the shares")
        if r.status >= 500:
            problems.append(f"{label}: {r.status}")
        if is_read and 200 <= r.status < 300:
            problems.append(f"{label}: a read answered {r.status}")

    assert _outside_shares(instance.folder) == outside_before, "a file outside the shares changed"
    assert set(os.listdir(instance.folder.parent)) == parent_before
    assert (instance.folder / "secret.txt").read_bytes() == SENTINEL
    assert instance.config.read_bytes() == config_text
    assert not problems, "\n".join(problems)
    # The gateway still serves ordinary requests.
    s = gw.session()
    assert s.get(f"{gw.url}/documents/mine.txt").content == FILES["/documents/mine.txt"]
    assert s.put(f"{gw.url}/documents/after.txt", data=b"still fine").status_code == 201
    assert s.get(f"{gw.url}/documents/after.txt").content == b"still fine"


def test_hostile_paths_get_a_complete_answer(policed: Gateway) -> None:
    """Clients that send hostile paths get a whole HTTP response, never a cut or a hang.

    A response shorter than its Content-Length desynchronises a keep-alive
    connection (the client waits for bytes that never come, or reads the next
    response as this one's body); a dropped connection is a crash.
    """
    problems = []
    for label, r, _ in _sweep(policed):
        if not r.complete:
            problems.append(
                f"{label}: "
                + (
                    f"{r.status} with a body shorter than its Content-Length"
                    if r.status
                    else "connection dropped without a response"
                )
            )
    # A Destination that is not UTF-8 once decoded is refused, not stored under a mangled name.
    s = policed.session()
    for dest in ("/documents/%ff", "/documents/%c0%ae%c0%ae", "/documents/a%e9b.txt"):
        copy = s.request(
            "COPY",
            f"{policed.url}/documents/mine.txt",
            headers={"Destination": f"{policed.url}{dest}"},
        )
        if copy.status_code != 400:
            problems.append(f"COPY /documents/mine.txt -> {dest}: {copy.status_code}, expected 400")
    assert not problems, "\n".join(problems)


def test_traversal_cannot_reach_a_denied_share(policed: Gateway, instance: Instance) -> None:
    """A dotted path into another share is judged by that share's policy."""
    gw = policed
    for target in (
        "/documents/../clinical/p1/note.txt",
        "/documents/%2e%2e/clinical/p1/note.txt",
        "/referrals/../clinical/p1/note.txt",
    ):
        status, body = _raw(gw, "GET", target, user="rita")
        assert status in (400, 403, 404), (target, status)
        assert FILES["/clinical/p1/note.txt"] not in body
        status, _ = _raw(gw, "PUT", target, user="rita", body=b"rita was here")
        assert status in (400, 403, 404), (target, status)
    # A Destination that climbs out of documents into clinical.
    for dest in (
        "/documents/../clinical/p1/x.txt",
        "/documents/%2e%2e/clinical/p1/x.txt",
        "/documents/..%2fclinical/p1/x.txt",
        "/documents/x/../../clinical/p1/x.txt",
    ):
        for method in ("COPY", "MOVE"):
            status, _ = _raw(
                gw,
                method,
                "/documents/mine.txt",
                user="rita",
                headers={"Destination": f"http://127.0.0.1:{gw.port}{dest}"},
            )
            assert status in (400, 403), (method, dest, status)
    _alice_sees_files_unchanged(gw)
    assert gw.session().get(f"{gw.url}/clinical/p1/x.txt").status_code == 404


def test_foreign_entries_on_a_plain_share_do_not_break_its_listing(
    policed: Gateway, instance: Instance
) -> None:
    """Files put on the share by something else, under names clindav refuses or in
    no format of ours, are left out of listings instead of failing them."""
    gw = policed
    docs = instance.share_dir("documents")
    for name in ("ctl\x07bell.txt", "trailing.", "CON", "bidi\u202etxt.exe"):
        (docs / name).write_bytes(b"placed on the share directly")
    (docs / "notours.txt").write_bytes(b"x" * 17)  # no stored file has 17 bytes
    os.mkfifo(docs / "pipe")
    s = gw.session()
    for depth in ("1", "0"):
        listing = s.request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": depth})
        assert listing.status_code == 207, listing.text[:300]
    listing = s.request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": "1"})
    for name in ("ctl", "trailing", "CON", "bidi", "notours", "pipe"):
        assert name not in listing.text, name
    assert "/documents/mine.txt" in listing.text and "/documents/archive/" in listing.text
    assert s.get(f"{gw.url}/documents/mine.txt").status_code == 200


def test_symlinks_in_the_backing_folder_are_not_followed(
    policed: Gateway, instance: Instance
) -> None:
    """Someone with access to the share plants links; the gateway never follows them."""
    gw = policed
    docs = instance.share_dir("documents")
    os.symlink(instance.folder / "secret.txt", docs / "escape.txt")
    os.symlink(instance.folder, docs / "escdir")
    outside_before = _outside_shares(instance.folder)
    s = gw.session()
    problems = []
    for path in (
        "/documents/escape.txt",
        "/documents/escdir/secret.txt",
        "/documents/escdir/clindav.yaml",
        "/documents/escdir/shares/documents/mine.txt",
    ):
        for method in ("GET", "PROPFIND"):
            r = s.request(method, f"{gw.url}{path}", headers={"Depth": "0"})
            if r.status_code != 404 or SENTINEL in r.content:
                problems.append(f"{method} {path}: {r.status_code}, expected 404")
    listing = s.request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": "1"})
    if b"escape.txt" in listing.content or b"escdir" in listing.content:
        problems.append("PROPFIND /documents/ lists a planted link")
    for method, path in (
        ("PUT", "/documents/escdir/planted.txt"),
        ("MKCOL", "/documents/escdir/newdir"),
        ("DELETE", "/documents/escdir/secret.txt"),
        ("COPY", "/documents/mine.txt"),
        ("MOVE", "/documents/archive/old.txt"),
    ):
        headers = (
            {"Destination": f"{gw.url}/documents/escdir/{path.rsplit('/', 1)[1]}"}
            if method in ("COPY", "MOVE")
            else {}
        )
        r = s.request(
            method, f"{gw.url}{path}", data=b"planted" if method == "PUT" else None, headers=headers
        )
        if r.status_code >= 500 or r.status_code in (200, 201, 204):
            problems.append(f"{method} {path} {headers}: {r.status_code}")
    planted = sorted(
        set(os.listdir(instance.folder))
        - {"shares", "keys", "tls", "clindav.yaml", "policy.yaml", "secret.txt", "clindav.pid"}
        - {n for n in os.listdir(instance.folder) if n.startswith("clindav.db")}
    )
    if planted:
        problems.append(f"entries created outside the shares: {planted}")
    secret = instance.folder / "secret.txt"
    if not secret.exists() or secret.read_bytes() != SENTINEL:
        problems.append("secret.txt outside the shares was changed or removed")
    if _outside_shares(instance.folder) != outside_before:
        problems.append("files outside the shares changed")
    assert not problems, "\n".join(problems)
