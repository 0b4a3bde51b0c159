"""The PROPFIND fast path (gateway/dav/propfind.py) answers exactly as WsgiDAV does.

One instance is filled with a folder of every kind of member (subfolders,
dead properties, locks, names that need escaping, private objects of other
users, a folder the policy hides), then every request below is sent to the
real gateway twice: with ``server.propfind_fast_path`` on, and with it off
(WsgiDAV's own PROPFIND).  The two 207 bodies must be the same document:
compared parsed (responses keyed by href, each property's status and value,
order ignored) and as bytes (only lock timeouts, which count down, differ).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from lxml import etree

from tests.conftest import PASSWORD, Gateway, Instance, start_in_process
from tests.integration.test_dav_methods import LOCK_BODY, small_jpeg

PATIENT = "9434765919"
FOLDER = "/documents/pf"
ODD_NAMES = ["a & b.txt", "space name.txt", "Ünïcödé ñ é.txt", "odd'(1)#%;+=@$!~.txt"]
ALLPROP = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
)
PROPNAME = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
)
NAMED = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:" xmlns:C="urn:example:clindav" xmlns:U="urn:example:unknown">'
    "<D:prop><U:thing/><D:getetag/><D:displayname/><D:getcontentlength/><D:resourcetype/>"
    "<D:lockdiscovery/><D:supportedlock/><D:quota-used-bytes/><D:nonexistent/><C:author/>"
    '<D:getcontenttype/><nons xmlns=""/><D:creationdate/><D:getlastmodified/><C:author/>'
    "</D:prop></D:propfind>"
)
BODIES = {"empty": None, "allprop": ALLPROP, "propname": PROPNAME, "named": NAMED}
PROPPATCH = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:example:clindav"><D:set><D:prop>'
    "<C:author>Alice &lt;&amp;&gt; Bob ü</C:author>"
    '<C:nested><C:a x="1">one</C:a><C:b/></C:nested>'
    "</D:prop></D:set></D:propertyupdate>"
)
# (user, path, Depth header or None)
TARGETS = [
    ("alice", FOLDER + "/", "1"),
    ("alice", FOLDER + "/", "0"),
    ("alice", FOLDER, None),  # no Depth header: clindav lists one level
    ("alice", FOLDER + "/plain.txt", "0"),
    ("alice", FOLDER + "/plain.txt", "1"),
    ("alice", FOLDER + "/locked.txt", "0"),
    ("alice", FOLDER + "/" + quote(ODD_NAMES[0]), "0"),
    ("alice", FOLDER + "/sub/", "1"),
    ("alice", "/documents/", "0"),
    ("alice", "/documents/", "1"),
    ("alice", f"/clinical/{PATIENT}/", "1"),
    ("ivy", FOLDER + "/", "1"),
    ("ivy", f"/clinical/{PATIENT}/", "1"),
    ("root-admin", FOLDER + "/", "1"),
]


def test_fast_path_answers_as_wsgidav(instance: Instance) -> None:
    on = start_in_process(instance)
    try:
        _populate(on)
        # Both run at once over the same instance: a gateway's start touches the
        # share folders (its writability check), so neither may start in between.
        _switch(instance, on=False)
        off = start_in_process(instance)
        try:
            fast, slow = _collect(on), _collect(off)
            # The kept responses serve the second listing: it must still be the same.
            again = _collect(on)
        finally:
            off.stop()
    finally:
        on.stop()

    assert fast.keys() == slow.keys()
    for case in fast:
        assert fast[case][0] == slow[case][0] == 207, case
        assert _parsed(fast[case][1]) == _parsed(slow[case][1]), case
        assert _timeless(fast[case][1]) == _timeless(slow[case][1]), case
        assert again[case] == fast[case] or _timeless(again[case][1]) == _timeless(fast[case][1]), (
            case
        )

    listing = _parsed(fast[("alice", FOLDER + "/", "1", "allprop")][1])
    hrefs = {unquote(href.rstrip("/").rsplit("/", 1)[-1]) for href in listing}
    # What the folder must show alice, and what it must not.
    for name in ["plain.txt", "locked.txt", "lock-null.txt", "empty.txt", "sub", *ODD_NAMES]:
        assert name in hrefs, name
    assert "ivy-placeholder.txt" not in hrefs
    assert "ivy-placeholder.txt" in str(_parsed(fast[("ivy", FOLDER + "/", "1", "allprop")][1]))
    plain = listing[f"{FOLDER}/plain.txt"]
    assert plain[("{urn:example:clindav}author", "200 OK")] == (
        "{urn:example:clindav}author",
        "Alice <&> Bob ü",
        (),
        (),
    )
    assert "opaquelocktoken" in str(listing[f"{FOLDER}/locked.txt"])
    clinical = _parsed(fast[("alice", f"/clinical/{PATIENT}/", "1", "allprop")][1])
    shown = " ".join(clinical)
    assert "alice-held.jpg" in shown and "ivy-held.jpg" not in shown
    assert "intimate" not in shown  # the policy hides it from alice
    ivy_clinical = " ".join(_parsed(fast[("ivy", f"/clinical/{PATIENT}/", "1", "allprop")][1]))
    assert "ivy-held.jpg" in ivy_clinical and "intimate" in ivy_clinical
    named = _parsed(fast[("alice", FOLDER + "/", "1", "named")][1])[f"{FOLDER}/plain.txt"]
    assert ("{urn:example:unknown}thing", "404 Not Found") in named
    assert ("{DAV:}nonexistent", "404 Not Found") in named
    assert ("nons", "404 Not Found") in named
    assert ("{DAV:}quota-used-bytes", "200 OK") in named


def test_fast_path_serves_and_falls_back(instance: Instance, monkeypatch: Any) -> None:
    """In-process, through the whole stack: which requests the fast path answers itself."""
    from gateway.app import build_app, build_services
    from gateway.dav import propfind
    from gateway.settings import load_settings

    served: list[bool] = []
    answer = propfind.answer

    def spy(*args: Any) -> Any:
        body = answer(*args)
        served.append(body is not None)
        return body

    monkeypatch.setattr(propfind, "answer", spy)
    app = build_app(build_services(load_settings(instance.config)))

    def call(method: str, path: str, body: bytes = b"", **headers: str) -> tuple[str, bytes]:
        status: list[str] = []
        environ = _environ(method, path, body, headers)
        out = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
        return status[0], out

    assert call("MKCOL", "/documents/f")[0].startswith("201")
    assert call("PUT", "/documents/f/x.txt", b"x")[0].startswith("201")
    for depth, body in [("1", b""), ("0", ALLPROP.encode()), ("1", NAMED.encode())]:
        status, out = call("PROPFIND", "/documents/f/", body, HTTP_DEPTH=depth)
        assert status.startswith("207")
        assert (b"/documents/f/x.txt" in out) == (depth == "1")
        assert served.pop() is True
    # WsgiDAV's: conditional requests, bodies it refuses, a missing resource.
    fallbacks = [
        ("/documents/f/x.txt", b"", {"HTTP_IF_MATCH": '"not-its-etag"'}, "412"),
        ("/documents/f/", b"<not xml", {}, "400"),
        (
            "/documents/f/",
            b'<D:propfind xmlns:D="DAV:"><D:allprop/><D:prop/></D:propfind>',
            {},
            "400",
        ),
        ("/documents/missing/", b"", {}, "404"),
    ]
    for path, body, headers, expected in fallbacks:
        status, _out = call("PROPFIND", path, body, HTTP_DEPTH="1", **headers)
        assert status.startswith(expected), (path, body, status)
        assert served.pop() is False


def _environ(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    import base64

    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "HTTP_AUTHORIZATION": f"Basic {token}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        **headers,
    }


def _switch(instance: Instance, *, on: bool) -> None:
    data = instance.settings()
    data["server"]["propfind_fast_path"] = on
    instance.write_settings(data)


def _populate(gw: Gateway) -> None:
    alice, ivy = gw.session("alice"), gw.session("ivy")
    url = gw.url + FOLDER
    for folder in ("", "/sub", "/sub & more ü"):
        assert alice.request("MKCOL", url + quote(folder)).status_code == 201
    files = ["plain.txt", "plain2.txt", "locked.txt", "sub/inner.txt", *ODD_NAMES]
    for name in files:
        put = alice.put(f"{url}/{quote(name)}", data=f"content of {name}".encode())
        assert put.status_code == 201, name
    assert alice.put(f"{url}/photo.jpg", data=small_jpeg()).status_code == 201
    assert alice.put(f"{url}/empty.txt", data=b"").status_code == 201  # alice's placeholder
    assert ivy.put(f"{url}/ivy-placeholder.txt", data=b"").status_code == 201  # private to ivy
    for target in ("/plain.txt", "/", "/sub", "/" + quote(ODD_NAMES[0])):
        patch = alice.request("PROPPATCH", url + target, data=PROPPATCH.encode())
        assert patch.status_code == 207, target
    for session, target, depth in [
        (alice, "/locked.txt", "0"),
        (ivy, "/plain2.txt", "0"),
        (alice, "/sub", "0"),
        (alice, "/lock-null.txt", "0"),  # a LOCK on an unmapped URL makes a placeholder
    ]:
        lock = session.request(
            "LOCK", url + target, data=LOCK_BODY, headers={"Timeout": "Second-3600", "Depth": depth}
        )
        assert lock.status_code in (200, 201), target
    clinical = f"{gw.url}/clinical/{PATIENT}"
    assert alice.request("MKCOL", clinical).status_code == 201
    assert ivy.request("MKCOL", f"{clinical}/intimate").status_code == 201
    assert alice.put(f"{clinical}/alice-held.jpg", data=small_jpeg()).status_code == 201
    assert alice.put(f"{clinical}/rash & burn ü.jpg", data=small_jpeg()).status_code == 201
    assert ivy.put(f"{clinical}/ivy-held.jpg", data=small_jpeg()).status_code == 201


def _collect(gw: Gateway) -> dict[tuple[str, str, str | None, str], tuple[int, bytes]]:
    sessions = {user: gw.session(user) for user in ("alice", "ivy", "root-admin")}
    found = {}
    for user, path, depth in TARGETS:
        for kind, body in BODIES.items():
            headers = {"Content-Type": "application/xml"} if body else {}
            if depth is not None:
                headers["Depth"] = depth
            r = sessions[user].request(
                "PROPFIND", gw.url + path, data=body.encode() if body else None, headers=headers
            )
            found[(user, path, depth, kind)] = (r.status_code, r.content)
    return found


def _timeless(body: bytes) -> bytes:
    return re.sub(rb"Second-\d+", b"Second-N", body)


Node = tuple[str, str, tuple[tuple[str, str], ...], tuple[Any, ...]]


def _node(element: Any) -> Node:
    """An element as (tag, text, attributes, children), whitespace-insensitive."""
    text = (element.text or "").strip()
    if element.tag == "{DAV:}timeout":
        text = _timeless(text.encode()).decode()
    return (
        element.tag,
        text,
        tuple(sorted(element.attrib.items())),
        tuple(_node(child) for child in _children(element)),
    )


def _children(element: Any) -> Iterator[Any]:
    return (child for child in element if isinstance(child.tag, str))


def _parsed(body: bytes) -> dict[str, dict[tuple[str, str], Node]]:
    """href -> (property, status) -> the property element, for a 207 body."""
    root = etree.fromstring(body)
    assert root.tag == "{DAV:}multistatus"
    responses: dict[str, dict[tuple[str, str], Node]] = {}
    for response in root.findall("{DAV:}response"):
        href = response.findtext("{DAV:}href")
        assert href is not None and href not in responses
        props = responses[href] = {}
        for propstat in response.findall("{DAV:}propstat"):
            status = (propstat.findtext("{DAV:}status") or "").removeprefix("HTTP/1.1 ")
            for prop in _children(propstat.find("{DAV:}prop")):
                key = (prop.tag, status)
                assert key not in props or props[key] == _node(prop), key
                props[key] = _node(prop)
    return responses


@pytest.fixture(autouse=True)
def _fast_path_on(instance: Instance) -> None:
    _switch(instance, on=True)
