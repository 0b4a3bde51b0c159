"""PROPFIND Depth 0 and 1 inside a share, without WsgiDAV's per-property machinery.

WsgiDAV answers a PROPFIND one property at a time: every member is looked up
again by name, every property is a getter call and an lxml element.  For a
folder of 2,000 files that is nearly all of the request (issue 9).  This
module gives the same 207 body, byte for byte, from:

* one ``scandir`` of the folder through :meth:`ShareProvider.visible_entries`,
  the filter WsgiDAV's listing uses too (policy, private objects, names that
  are not ours);
* one read of the folder's dead properties and one of its locks;
* string templates for each member's ``<response>``, kept between requests
  per folder and keyed by the member's ``lstat`` (a changed file has a new
  size, mtime, ctime or inode, and is rendered again).

Members that have dead properties or a lock are rendered by WsgiDAV's own code
(so they are exact by construction, and never kept).  A request this module
cannot answer identically (conditional headers, unusual bodies, odd names or
entry types, a missing resource) returns ``None`` and goes to WsgiDAV.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from lxml import etree
from wsgidav import util, xml_tools
from wsgidav.lock_man.lock_manager import normalize_lock_root

from gateway.dav.held import held_in
from gateway.dav.props import DatabasePropertyManager
from gateway.dav.provider import Folder, ShareProvider, StoredFile
from gateway.settings import Settings

StartResponse = Callable[..., Any]
Resource = Folder | StoredFile

# WsgiDAV evaluates these against the resource first: left to it.
_CONDITIONAL = (
    "HTTP_IF",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
)
# What lxml cannot put in a document, or would write as a character reference.
_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_HEAD = "<?xml version='1.0' encoding='UTF-8'?>\n"
_MULTISTATUS = '<D:multistatus xmlns:D="DAV:">'
_END = "</D:multistatus>"
_LOCKDISCOVERY = "{DAV:}lockdiscovery"
_SUPPORTEDLOCK = "{DAV:}supportedlock"
_QUOTA = ("{DAV:}quota-used-bytes", "{DAV:}quota-available-bytes")
_SUPPORTED = (
    "<D:supportedlock>"
    + "".join(
        f"<D:lockentry><D:lockscope><D:{scope}/></D:lockscope>"
        "<D:locktype><D:write/></D:locktype></D:lockentry>"
        for scope in ("exclusive", "shared")
    )
    + "</D:supportedlock>"
)
_OK, _NOT_FOUND = "200 OK", "404 Not Found"


def serves(environ: dict[str, Any], settings: Settings) -> bool:
    """A PROPFIND this module may answer (the rest of the checks are in :func:`answer`)."""
    return environ.get("REQUEST_METHOD") == "PROPFIND" and settings.server.propfind_fast_path


@dataclass(frozen=True)
class _Request:
    """The body's question: ``allprop``, ``name`` (propname) or ``named`` props."""

    mode: str
    names: tuple[str, ...] = ()
    # named: the <response> start tag (WsgiDAV declares each namespace there)
    # and each name's tag, both as lxml writes them.
    start: str = "<D:response>"
    tags: tuple[str, ...] = ()


def answer(
    environ: dict[str, Any], start_response: StartResponse, provider: ShareProvider
) -> list[bytes] | None:
    """The 207 for this PROPFIND (``start_response`` called), or None: WsgiDAV answers."""
    if environ.get("HTTP_DEPTH") not in ("0", "1") or any(h in environ for h in _CONDITIONAL):
        return None
    props = provider.prop_manager
    if props is not None and not isinstance(props, DatabasePropertyManager):
        return None
    # In WsgiDAV's order: the resource (a 404 leaves the body unread), then the body.
    res = provider.resource(environ["PATH_INFO"], environ, check_visible=True)
    if res is None:
        return None
    request = _read_request(environ)
    if request is None:
        return None
    members = []
    if environ["HTTP_DEPTH"] == "1" and isinstance(res, Folder):
        members = provider.visible_entries(res.path, res.target, environ)
    names = [res.path, *(name for name, _entry in members)]
    if _UNSAFE.search("/".join(names)) or len(set(names)) != len(names):
        return None
    self_marked, marked_names = _marked(res, environ, listing=bool(members))
    parts = [(_HEAD + _MULTISTATUS).encode()]
    parts.append(_wsgidav(res, request) if self_marked else _render(res, request))
    if members:
        rendered = _members(res, members, marked_names, request)
        if rendered is None:
            return None
        parts += rendered
    parts.append(_END.encode())
    data = b"".join(parts)  # UTF-8 pieces: joined without one large str
    start_response(
        "207 Multi-Status",
        [
            ("Content-Type", "application/xml; charset=utf-8"),
            ("Date", util.get_rfc1123_time()),
            ("Content-Length", str(len(data))),
        ],
    )
    return [data]


