"""Client junk: files Explorer, Finder and office suites write that clindav never stores.

``Thumbs.db``, ``desktop.ini``, ``.DS_Store``, AppleDouble ``._*`` files (they
carry thumbnails and metadata), Office owner files ``~$*`` and LibreOffice
``.~lock*`` files.  Refusing them breaks copies (Finder error -36, undefined
behaviour in Explorer mid-copy), so clindav plays along and keeps nothing:

* PUT drains the body and answers 201/204;
* LOCK answers a lock with a fresh token (a refresh, which names its token in
  ``If``, gets that token back), UNLOCK 204, PROPPATCH 207 with every
  property accepted;
* for a few minutes after its PUT, HEAD and PROPFIND of the same path by the
  same user answer as if it existed (Explorer checks with HEAD mid-copy); it
  never appears in a listing and GET answers 404;
* DELETE answers 204, COPY/MOVE of junk answer 201 and do nothing.

A junk name is never the Destination of a COPY or MOVE of anything else
(403 ``junk-destination``): the item would be stored under a name every later
request answers as junk, hidden for ever.

Only a small in-memory record (user, URL, size, expiry) is kept, never bytes.
"""

from __future__ import annotations

import fnmatch
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

from gateway.errors import BadRequest, Forbidden

StartResponse = Callable[..., Any]

_PATTERNS = ("thumbs.db", "desktop.ini", ".ds_store", "._*", "~$*", ".~lock*")
PHANTOM_SECONDS = 300.0
MAX_XML_BODY = 64 * 1024
_BLOCK = 256 * 1024
_SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class JunkDestination(Forbidden):
    code = "junk-destination"
    message = (
        "Files cannot be copied or moved onto a name clients keep for themselves "
        "(Thumbs.db, .DS_Store, ._*, ...); clindav never stores such names."
    )


def is_junk(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in _PATTERNS)


