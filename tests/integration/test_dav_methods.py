"""Acceptance: an authenticated client can use every WebDAV method; others get 401."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import Gateway

LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    "<D:locktype><D:write/></D:locktype><D:owner><D:href>alice</D:href></D:owner></D:lockinfo>"
)


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_every_method_round_trips(gateway: Gateway) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    assert s.request("MKCOL", f"{base}/folder").status_code == 201
    assert s.put(f"{base}/folder/a.txt", data=b"first version").status_code == 201
    assert s.get(f"{base}/folder/a.txt").content == b"first version"
    listing = s.request("PROPFIND", f"{base}/folder", headers={"Depth": "1"})
    assert listing.status_code == 207
    assert b"/documents/folder/a.txt" in listing.content
    copy = s.request(
        "COPY", f"{base}/folder/a.txt", headers={"Destination": f"{base}/folder/b.txt"}
    )
    assert copy.status_code == 201
    assert s.get(f"{base}/folder/b.txt").content == b"first version"
    move = s.request("MOVE", f"{base}/folder/b.txt", headers={"Destination": f"{base}/c.txt"})
    assert move.status_code == 201
    assert s.get(f"{base}/folder/b.txt").status_code == 404
    assert s.get(f"{base}/c.txt").content == b"first version"

    lock = s.request("LOCK", f"{base}/c.txt", data=LOCK_BODY, headers={"Timeout": "Second-600"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    # Another user cannot write the locked file; the owner can with the token.
    other = gateway.session("ivy")
    assert other.put(f"{base}/c.txt", data=b"intruder").status_code == 423
    assert s.put(f"{base}/c.txt", data=b"second", headers={"If": f"({token})"}).status_code == 204
    assert s.request("UNLOCK", f"{base}/c.txt", headers={"Lock-Token": token}).status_code == 204
    assert other.put(f"{base}/c.txt", data=b"third").status_code == 204

    assert s.delete(f"{base}/folder").status_code == 204
    assert s.get(f"{base}/folder/a.txt").status_code == 404
    assert s.delete(f"{base}/c.txt").status_code == 204


def test_unauthenticated_and_wrong_password_get_401(gateway: Gateway) -> None:
    anonymous = gateway.session(user=None)
    for method in ("OPTIONS", "PROPFIND", "GET", "PUT", "DELETE"):
        r = anonymous.request(method, f"{gateway.url}/documents/")
        assert r.status_code == 401, method
        assert r.headers["WWW-Authenticate"].startswith('Basic realm="clindav"')
    wrong = gateway.session("alice", "not the password")
    assert wrong.request("PROPFIND", f"{gateway.url}/documents/").status_code == 401
    nobody = gateway.session("mallory", "whatever password")
    assert nobody.get(f"{gateway.url}/documents/").status_code == 401


def test_malformed_basic_header_is_400_not_500(gateway: Gateway) -> None:
    s = gateway.session(user=None)
    for header in ("Basic !!!notbase64", "Basic bm9jb2xvbg==", "Basic /w=="):
        r = s.get(f"{gateway.url}/documents/", headers={"Authorization": header})
        assert r.status_code == 400, header
        assert "Traceback" not in r.text


def test_root_answers_explorer_probes(gateway: Gateway) -> None:
    s = gateway.session()
    options = s.options(f"{gateway.url}/")
    assert options.status_code == 200
    share_options = s.options(f"{gateway.url}/clinical/")
    assert share_options.headers["DAV"].replace(" ", "").startswith("1,2")
    assert share_options.headers["MS-Author-Via"] == "DAV"
    root = s.request("PROPFIND", f"{gateway.url}/", headers={"Depth": "1"})
    assert root.status_code == 207
    assert b"/clinical/" in root.content
    share = s.request("PROPFIND", f"{gateway.url}/clinical", headers={"Depth": "0"})
    assert share.status_code == 207
    assert explorer_probes(s, f"{gateway.url}/clinical") == [404, 404, 404]


def test_root_lists_only_readable_shares(gateway: Gateway) -> None:
    auditor = gateway.session("audrey")
    root = auditor.request("PROPFIND", f"{gateway.url}/", headers={"Depth": "1"})
    assert root.status_code == 207
    assert b"/clinical/" not in root.content


def test_errors_carry_request_id_and_no_internals(gateway: Gateway) -> None:
    s = gateway.session()
    r = s.request(
        "MOVE",
        f"{gateway.url}/documents/missing.txt",
        headers={"Destination": f"{gateway.url}/documents/x.txt"},
    )
    assert r.status_code == 404
    assert r.headers["X-Request-Id"]
    assert "Traceback" not in r.text and "Exception" not in r.text


def test_explorer_placeholder_then_lock_then_content(gateway: Gateway) -> None:
    """Explorer: PUT 0 bytes, LOCK, PROPPATCH Win32 times, PUT with the token, UNLOCK."""
    s = gateway.session()
    s.request("MKCOL", f"{gateway.url}/clinical/9434765919")
    url = f"{gateway.url}/clinical/9434765919/photo.jpg"
    assert s.put(url, data=b"").status_code == 201
    lock = s.request("LOCK", url, data=LOCK_BODY, headers={"Timeout": "Second-3600"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    proppatch = (
        '<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" '
        'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
        "<Z:Win32CreationTime>Sat, 21 Nov 2026 10:00:00 GMT</Z:Win32CreationTime>"
        "<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>"
        "</D:prop></D:set></D:propertyupdate>"
    )
    pp = s.request("PROPPATCH", url, data=proppatch, headers={"If": f"({token})"})
    assert pp.status_code == 207
    assert s.head(url).status_code == 200
    jpeg = small_jpeg()
    assert s.put(url, data=jpeg, headers={"If": f"({token})"}).status_code == 204
    assert s.request("UNLOCK", url, headers={"Lock-Token": token}).status_code == 204
    assert s.get(url).content[:3] == b"\xff\xd8\xff"


def explorer_probes(s: requests.Session, share_url: str) -> list[int]:
    """How Explorer's probes of a share's root are answered (none of them is stored)."""
    return [
        s.request("PROPFIND", f"{share_url}/{probe}", headers={"Depth": "0"}).status_code
        for probe in ("desktop.ini", "folder.jpg", "AutoRun.inf")
    ]


def small_jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 90)).save(out, "JPEG")
    return out.getvalue()


def test_finder_chunked_put(gateway: Gateway) -> None:
    s = gateway.session()
    body = b"finder bytes " * 5000

    def chunks():
        for i in range(0, len(body), 7000):
            yield body[i : i + 7000]

    r = s.put(
        f"{gateway.url}/documents/finder.txt",
        data=chunks(),
        headers={"X-Expected-Entity-Length": str(len(body)), "User-Agent": "WebDAVFS/3.0.0"},
    )
    assert r.status_code == 201
    assert s.get(f"{gateway.url}/documents/finder.txt").content == body
