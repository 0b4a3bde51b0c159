"""Every case of the hardening issue against one running gateway (acceptance point 1).

Each refusal gets the documented status and code, is audited (one event with
that status and code), stores nothing (the backing shares, the registry, the
key table, locks, dead properties and the trash are unchanged), shows no
internal detail, and the gateway serves a normal request afterwards.  The
cases test_hardening.py and test_hardening_limits.py already check that way
stay there; docs/HARDENING.md ("Where each case is tested") maps every case to
its test.  One gateway serves the whole module, so each test uses its own names.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import sqlalchemy
import yaml
from PIL import Image
from sqlalchemy.pool import NullPool

from gateway.crypto.fileformat import MAGIC
from gateway.dav.limits import MAX_LOCK_BODY, MAX_XML_BODY
from gateway.settings import load_settings
from tests.conftest import PASSWORD, Gateway, make_instance, run_cli, start_in_process
from tests.integration.test_dav_methods import LOCK_BODY, small_jpeg

TRUSTED_PROXY = "127.0.0.2"  # loopback, so a test can connect from it
# What no answer may show: where clindav lives, or how it failed inside.
INTERNALS = ("Traceback", 'File "', "site-packages", "wsgidav", "Error(", "Exception")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    instance = make_instance(tmp_path_factory.mktemp("hardening-cases"))
    settings = instance.settings()
    settings["server"]["trusted_proxies"] = [TRUSTED_PROXY]
    instance.write_settings(settings)
    # A read-only user (audrey) for the Destination cases; nothing else changes.
    policy_file = instance.folder / "policy.yaml"
    policy = yaml.safe_load(policy_file.read_text())
    policy["rules"].insert(
        0,
        {
            "name": "auditors-read-documents",
            "share": "documents",
            "groups": ["auditors"],
            "methods": ["read"],
        },
    )
    policy_file.write_text(yaml.safe_dump(policy, sort_keys=False))
    gateway = start_in_process(instance)
    yield gateway
    gateway.stop()


# --- what every refusal must satisfy ----------------------------------------

_ENGINES: dict[Path, sqlalchemy.Engine] = {}


def query(gw: Gateway, sql: str, **params: Any) -> list[tuple]:
    config = gw.instance.config
    if config not in _ENGINES:
        url = load_settings(config).sqlalchemy_url()
        _ENGINES[config] = sqlalchemy.create_engine(url, poolclass=NullPool)
    with _ENGINES[config].connect() as conn:
        return [tuple(row) for row in conn.execute(sqlalchemy.text(sql), params)]


def audited(gw: Gateway, request_id: str) -> list[tuple[str, int, str]]:
    return [
        (action, status, code)
        for action, status, code in query(
            gw,
            "SELECT action, status, code FROM audit_event WHERE request_id = :id ORDER BY seq",
            id=request_id,
        )
    ]


def stored(gw: Gateway) -> dict[str, Any]:
    """Everything a request can store: backing files and folders, and the rows."""
    shares = gw.instance.folder / "shares"
    tree = {}
    for folder, dirs, files in os.walk(shares):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                tree[str(path.relative_to(shares))] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                tree[str(path.relative_to(shares))] = "dir"
            else:
                tree[str(path.relative_to(shares))] = hashlib.sha256(path.read_bytes()).hexdigest()
    rows = {
        table: sorted(query(gw, f"SELECT {columns} FROM {table}"))
        for table, columns in (
            ("stored_object", "share, logical_path, file_id, size"),
            ("data_key", "key_id"),
            ("dav_lock", "token"),
            ("dead_property", "url, name"),
            ("trash_item", "id, state"),
        )
    }
    return {"tree": tree, **rows}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    @classmethod
    def of(cls, r: requests.Response) -> Answer:
        return cls(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


def check_refused(gw: Gateway, answer: Answer | requests.Response, status: int, code: str) -> None:
    """The documented status and code, one audit event, and nothing internal shown."""
    a = Answer.of(answer) if isinstance(answer, requests.Response) else answer
    assert (a.status, a.headers.get("x-clindav-error")) == (status, code), (a.status, a.body[:300])
    events = audited(gw, a.headers["x-request-id"])
    assert [(s, c) for _, s, c in events] == [(status, code)], events
    assert a.headers.get("x-content-type-options") == "nosniff"
    check_no_internals(gw, a.body)


def check_no_internals(gw: Gateway, body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    for secret in (*INTERNALS, str(gw.instance.folder)):
        assert secret not in text, (secret, text[:300])


def serves(gw: Gateway) -> None:
    """A normal upload, read and listing still work."""
    s = gw.session()
    assert s.put(f"{gw.url}/documents/alive.txt", data=b"alive").status_code in (201, 204)
    assert s.get(f"{gw.url}/documents/alive.txt").content == b"alive"
    listing = s.request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": "1"})
    assert listing.status_code == 207 and b"alive.txt" in listing.content


def refuse(
    gw: Gateway,
    method: str,
    path: str,
    status: int,
    code: str,
    *,
    user: str | None = "alice",
    **kwargs: Any,
) -> requests.Response:
    """One request that must be refused: checked, nothing stored, and serving afterwards."""
    before = stored(gw)
    r = gw.session(user).request(method, f"{gw.url}{path}", **kwargs)
    check_refused(gw, r, status, code)
    assert stored(gw) == before
    serves(gw)
    return r


# --- raw HTTP, for what requests will not send -------------------------------


def auth(user: str = "alice") -> str:
    return "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()


def send_raw(
    gw: Gateway, data: bytes, *, source: str | None = None, timeout: float = 5
) -> tuple[list[Answer], bool]:
    """Send bytes; the answers, and whether the server closed the connection."""
    address = (source, 0) if source else None
    received, closed = b"", False
    with socket.create_connection(
        ("127.0.0.1", gw.port), timeout=timeout, source_address=address
    ) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    answers = []
    while received.startswith(b"HTTP/1."):
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        answers.append(Answer(int(lines[0].split()[1]), headers, rest[:length]))
        received = rest[length:]
    return answers, closed


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def jpeg_with_comment(comment: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 90)).save(out, "JPEG", comment=comment)
    return out.getvalue()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- names and paths ---------------------------------------------------------


@pytest.mark.parametrize(
    "segment",
    [
        "%C0%AE",  # overlong "."
        "%C0%AE%C0%AE",  # overlong ".."
        "a%C0%AFb.txt",  # overlong "/"
        "%ff.txt",
        "caf%E9.txt",  # Latin-1, not UTF-8
        "x%ED%A0%80.txt",  # a UTF-16 surrogate
        "%F4%90%80%80.txt",  # above U+10FFFF
    ],
)
def test_bad_encodings_are_refused_before_anything(gw: Gateway, segment: str) -> None:
    for method in ("PUT", "MKCOL", "GET"):
        refuse(gw, method, f"/documents/{segment}", 400, "invalid-path", data=b"x")


@pytest.mark.parametrize(
    ("method", "name", "code"),
    [
        ("PUT", "a%00b.txt", "invalid-path"),
        ("PUT", "a%5Cb.txt", "forbidden-character"),
        ("MKCOL", "a%5Cb", "forbidden-character"),
        ("PUT", "a%01b.txt", "control-character"),
        ("PUT", "a%7Fb.txt", "control-character"),
        ("PUT", "a%C2%85b.txt", "control-character"),  # C1 control NEL
        ("PUT", "a%D8%9Cb.txt", "control-character"),  # U+061C, a bidi mark
        ("MKCOL", "invoice%E2%80%AEgpj.exe", "control-character"),
        # U+FFFE cannot be written in XML: stored, it made its folder's PROPFIND 500.
        ("PUT", "a%EF%BF%BEb.txt", "control-character"),
        ("MKCOL", "aux.jpg", "reserved-name"),
        ("LOCK", "COM1", "reserved-name"),
        ("MKCOL", "report.", "trailing-dot-or-space"),
        ("LOCK", "report%20", "trailing-dot-or-space"),
        ("MKCOL", "a:Zone.Identifier", "forbidden-character"),
    ],
)
def test_names_a_windows_share_cannot_hold(gw: Gateway, method: str, name: str, code: str) -> None:
    body = LOCK_BODY if method == "LOCK" else (b"x" if method == "PUT" else None)
    refuse(gw, method, f"/documents/{name}", 400, code, data=body)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("CON.txt", "reserved-name"),
        ("a:Zone.Identifier", "forbidden-character"),
        ("gpj%E2%80%AE.exe", "control-character"),
        ("trailing%20", "trailing-dot-or-space"),
        ("x" * 144, "name-too-long"),
        ("%C0%AE%C0%AE", "invalid-path"),
    ],
)
def test_destination_names_follow_the_same_rules(gw: Gateway, name: str, code: str) -> None:
    source = f"/documents/{unique('src')}.txt"
    assert gw.session().put(f"{gw.url}{source}", data=b"source").status_code == 201
    status = 414 if code == "name-too-long" else 400
    for method in ("COPY", "MOVE"):
        for share in ("documents", "referrals"):  # within the share, and across
            destination = f"{gw.url}/{share}/{name}"
            refuse(gw, method, source, status, code, headers={"Destination": destination})


def test_name_length_is_capped_before_the_disk(gw: Gateway) -> None:
    """Encrypted names fit 255 bytes on disk: at most 143 UTF-8 bytes per segment."""
    s = gw.session()
    folder = unique("long")
    assert s.request("MKCOL", f"{gw.url}/documents/{folder}").status_code == 201
    fits = "x" * 139 + ".txt"  # 143 bytes
    assert s.put(f"{gw.url}/documents/{folder}/{fits}", data=b"fits").status_code == 201
    assert s.get(f"{gw.url}/documents/{folder}/{fits}").content == b"fits"
    longest = max(
        len(n) for _, _, names in os.walk(gw.instance.share_dir("documents")) for n in names
    )
    assert longest <= 255
    for too_long in ("x" * 140 + ".txt", quote("é" * 72)):  # 144 bytes, ASCII and not
        path = f"/documents/{folder}/{too_long}"
        refuse(gw, "PUT", path, 414, "name-too-long", data=b"x")
        refuse(gw, "MKCOL", path, 414, "name-too-long")
        refuse(gw, "LOCK", path, 414, "name-too-long", data=LOCK_BODY)
        refuse(gw, "PUT", f"{path}/inner.txt", 414, "name-too-long", data=b"x")


def test_names_differing_only_in_case_stay_two_files(gw: Gateway) -> None:
    """Encrypted names are case-sensitive, and stored in lower-case base32.

    So a case-insensitive backing share (SMB, NTFS) never merges two logical
    names: clindav has no case-insensitive mode to configure
    (docs/HARDENING.md).
    """
    s = gw.session()
    folder = unique("case")
    assert s.request("MKCOL", f"{gw.url}/documents/{folder}").status_code == 201
    assert s.put(f"{gw.url}/documents/{folder}/Photo.txt", data=b"upper").status_code == 201
    assert s.put(f"{gw.url}/documents/{folder}/photo.txt", data=b"lower").status_code == 201
    assert s.get(f"{gw.url}/documents/{folder}/Photo.txt").content == b"upper"
    assert s.get(f"{gw.url}/documents/{folder}/photo.txt").content == b"lower"
    before = {n for _, _, names in os.walk(gw.instance.share_dir("documents")) for n in names}
    assert s.put(f"{gw.url}/documents/{folder}/PHOTO.txt", data=b"third").status_code == 201
    after = {n for _, _, names in os.walk(gw.instance.share_dir("documents")) for n in names}
    (new,) = after - before
    assert new == new.lower() and new.lower() not in {n.lower() for n in before}


def test_symlinks_in_an_encrypted_share_are_never_followed(gw: Gateway, tmp_path: Path) -> None:
    """Links planted under valid encrypted names, pointing at copies of real ciphertext."""
    s = gw.session()
    share = gw.instance.share_dir("documents")
    folder = unique("links")
    entries = set(os.listdir(share))
    assert s.request("MKCOL", f"{gw.url}/documents/{folder}-dir").status_code == 201
    (dir_name,) = set(os.listdir(share)) - entries
    names_before = set(os.listdir(share / dir_name))
    assert s.put(f"{gw.url}/documents/{folder}-dir/f.txt", data=b"secret").status_code == 201
    (file_name,) = set(os.listdir(share / dir_name)) - names_before
    # Outside the share: a folder holding the file's ciphertext under its stored name.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / file_name).write_bytes((share / dir_name / file_name).read_bytes())
    os.rename(share / dir_name, tmp_path / "moved-away")
    os.symlink(outside, share / dir_name)
    try:
        for method, path, kwargs in (
            ("GET", f"{folder}-dir/f.txt", {}),
            ("PROPFIND", f"{folder}-dir", {"headers": {"Depth": "1"}}),
            ("PUT", f"{folder}-dir/new.txt", {"data": b"planted"}),
            ("MKCOL", f"{folder}-dir/sub", {}),
            ("DELETE", f"{folder}-dir/f.txt", {}),
            ("COPY", "alive.txt", {"headers": {"Destination": f"/documents/{folder}-dir/c.txt"}}),
        ):
            serves(gw)
            before = stored(gw)
            r = s.request(method, f"{gw.url}/documents/{path}", **kwargs)
            assert r.status_code in (404, 409), (method, path, r.status_code)
            assert b"secret" not in r.content
            check_refused(gw, r, r.status_code, r.headers["X-Clindav-Error"])
            assert stored(gw) == before
        listing = s.request("PROPFIND", f"{gw.url}/documents/", headers={"Depth": "1"})
        assert f"{folder}-dir".encode() not in listing.content
        assert os.listdir(outside) == [file_name]
    finally:
        os.unlink(share / dir_name)
        os.rename(tmp_path / "moved-away", share / dir_name)
    serves(gw)


# --- request limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "limit"),
    [("PROPFIND", MAX_XML_BODY), ("PROPPATCH", MAX_XML_BODY), ("LOCK", MAX_LOCK_BODY)],
)
def test_xml_bodies_over_the_cap_are_refused_before_reading(
    gw: Gateway, method: str, limit: int
) -> None:
    """Only the headers are sent: the answer cannot have waited for the body."""
    name = unique("xml")
    assert gw.session().put(f"{gw.url}/documents/{name}.txt", data=b"x").status_code == 201
    for path in (f"/documents/{name}.txt", f"/documents/{name}-unmapped.txt"):
        before = stored(gw)
        headers = {"Authorization": auth(), "Content-Length": str(limit + 1), "Depth": "0"}
        started = time.monotonic()
        (answer,), closed = send_raw(gw, raw_request(method, path, headers))
        assert time.monotonic() - started < 3 and closed
        check_refused(gw, answer, 413, "xml-body-too-large")
        assert stored(gw) == before
    serves(gw)


def test_lock_owner_is_capped(gw: Gateway) -> None:
    """The owner is kept with the lock and shown in every lockdiscovery: 8 KiB of LOCK body."""
    path = f"/documents/{unique('owner')}.txt"
    assert gw.session().put(f"{gw.url}{path}", data=b"x").status_code == 201

    def lock_body(owner: str) -> bytes:
        return LOCK_BODY.replace("<D:href>alice</D:href>", f"<D:href>{owner}</D:href>").encode()

    big = lock_body("A" * MAX_LOCK_BODY)
    for target in (path, f"/documents/{unique('owner-unmapped')}.txt"):
        before = stored(gw)
        headers = {"Authorization": auth(), "Content-Length": str(len(big))}
        (answer,), _ = send_raw(gw, raw_request("LOCK", target, headers))
        check_refused(gw, answer, 413, "xml-body-too-large")
        assert stored(gw) == before
    serves(gw)
    # An owner of a kilobyte (more than any client sends) still locks.
    s = gw.session()
    r = s.request("LOCK", f"{gw.url}{path}", data=lock_body("mailto:" + "a" * 1000))
    assert r.status_code == 200
    unlock = s.request("UNLOCK", f"{gw.url}{path}", headers={"Lock-Token": r.headers["Lock-Token"]})
    assert unlock.status_code == 204


def test_transfer_encoding_with_content_length_is_refused_and_the_connection_closed(
    gw: Gateway,
) -> None:
    """RFC 9112 6.3: the server MUST close the connection after such a request.

    The bytes after the headers hold a complete second request; were the
    connection kept, it would run (request smuggling).
    """
    name = unique("smuggled")
    second = raw_request(
        "PUT", f"/documents/{name}.txt", {"Authorization": auth(), "Content-Length": "3"}, b"abc"
    )
    for framing, body in (
        ({"Content-Length": str(len(second)), "Transfer-Encoding": "chunked"}, second),
        ({"Content-Length": "5", "Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n"),
    ):
        before = stored(gw)
        first = raw_request(
            "PUT", f"/documents/{name}-te.txt", {"Authorization": auth(), **framing}
        )
        answers, closed = send_raw(gw, first + body + second)
        assert closed and len(answers) == 1, answers
        check_refused(gw, answers[0], 400, "bad-header")
        assert answers[0].headers.get("connection") == "close"
        assert stored(gw) == before
    assert gw.session().get(f"{gw.url}/documents/{name}.txt").status_code == 404
    serves(gw)


def test_a_refused_chunked_body_is_never_read_as_the_next_request(gw: Gateway) -> None:
    """cheroot drains an unread Content-Length body but not a chunked one."""
    serves(gw)
    name = unique("chunk-smuggled")
    second = raw_request(
        "PUT", f"/documents/{name}.txt", {"Authorization": auth(), "Content-Length": "3"}, b"abc"
    )
    for method, status, code in (
        ("PROPPATCH", 411, "length-required"),
        ("LOCK", 411, "length-required"),
    ):
        before = stored(gw)
        headers = {"Authorization": auth(), "Transfer-Encoding": "chunked"}
        answers, closed = send_raw(
            gw, raw_request(method, "/documents/alive.txt", headers) + second
        )
        assert closed and len(answers) == 1, answers
        check_refused(gw, answers[0], status, code)
        assert stored(gw) == before
    # A chunked PUT by a user the policy refuses.
    headers = {"Authorization": auth("audrey"), "Transfer-Encoding": "chunked"}
    answers, closed = send_raw(gw, raw_request("PUT", "/clinical/x.txt", headers) + second)
    assert closed and len(answers) == 1, answers
    check_refused(gw, answers[0], 403, "policy-denied")
    assert gw.session().get(f"{gw.url}/documents/{name}.txt").status_code == 404
    serves(gw)


def test_a_refused_large_body_is_never_waited_for_nor_read(gw: Gateway) -> None:
    """cheroot drained an unread body before answering, holding all of it in memory: any
    stranger's PUT of gigabytes to a 401 or 403 was buffered whole.  Past 64 KiB the
    answer comes at once and the connection closes."""
    serves(gw)
    big = str(2 * 1024**3)  # declared, never sent
    for headers, status, code in (
        ({"Content-Length": big}, 401, "authentication-required"),
        ({"Authorization": auth("audrey"), "Content-Length": big}, 403, "policy-denied"),
    ):
        answers, closed = send_raw(gw, raw_request("PUT", "/clinical/x.jpg", headers))
        assert closed and [a.status for a in answers] == [status], answers
        assert answers[0].headers["x-clindav-error"] == code
    serves(gw)


def test_content_encoding_on_put_is_refused(gw: Gateway) -> None:
    for encoding in ("gzip", "br", "identity, gzip"):
        path = f"/documents/{unique('encoded')}.txt"
        refuse(
            gw,
            "PUT",
            path,
            415,
            "content-encoding-refused",
            data=b"\x1f\x8b",
            headers={"Content-Encoding": encoding},
        )


@pytest.mark.parametrize(
    ("method", "headers", "status", "code"),
    [
        ("PROPFIND", {"Depth": "infinity"}, 403, "propfind-finite-depth"),
        ("PROPFIND", {"Depth": "Infinity "}, 403, "propfind-finite-depth"),
        ("PROPFIND", {"Depth": "one"}, 400, "bad-header"),
        ("COPY", {"Depth": "-1", "Destination": "/documents/x.txt"}, 400, "bad-header"),
        ("LOCK", {"Timeout": "Second-"}, 400, "bad-header"),
        ("LOCK", {"Timeout": "Second-99999999999999"}, 400, "bad-header"),
        ("LOCK", {"Timeout": "Forever"}, 400, "bad-header"),
        ("UNLOCK", {"Lock-Token": "<a> <b>"}, 400, "bad-header"),
        ("UNLOCK", {"Lock-Token": "<" + "a" * 201 + ">"}, 400, "bad-header"),
        ("UNLOCK", {"Lock-Token": "<>"}, 400, "bad-header"),
        # WsgiDAV ignores what it cannot parse, so these conditions never applied.
        ("PUT", {"If": "(<opaquelocktoken:x>"}, 400, "bad-header"),
        ("PUT", {"If": "()"}, 400, "bad-header"),
        ("PUT", {"If": "(Not)"}, 400, "bad-header"),
        ("PUT", {"If": "<http://h/documents/a>"}, 400, "bad-header"),
        ("PUT", {"If": "(<a:b>) <http://h/documents/a> (<c:d>)"}, 400, "bad-header"),
        ("PUT", {"If": "(<a:b>) trailing"}, 400, "bad-header"),
        ("PUT", {"If": "(" * 9000}, 400, "bad-header"),
        # A Destination urlparse cannot read was a 500.
        ("COPY", {"Destination": "http://[::1/documents/x.txt"}, 400, "bad-header"),
        ("COPY", {"Destination": "http://127.0.0.1:port/documents/x.txt"}, 400, "bad-header"),
        ("MOVE", {"Destination": "%%%"}, 400, "bad-header"),
        ("MOVE", {"Destination": "documents/x.txt"}, 400, "bad-header"),
        ("COPY", {"Destination": "ftp://127.0.0.1/documents/x.txt"}, 400, "bad-header"),
        ("COPY", {"Destination": "/documents/x.txt", "Overwrite": "TT"}, 400, "bad-header"),
        ("MOVE", {"Destination": "/documents/x.txt", "Overwrite": ""}, 400, "bad-header"),
    ],
)
def test_malformed_dav_headers_answer_400(
    gw: Gateway, method: str, headers: dict[str, str], status: int, code: str
) -> None:
    path = f"/documents/{unique('hdr')}.txt"
    assert gw.session().put(f"{gw.url}{path}", data=b"original").status_code == 201
    body = LOCK_BODY if method == "LOCK" else (b"changed" if method == "PUT" else None)
    refuse(gw, method, path, status, code, headers=headers, data=body)
    assert gw.session().get(f"{gw.url}{path}").content == b"original"


def test_destination_counts_only_on_copy_and_move(gw: Gateway) -> None:
    """A Destination on any other method was answered as a copy into that share.

    audrey may only read documents; her GET with a Destination in referrals
    wrote the file there, past the policy.
    """
    s, audrey = gw.session(), gw.session("audrey")
    name = unique("dest")
    source = f"{gw.url}/documents/{name}.txt"
    assert s.put(source, data=b"document").status_code == 201
    referrals = "SELECT logical_path FROM stored_object WHERE share = 'referrals'"
    referrals_before = (sorted(os.walk(gw.instance.share_dir("referrals"))), query(gw, referrals))
    for method in ("GET", "HEAD", "PROPFIND", "OPTIONS"):
        target = f"{gw.url}/referrals/{name}-{method}.txt"
        r = audrey.request(method, source, headers={"Destination": target, "Depth": "0"})
        assert r.status_code in (200, 207), (method, r.status_code)
        assert audited(gw, r.headers["X-Request-Id"]) == [(method, r.status_code, "ok")]
    # alice's PUT and DELETE do what they say, whatever the Destination.
    r = s.put(source, data=b"replaced", headers={"Destination": f"{gw.url}/referrals/{name}.txt"})
    assert r.status_code == 204 and s.get(source).content == b"replaced"
    r = s.delete(source, headers={"Destination": f"{gw.url}/referrals/{name}.txt"})
    assert r.status_code == 204 and s.get(source).status_code == 404
    referrals_after = (sorted(os.walk(gw.instance.share_dir("referrals"))), query(gw, referrals))
    assert referrals_after == referrals_before
    serves(gw)


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        ("Basic !!!not-base64", 400, "bad-request"),
        ("Basic " + base64.b64encode(b"alice-without-colon").decode(), 400, "bad-request"),
        (
            "Basic " + base64.b64encode(b"al\xffce:" + PASSWORD.encode()).decode(),
            400,
            "bad-request",
        ),
        ("Basic", 400, "bad-request"),
        ("Basic " + "A" * 5000, 400, "bad-request"),
        ("Basic " + base64.b64encode(b":").decode(), 401, "authentication-required"),
        ("Basic " + base64.b64encode(b"alice:wrong").decode(), 401, "authentication-required"),
    ],
)
def test_malformed_authorization_is_400_or_401_never_500(
    gw: Gateway, header: str, status: int, code: str
) -> None:
    path = f"/documents/{unique('auth')}.txt"
    r = refuse(
        gw, "PUT", path, status, code, user=None, data=b"x", headers={"Authorization": header}
    )
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Basic ")


# --- locks -------------------------------------------------------------------


def lock_expiry(gw: Gateway, token: str) -> float:
    ((expire,),) = query(gw, "SELECT expire FROM dav_lock WHERE token = :t", t=token.strip("<>"))
    return float(expire)


def test_lock_timeouts_are_capped_on_refresh_too(gw: Gateway) -> None:
    s = gw.session()
    url = f"{gw.url}/documents/{unique('timeout')}.txt"
    assert s.put(url, data=b"x").status_code == 201
    token = s.request("LOCK", url, data=LOCK_BODY, headers={"Timeout": "Second-99999999"}).headers[
        "Lock-Token"
    ]
    assert lock_expiry(gw, token) <= time.time() + 3600
    for timeout in ("Infinite", "Second-4294967295", "Infinite, Second-60"):
        refresh = s.request("LOCK", url, headers={"If": f"({token})", "Timeout": timeout})
        assert refresh.status_code == 200, refresh.text
        granted = re.search(rb"Second-(\d+)", refresh.content)
        assert granted and int(granted.group(1)) <= 3600
        assert lock_expiry(gw, token) <= time.time() + 3600
    assert s.request("UNLOCK", url, headers={"Lock-Token": token}).status_code == 204


def test_depth_infinity_lock_of_a_share_root_is_for_admins(gw: Gateway) -> None:
    for path in ("/documents/", "/documents", "/"):
        refuse(
            gw,
            "LOCK",
            path,
            403,
            "infinite-lock-refused",
            data=LOCK_BODY,
            headers={"Depth": "infinity"},
        )
    admin = gw.session("root-admin")
    r = admin.request("LOCK", f"{gw.url}/teaching/", data=LOCK_BODY, headers={"Depth": "infinity"})
    assert r.status_code == 200
    unlock = admin.request(
        "UNLOCK", f"{gw.url}/teaching/", headers={"Lock-Token": r.headers["Lock-Token"]}
    )
    assert unlock.status_code == 204


def test_lock_null_resources_go_through_the_pipeline(gw: Gateway) -> None:
    """A LOCK on an unmapped URL stores an encrypted 0-byte placeholder only its creator sees;
    content put under the lock is checked, scrubbed and consented like any upload."""
    alice, ivy = gw.session("alice"), gw.session("ivy")
    folder = unique("lock-null")
    assert alice.request("MKCOL", f"{gw.url}/documents/{folder}").status_code == 201
    url = f"{gw.url}/documents/{folder}/photo.jpg"
    tree_before = stored(gw)["tree"]
    lock = alice.request("LOCK", url, data=LOCK_BODY)
    assert lock.status_code == 201
    assert audited(gw, lock.headers["X-Request-Id"]) == [("LOCK", 201, "stored")]
    (new,) = set(stored(gw)["tree"]) - set(tree_before)
    placeholder = gw.instance.folder / "shares" / new
    assert "photo" not in new and placeholder.read_bytes().startswith(MAGIC)
    assert ivy.get(url).status_code == 404
    listing = ivy.request("PROPFIND", f"{gw.url}/documents/{folder}", headers={"Depth": "1"})
    assert b"photo.jpg" not in listing.content
    assert alice.get(url).content == b""
    # Scrubbed like any upload.
    marker = b"CLINDAV-LOCKNULL-MARKER"
    put = alice.put(
        url, data=jpeg_with_comment(marker), headers={"If": f"({lock.headers['Lock-Token']})"}
    )
    assert put.status_code == 204
    assert marker not in alice.get(url).content
    assert marker not in placeholder.read_bytes()
    # Consent is not bypassed: teaching needs a teaching consent.
    teaching = f"{gw.url}/teaching/{unique('case')}.jpg"
    lock = alice.request("LOCK", teaching, data=LOCK_BODY)
    assert lock.status_code == 201
    before = stored(gw)
    put = alice.put(teaching, data=small_jpeg(), headers={"If": f"({lock.headers['Lock-Token']})"})
    check_refused(gw, put, 403, "consent-missing")
    assert stored(gw) == before
    assert alice.get(teaching).content == b"" and ivy.get(teaching).status_code == 404
    serves(gw)


def test_lock_null_in_a_folder_someone_else_locked_stores_nothing(gw: Gateway) -> None:
    alice, ivy = gw.session("alice"), gw.session("ivy")
    folder = f"{gw.url}/documents/{unique('locked-dir')}"
    assert alice.request("MKCOL", folder).status_code == 201
    token = alice.request("LOCK", folder, data=LOCK_BODY, headers={"Depth": "infinity"}).headers[
        "Lock-Token"
    ]
    try:
        assert ivy.put(f"{folder}/put.txt", data=b"x").status_code == 423
        before = stored(gw)
        r = ivy.request("LOCK", f"{folder}/sneaked.txt", data=LOCK_BODY)
        check_refused(gw, r, 423, "locked")
        assert stored(gw) == before
        assert ivy.get(f"{folder}/sneaked.txt").status_code == 404
    finally:
        alice.request("UNLOCK", folder, headers={"Lock-Token": token})


def test_lock_tokens_are_bound_to_their_owner_and_never_shown_to_others(gw: Gateway) -> None:
    alice, ivy = gw.session("alice"), gw.session("ivy")
    owner = "mailto:alice-owner-7c1d"
    url = f"{gw.url}/documents/{unique('bound')}.txt"
    assert alice.put(url, data=b"alice's").status_code == 201
    lock = alice.request("LOCK", url, data=LOCK_BODY.replace(">alice<", f">{owner}<"))
    token = lock.headers["Lock-Token"].strip("<>")
    other = f"{gw.url}/documents/{unique('other')}.txt"
    assert ivy.put(other, data=b"ivy's").status_code == 201
    if_token = {"If": f"(<{token}>)"}
    proppatch = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
        "<D:set><D:prop><Z:n>v</Z:n></D:prop></D:set></D:propertyupdate>"
    )
    for method, target, kwargs, status, code in (
        ("PUT", url, {"data": b"ivy"}, 423, "locked"),
        ("PUT", url, {"data": b"ivy", "headers": if_token}, 412, "precondition-failed"),
        ("DELETE", url, {"headers": if_token}, 412, "precondition-failed"),
        ("PROPPATCH", url, {"data": proppatch, "headers": if_token}, 412, "precondition-failed"),
        (
            "LOCK",
            url,
            {"headers": {**if_token, "Timeout": "Second-60"}},
            412,
            "precondition-failed",
        ),
        ("LOCK", url, {"data": LOCK_BODY}, 423, "locked"),
        ("UNLOCK", url, {"headers": {"Lock-Token": f"<{token}>"}}, 403, "forbidden"),
        (
            "MOVE",
            url,
            {"headers": {**if_token, "Destination": f"{url}-moved"}},
            412,
            "precondition-failed",
        ),
        (
            "MOVE",
            other,
            {"headers": {"Destination": url, "Overwrite": "T", "If": f"<{url}> (<{token}>)"}},
            423,
            "locked",
        ),
    ):
        before = stored(gw)
        r = ivy.request(method, target, **kwargs)
        check_refused(gw, r, status, code)
        assert stored(gw) == before
        shown = r.content + json.dumps(dict(r.headers)).encode()
        assert token.encode() not in shown and token.split(":")[-1].encode() not in shown
        assert b"alice" not in shown
    assert alice.get(url).content == b"alice's"
    assert [t for (t,) in query(gw, "SELECT token FROM dav_lock")].count(token) == 1
    assert alice.put(url, data=b"still alice's", headers=if_token).status_code == 204
    assert alice.request("UNLOCK", url, headers={"Lock-Token": f"<{token}>"}).status_code == 204
    serves(gw)


# --- COPY and MOVE -------------------------------------------------------------


def test_forwarding_headers_count_only_from_a_trusted_proxy(gw: Gateway) -> None:
    name = unique("fwd")
    assert gw.session().put(f"{gw.url}/documents/{name}.txt", data=b"fwd").status_code == 201
    common = {"Authorization": auth(), "Connection": "close"}
    forwarded = {"X-Forwarded-For": "10.1.2.3, 10.9.8.7", "Forwarded": "for=10.5.5.5"}
    proxied_copy = {
        "Content-Length": "0",
        "X-Forwarded-Host": "dav.example.org",
        "X-Forwarded-Proto": "https",
    }
    for source, client, copy_status, copy_code in (
        (None, "127.0.0.1", 502, "bad-gateway"),  # a client: every forwarding header removed
        (TRUSTED_PROXY, "10.9.8.7", 201, "ok"),  # the proxy: the last X-Forwarded-For entry
    ):
        (answer,), _ = send_raw(
            gw, raw_request("GET", f"/documents/{name}.txt", {**common, **forwarded}), source=source
        )
        assert answer.status == 200
        (row,) = query(
            gw,
            "SELECT client FROM audit_event WHERE request_id = :id",
            id=answer.headers["x-request-id"],
        )
        assert row == (client,)
        before = stored(gw)
        destination = f"https://dav.example.org/documents/{name}-via-{source}.txt"
        (answer,), _ = send_raw(
            gw,
            raw_request(
                "COPY",
                f"/documents/{name}.txt",
                {**common, **proxied_copy, "Destination": destination},
            ),
            source=source,
        )
        if copy_status == 201:
            assert answer.status == 201
            assert audited(gw, answer.headers["x-request-id"]) == [("COPY", 201, "ok")]
        else:
            check_refused(gw, answer, copy_status, copy_code)
            assert stored(gw) == before
    serves(gw)


def trash_items(gw: Gateway) -> dict[str, dict]:
    listed = json.loads(run_cli("trash", "list", "--json", config=gw.instance.config).stdout)
    return {item["path"]: item for item in listed}


def test_overwriting_copy_and_move_send_the_old_target_to_the_trash(gw: Gateway) -> None:
    s = gw.session()
    base = f"{gw.url}/documents"
    name = unique("overwrite")
    for suffix, body in (("a", b"old a"), ("b", b"new b"), ("c", b"old c"), ("d", b"new d")):
        assert s.put(f"{base}/{name}-{suffix}.txt", data=body).status_code == 201
    copy = s.request(
        "COPY", f"{base}/{name}-b.txt", headers={"Destination": f"{base}/{name}-a.txt"}
    )
    move = s.request(
        "MOVE", f"{base}/{name}-d.txt", headers={"Destination": f"{base}/{name}-c.txt"}
    )
    assert (copy.status_code, move.status_code) == (204, 204)
    # The replaced target's own event, then the request's (issue 15, point 10).
    assert audited(gw, copy.headers["X-Request-Id"]) == [
        ("DELETE", 204, "trashed"),
        ("COPY", 204, "ok"),
    ]
    assert audited(gw, move.headers["X-Request-Id"]) == [
        ("DELETE", 204, "trashed"),
        ("MOVE", 204, "ok"),
    ]
    assert s.get(f"{base}/{name}-a.txt").content == b"new b"
    assert s.get(f"{base}/{name}-c.txt").content == b"new d"
    items = trash_items(gw)
    for suffix, body in (("a", b"old a"), ("c", b"old c")):
        item = items[f"/{name}-{suffix}.txt"]
        assert item["trashed_by"] == "alice" and item["files"] == 1
        restored = f"/{name}-{suffix}-restored.txt"
        run_cli("trash", "restore", item["id"], "--to", restored, config=gw.instance.config)
        assert s.get(f"{base}{restored}").content == body
    # Overwrite: F refuses and leaves both.
    before = stored(gw)
    r = s.request(
        "COPY",
        f"{base}/{name}-b.txt",
        headers={"Destination": f"{base}/{name}-a.txt", "Overwrite": "F"},
    )
    check_refused(gw, r, 412, "precondition-failed")
    assert stored(gw) == before
    serves(gw)


def data_keys(gw: Gateway, path: str) -> list[tuple]:
    return query(
        gw,
        "SELECT k.key_id, k.wrapped FROM data_key k JOIN stored_object o ON o.file_id = k.file_id "
        "WHERE o.share = 'documents' AND o.logical_path = :p",
        p=path,
    )


def test_a_copy_gets_its_own_data_key(gw: Gateway) -> None:
    s = gw.session()
    base = f"{gw.url}/documents"
    name = unique("keys")
    body = os.urandom(5000)
    assert s.request("MKCOL", f"{base}/{name}").status_code == 201
    assert s.put(f"{base}/{name}/f.bin", data=body).status_code == 201
    assert (
        s.request(
            "COPY", f"{base}/{name}/f.bin", headers={"Destination": f"{base}/{name}/g.bin"}
        ).status_code
        == 201
    )
    assert (
        s.request(
            "COPY", f"{base}/{name}", headers={"Destination": f"{base}/{name}-copy"}
        ).status_code
        == 201
    )
    paths = [f"/{name}/f.bin", f"/{name}/g.bin", f"/{name}-copy/f.bin", f"/{name}-copy/g.bin"]
    keys = [data_keys(gw, p) for p in paths]
    assert all(len(k) == 1 for k in keys), keys
    assert len({k[0][0] for k in keys}) == 4 and len({bytes(k[0][1]) for k in keys}) == 4
    file_ids = query(
        gw,
        "SELECT file_id FROM stored_object WHERE share = 'documents' AND logical_path IN "
        "(:a, :b, :c, :d)",
        a=paths[0],
        b=paths[1],
        c=paths[2],
        d=paths[3],
    )
    assert len(set(file_ids)) == 4
    for p in paths:
        assert s.get(f"{base}{p}").content == body


# --- response headers and bodies -------------------------------------------------


def test_security_headers_and_attachment_disposition(gw: Gateway) -> None:
    s = gw.session()
    folder = f"{gw.url}/documents/{unique('headers')}"
    assert s.request("MKCOL", folder).status_code == 201
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    files = {
        "x.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', True),
        "x.html": (b"<script>alert(1)</script>", True),
        "x.pdf": (b"%PDF-1.4\n%%EOF\n", True),
        "x.txt": (b"text", True),
        "noext": (b"<html>", True),
        "x.png": (out.getvalue(), False),
        "X.PNG": (out.getvalue(), False),
        "x.jpg": (small_jpeg(), False),
    }
    for name, (body, attachment) in files.items():
        assert s.put(f"{folder}/{name}", data=body).status_code == 201, name
        for r in (s.get(f"{folder}/{name}"), s.head(f"{folder}/{name}")):
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Content-Security-Policy"].startswith("sandbox")
            assert (r.headers.get("Content-Disposition") == "attachment") is attachment, name
    anonymous = gw.session(None)
    for r in (
        anonymous.get(f"{folder}/x.txt"),
        s.get(f"{folder}/missing.txt"),
        s.request("PROPFIND", folder, headers={"Depth": "1"}),
        s.options(f"{gw.url}/"),
        s.get(f"{gw.url}/documents/%ff"),
        s.request("MKCOL", folder),
    ):
        assert r.headers["X-Content-Type-Options"] == "nosniff", r.status_code
        assert r.headers["Content-Security-Policy"].startswith("sandbox"), r.status_code
        check_no_internals(gw, r.content)


def test_error_bodies_show_no_internals(gw: Gateway) -> None:
    s = gw.session()
    base = f"{gw.url}/documents"
    name = unique("errors")
    assert s.put(f"{base}/{name}.txt", data=b"0123456789").status_code == 201
    for method, path, kwargs, status in (
        ("MKCOL", f"{name}.txt", {}, 405),
        ("PUT", f"{name}-missing/x.txt", {"data": b"x"}, 409),
        ("GET", f"{name}.txt", {"headers": {"Range": "bytes=50-"}}, 416),
        ("PUT", f"{name}.png", {"data": b"not a png"}, 415),
        ("PROPFIND", f"{name}.txt", {"data": b"<nope", "headers": {"Depth": "0"}}, 400),
        ("MOVE", f"{name}-none.txt", {"headers": {"Destination": f"{base}/{name}-x.txt"}}, 404),
        ("GET", f"{name}.txt/inner", {}, 404),
    ):
        before = stored(gw)
        r = s.request(method, f"{base}/{path}", **kwargs)
        check_refused(gw, r, status, r.headers["X-Clindav-Error"])
        assert stored(gw) == before
    serves(gw)


def test_unparsable_xml_bodies_are_not_logged(gw: Gateway) -> None:
    """They can hold patient data: neither the log nor the audit reason repeats them."""
    name = unique("xml-log")
    assert gw.session().put(f"{gw.url}/documents/{name}.txt", data=b"x").status_code == 201
    marker = "PATIENT-9434765919-MARKER"
    bodies = [
        f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>{marker} <unclosed',
        f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><{marker}></wrong>',
        f'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:">&{marker};</D:lockinfo>',
    ]
    for method in ("PROPFIND", "PROPPATCH", "LOCK"):
        for body in bodies:
            refuse(
                gw,
                method,
                f"/documents/{name}.txt",
                400,
                "bad-request",
                data=body.encode(),
                headers={"Depth": "0"},
            )
    assert marker not in gw.log()
    reasons = query(gw, "SELECT reason, details FROM audit_event")
    assert not [row for row in reasons if marker in json.dumps(row, default=str)]