class PhantomStore:
    """Junk files 'written' in the last few minutes, per user; sizes only."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def remember(self, user: str, url: str, size: int) -> bool:
        """Record a junk upload; True when it replaced an earlier one."""
        now = time.monotonic()
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            existed = (user, url) in self._entries
            self._entries[(user, url)] = (now + PHANTOM_SECONDS, size)
        return existed

    def size(self, user: str, url: str) -> int | None:
        with self._lock:
            entry = self._entries.get((user, url))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def forget(self, user: str, url: str) -> None:
        with self._lock:
            self._entries.pop((user, url), None)


def drain(environ: dict[str, Any]) -> int:
    """Read and discard the request body; returns its size."""
    stream = environ["wsgi.input"]
    total = 0
    while chunk := stream.read(_BLOCK):
        total += len(chunk)
    return total


def answer_junk(
    environ: dict[str, Any], start_response: StartResponse, user: str, phantoms: PhantomStore
) -> Iterator[bytes]:
    """Play along with one junk request (calls start_response); returns the body."""
    method = environ["REQUEST_METHOD"].upper()
    url = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    size = phantoms.size(user, url)
    if method == "PUT":
        replaced = phantoms.remember(user, url, drain(environ))
        return _reply(start_response, 204 if replaced else 201)
    if method == "LOCK":
        # A refresh (RFC 4918 9.10.2) has no body and names its lock in If.
        refresh = not drain_limited(environ) and environ.get("wsgidav.ifLockTokenList")
        return _lock_reply(start_response, url, refresh[0] if refresh else None)
    if method == "PROPPATCH":
        return _proppatch_reply(start_response, url, drain_limited(environ))
    if method in ("UNLOCK", "OPTIONS"):
        return _reply(start_response, 204 if method == "UNLOCK" else 200)
    if method in ("DELETE", "MOVE", "COPY"):
        phantoms.forget(user, url)
        return _reply(start_response, 204 if method == "DELETE" else 201)
    if method == "HEAD" and size is not None:
        return _reply(start_response, 200, [("Content-Length", str(size))])
    if method == "PROPFIND" and size is not None:
        drain_limited(environ)
        return _propfind_reply(start_response, url, size)
    return _reply(start_response, 404)


def drain_limited(environ: dict[str, Any]) -> bytes:
    length = environ.get("CONTENT_LENGTH") or ""
    if length and (not length.isdigit() or int(length) > MAX_XML_BODY):
        raise BadRequest("XML body too large for a junk file request")
    return environ["wsgi.input"].read(int(length)) if length else b""


def _reply(
    start_response: StartResponse, status: int, headers: list[tuple[str, str]] | None = None
) -> Iterator[bytes]:
    phrases = {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found"}
    headers = headers or [("Content-Length", "0")]
    start_response(f"{status} {phrases[status]}", headers)
    return iter([b""])


def _xml(
    start_response: StartResponse,
    status: str,
    body: str,
    extra: list[tuple[str, str]] | None = None,
) -> Iterator[bytes]:
    data = ('<?xml version="1.0" encoding="utf-8"?>\n' + body).encode()
    headers = [
        ("Content-Type", "application/xml; charset=utf-8"),
        ("Content-Length", str(len(data))),
    ]
    start_response(status, headers + (extra or []))
    return iter([data])


def _lock_reply(start_response: StartResponse, url: str, refreshed: str | None) -> Iterator[bytes]:
    """A new lock, or for a refresh the lock it names: Finder goes on using the
    token it holds and fails the copy if the answer names another."""
    token = refreshed or f"opaquelocktoken:{uuid.uuid4()}"
    body = (
        '<D:prop xmlns:D="DAV:"><D:lockdiscovery><D:activelock>'
        "<D:locktype><D:write/></D:locktype><D:lockscope><D:exclusive/></D:lockscope>"
        "<D:depth>0</D:depth><D:timeout>Second-3600</D:timeout>"
        f"<D:locktoken><D:href>{token}</D:href></D:locktoken>"
        f"<D:lockroot><D:href>{escape(url)}</D:href></D:lockroot>"
        "</D:activelock></D:lockdiscovery></D:prop>"
    )
    # The Lock-Token header announces a new lock only (RFC 4918 10.5).
    created = [] if refreshed else [("Lock-Token", f"<{token}>")]
    return _xml(start_response, "200 OK", body, created)


def _proppatch_reply(start_response: StartResponse, url: str, body: bytes) -> Iterator[bytes]:
    names = []
    if body:
        try:
            root = etree.fromstring(body, _SAFE_XML)
        except etree.XMLSyntaxError:
            raise BadRequest("PROPPATCH body is not XML") from None
        names = [
            el.tag
            for el in root.iter()
            if el.getparent() is not None and etree.QName(el.getparent()).localname == "prop"
        ]
    props = "".join(_empty_element(tag, i) for i, tag in enumerate(names))
    xml = (
        f'<D:multistatus xmlns:D="DAV:"><D:response><D:href>{escape(url)}</D:href>'
        f"<D:propstat><D:prop>{props}</D:prop><D:status>HTTP/1.1 200 OK</D:status>"
        "</D:propstat></D:response></D:multistatus>"
    )
    return _xml(start_response, "207 Multi-Status", xml)


def _empty_element(tag: str, index: int) -> str:
    qname = etree.QName(tag)
    if qname.namespace:
        return f'<ns{index}:{qname.localname} xmlns:ns{index}="{escape(qname.namespace)}"/>'
    return f"<{qname.localname}/>"


def _propfind_reply(start_response: StartResponse, url: str, size: int) -> Iterator[bytes]:
    xml = (
        f'<D:multistatus xmlns:D="DAV:"><D:response><D:href>{escape(url)}</D:href>'
        f"<D:propstat><D:prop><D:resourcetype/><D:getcontentlength>{size}</D:getcontentlength>"
        "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"
    )
    return _xml(start_response, "207 Multi-Status", xml)