def _read_request(environ: dict[str, Any]) -> _Request | None:
    """The request body as WsgiDAV's do_PROPFIND reads it; None for anything unusual."""
    length = environ.get("CONTENT_LENGTH", "").strip()
    if length == "" or length == "0":
        return _Request("allprop")  # an empty body asks for allprop
    if not length.isdigit():
        return None
    body = environ["wsgi.input"].read(int(length))
    # WsgiDAV reads it again if it has to answer after all.
    environ["wsgi.input"] = io.BytesIO(body)
    environ["wsgidav.all_input_read"] = 1
    try:
        root = etree.XML(body, parser=etree.XMLParser(resolve_entities=False))
    except Exception:  # WsgiDAV's 400, with its own wording
        return None
    if root.tag != "{DAV:}propfind":
        return None
    mode, names = "", []
    for node in root:
        if node.tag in ("{DAV:}allprop", "{DAV:}name") and not mode:
            mode = "allprop" if node.tag == "{DAV:}allprop" else "name"
        elif node.tag == "{DAV:}prop" and mode in ("", "named"):
            mode = "named"
            names += [child.tag for child in node]
        elif node.tag in ("{DAV:}allprop", "{DAV:}name", "{DAV:}prop"):
            return None  # modes mixed: WsgiDAV's 400
    if mode != "named":
        return _Request(mode) if mode else None
    if not names or not all(isinstance(name, str) for name in names):
        return None  # an empty <prop/>, or comments among the names
    return _named(tuple(names))


def _named(names: tuple[str, ...]) -> _Request | None:
    """Start tag and element tags of a named request, written by lxml as WsgiDAV would."""
    nsmap: dict[str, str] = {}
    for name in names:
        ns = util.split_namespace(name)[0]
        if ns not in ("DAV:", "") and ns not in nsmap.values():
            nsmap[f"NS{len(nsmap) + 1}"] = ns
    try:
        multistatus = xml_tools.make_multistatus_el()
        response = xml_tools.make_sub_element(multistatus, "{DAV:}response", nsmap=nsmap)
        for name in names:
            etree.SubElement(response, name)
        text = etree.tostring(multistatus, encoding="unicode")
    except ValueError:  # e.g. the xml: namespace, which may not be declared
        return None
    inner = text[len(_MULTISTATUS) : -len("</D:response>" + _END)]
    start, _, elements = inner.partition(">")
    tags = tuple(element[1:] for element in elements.split("/>")[:-1])
    if len(tags) != len(names):
        return None
    return _Request("named", names, start + ">", tags)


def _marked(res: Resource, environ: dict[str, Any], *, listing: bool) -> tuple[bool, set[str]]:
    """Whether the resource, and which members, have dead properties, locks or are held.

    Those are rendered by WsgiDAV (a held file has the live property
    ``clindav:held-until``, gateway/dav/held.py).  Anything naming a member in
    an odd way is counted too: marking more than needed only costs time.
    """
    provider = res.provider
    own = res.get_ref_url()
    marked_self, names = _held(res, environ, listing=listing)
    # The read WsgiDAV's lookups then find in the request's cache (gateway/dav/props.py).
    base = own if res.is_collection else util.get_uri_parent(own) or "/"
    props = provider.prop_manager
    if isinstance(props, DatabasePropertyManager):
        stored = props.read_below(base, environ, url=own)
        marked_self = marked_self or own in stored
        if listing:
            names |= _member_names(own, stored)
    locks = provider.lock_manager
    if locks is not None:
        root = normalize_lock_root(own)
        found = locks.storage.get_lock_list(
            root, include_root=True, include_children=listing, token_only=False
        )
        roots = {lock["root"] for lock in found}
        marked_self = marked_self or root in roots
        names |= _member_names(root + "/", roots)
    return marked_self, names


def _held(res: Resource, environ: dict[str, Any], *, listing: bool) -> tuple[bool, set[str]]:
    """Whether the resource is a held file, and (a folder's listing) its held members."""
    services, share = res.provider.services, res.provider.share.name
    if listing:
        return False, set(held_in(services, share, res.path, environ))
    if res.is_collection:
        return False, set()  # folders are never held
    folder, _, name = res.path.rpartition("/")
    return name in held_in(services, share, folder or "/", environ), set()


def _member_names(folder: str, urls: Iterable[str]) -> set[str]:
    """Member names of ``folder`` (a URL ending in /) among quoted ``urls``."""
    names = set()
    for url in urls:
        rest = url[len(folder) :].rstrip("/") if url.startswith(folder) else ""
        if rest and "/" not in rest:
            names.add(unquote(rest))
    return names


def _members(
    folder: Folder, members: list[tuple[str, os.DirEntry[str]]], marked: set[str], request: _Request
) -> list[bytes] | None:
    """Each member's <response>: kept ones where the lstat is unchanged, else rendered."""
    provider = folder.provider
    base = folder.path.rstrip("/") + "/"
    key = (provider.share.name, folder.path, request)
    kept = _KEPT.folder(key)
    fresh: dict[str, tuple[tuple[int, ...], bytes]] = {}
    out = []
    try:
        # lstat relative to the folder: the kernel walks one name, not the whole path.
        fd = os.open(folder.target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        stats = [os.stat(entry.name, dir_fd=fd, follow_symlinks=False) for _n, entry in members]
    except FileNotFoundError:
        return None  # gone since the scandir: WsgiDAV's listing decides
    finally:
        os.close(fd)
    for (name, entry), st in zip(members, stats, strict=True):
        sig = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if name in marked:
            res = provider.from_stat(base + name, folder.environ, folder.target / entry.name, st)
            if res is None:
                return None
            out.append(_wsgidav(res, request))
            continue
        hit = kept.get(name)
        if hit is not None and hit[0] == sig:
            fragment = hit[1]
        else:
            res = provider.from_stat(base + name, folder.environ, folder.target / entry.name, st)
            if res is None:
                return None  # neither file nor folder
            fragment = _render(res, request)
        fresh[name] = (sig, fragment)
        out.append(fragment)
    _KEPT.store(key, fresh)
    return out


def _render(res: Resource, request: _Request) -> bytes:
    """One <response> from templates: what WsgiDAV's get_properties and
    add_property_response give for a resource without dead properties or locks."""
    live = _live(res)
    locking = res.provider.lock_manager is not None
    groups: dict[str, list[str]] = {}  # one <propstat> per status, in order of appearance
    if request.mode == "named":
        for name, tag in zip(request.names, request.tags, strict=True):
            status, xml = _named_value(res, name, tag, live, locking)
            groups.setdefault(status, []).append(xml)
    else:  # allprop, or its names only (propname): all there, all 200
        if locking and not res.prevent_locking():
            live[_LOCKDISCOVERY], live[_SUPPORTEDLOCK] = "<D:lockdiscovery/>", _SUPPORTED
        xmls = live.values() if request.mode == "allprop" else (f"<D:{n[6:]}/>" for n in live)
        groups[_OK] = list(xmls)
    propstats = "".join(
        f"<D:propstat><D:prop>{''.join(xmls)}</D:prop><D:status>HTTP/1.1 {status}</D:status>"
        "</D:propstat>"
        for status, xmls in groups.items()
    )
    href = escape(res.get_href())
    return f"{request.start}<D:href>{href}</D:href>{propstats}</D:response>".encode()


def _live(res: Resource) -> dict[str, str]:
    """Clark name -> element of each live property the resource has, in WsgiDAV's order."""
    live = {
        "{DAV:}resourcetype": "<D:resourcetype><D:collection/></D:resourcetype>"
        if res.is_collection
        else "<D:resourcetype></D:resourcetype>"
    }
    created = res.get_creation_date()
    if created is not None:
        live["{DAV:}creationdate"] = _text("creationdate", util.get_rfc3339_time(created))
    length = res.get_content_length()
    if length is not None:
        live["{DAV:}getcontentlength"] = _text("getcontentlength", str(length))
    content_type = res.get_content_type()
    if content_type is not None:
        live["{DAV:}getcontenttype"] = _text("getcontenttype", content_type)
    for name, quota in zip(_QUOTA, (res.get_used_bytes(), res.get_available_bytes()), strict=True):
        if quota is not None:
            live[name] = _text(name[6:], str(quota))
    modified = res.get_last_modified()
    if modified is not None:
        live["{DAV:}getlastmodified"] = _text("getlastmodified", util.get_rfc1123_time(modified))
    display = res.get_display_name()
    if display is not None:
        live["{DAV:}displayname"] = _text("displayname", display)
    etag = res.get_etag()
    if etag is not None:
        live["{DAV:}getetag"] = _text("getetag", etag)
    return live


def _named_value(
    res: Resource, name: str, tag: str, live: dict[str, str], locking: bool
) -> tuple[str, str]:
    """(status, element) of one asked-for property, as WsgiDAV's get_property_value."""
    if locking and name == _LOCKDISCOVERY:
        return _OK, "<D:lockdiscovery/>"
    if locking and name == _SUPPORTEDLOCK:
        return _OK, _SUPPORTED
    if name in live:
        return _OK, live[name]
    if name in _QUOTA:
        return _OK, f"<{tag}/>"  # WsgiDAV answers these even without a value
    return _NOT_FOUND, f"<{tag}/>"  # other live names, and dead ones (there are none)


def _text(local: str, value: str) -> str:
    return f"<D:{local}>{escape(value)}</D:{local}>"


def _wsgidav(res: Resource, request: _Request) -> bytes:
    """One <response> built by WsgiDAV itself (dead properties, locks)."""
    if request.mode == "named":
        found = res.get_properties("named", name_list=list(request.names))
    else:
        found = res.get_properties(request.mode)
    multistatus = xml_tools.make_multistatus_el()
    util.add_property_response(multistatus, res.get_href(), found)
    text: str = etree.tostring(multistatus, encoding="unicode")
    return text[len(_MULTISTATUS) : -len(_END)].encode()


class _Kept:
    """Rendered member responses of recently listed folders, bounded by entry count.

    Keyed by share, folder and request; each member by name with its lstat
    signature.  Nothing user-specific is kept: who may see a member is decided
    on every request before a kept response is used.
    """

    def __init__(self, max_entries: int) -> None:
        self._folders: OrderedDict[Any, dict[str, tuple[tuple[int, ...], bytes]]] = OrderedDict()
        self._entries = 0
        self._max = max_entries
        self._lock = threading.Lock()

    def folder(self, key: Any) -> dict[str, tuple[tuple[int, ...], bytes]]:
        with self._lock:
            found = self._folders.get(key)
            if found is not None:
                self._folders.move_to_end(key)
            return found or {}

    def store(self, key: Any, members: dict[str, tuple[tuple[int, ...], bytes]]) -> None:
        if len(members) > self._max:
            return
        with self._lock:
            old = self._folders.pop(key, None)
            self._entries += len(members) - (len(old) if old else 0)
            self._folders[key] = members
            while self._entries > self._max:
                _key, dropped = self._folders.popitem(last=False)
                self._entries -= len(dropped)


# Some 20 MB per process at most: 20,000 responses of under 1 KB (ten folders of 2,000).
_KEPT = _Kept(20_000)
