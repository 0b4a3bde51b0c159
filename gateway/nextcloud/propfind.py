"""PROPFIND for the Nextcloud apps: the WebDAV listing with what the apps require.

A row of the WebDAV handler table (gateway/dav/dispatch.py) for requests that
came through the Nextcloud door, after the policy gate allowed the read.  The
members are the provider's own (the same visibility filter as every WebDAV
listing: policy, other users' held images and placeholders); each is
answered with every property the apps ask for (../shared/NEXTCLOUD.md §4.2):
``getetag`` (folders: gateway/nextcloud/tree.py), ``oc:id``/``oc:fileid``
(gateway/records/fileids.py), ``oc:permissions``, sizes and times.  The
body is ``application/xml; charset=utf-8`` (a bare ``text/xml`` aborts the
desktop client) and every ``href`` starts with the path the app asked for.
``oc:checksums`` is never given: the stored bytes may differ from what was
sent (scrubbed), and the apps verify downloads against it.

A HEAD of a folder (Android's existence check before an upload) is answered
here too: 200 with no body, where WebDAV refuses a GET of a folder.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from gateway.auth.base import Principal
from gateway.dav.provider import Folder, ShareProvider, StoredFile, file_etag
from gateway.dav.root import PRINCIPAL
from gateway.errors import BadRequest, NotFound
from gateway.nextcloud.paths import INBOX_ROOT, PREFIX, shown_path
from gateway.nextcloud.tree import combined_etag, permissions, tree_of
from gateway.records.fileids import FileIds, oc_id
from gateway.services import Services

StartResponse = Callable[..., Any]
_HEAD = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" '
    'xmlns:nc="http://nextcloud.org/ns">'
)
_END = "</d:multistatus>"


def applies(environ: dict[str, Any]) -> bool:
    return PREFIX in environ and environ.get("REQUEST_METHOD") == "PROPFIND"


def is_folder_head(environ: dict[str, Any]) -> bool:
    if PREFIX not in environ or environ.get("REQUEST_METHOD") != "HEAD":
        return False
    provider = environ["wsgidav.provider"]
    if not isinstance(provider, ShareProvider):
        return provider is not None  # the virtual root
    return isinstance(provider.get_resource_inst(environ["PATH_INFO"] or "/", environ), Folder)


def folder_head(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


@dataclass(frozen=True)
class Entry:
    """One ``<d:response>``: a path under the request's prefix and its properties."""

    path: str  # WebDAV path, e.g. /clinical/9434765919/a.jpg
    folder: bool
    etag: str
    size: int
    modified: float
    permissions: str
    content_type: str = ""


def answer(
    environ: dict[str, Any], start_response: StartResponse, services: Services
) -> Iterable[bytes]:
    depth = environ.get("HTTP_DEPTH", "1")
    if depth not in ("0", "1"):
        raise BadRequest(f"PROPFIND Depth {depth!r} through the Nextcloud door")
    principal: Principal = environ[PRINCIPAL]
    provider = environ["wsgidav.provider"]
    if isinstance(provider, ShareProvider):
        entries = _share_entries(provider, environ, principal, services, depth == "1")
    else:
        entries = _root_entries(environ, principal, services, depth == "1")
    numbers = _numbers(services, entries)
    prefix = environ[PREFIX]
    parts = [_HEAD]
    for index, entry in enumerate(entries):
        href = prefix + shown_path(environ, entry.path)
        parts.append(_response(href, entry, numbers.get(entry.path, 0), first=index == 0))
    parts.append(_END)
    body = "".join(parts).encode("utf-8")
    start_response(
        "207 Multi-Status",
        [("Content-Type", "application/xml; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _share_entries(
    provider: ShareProvider,
    environ: dict[str, Any],
    principal: Principal,
    services: Services,
    members: bool,
) -> list[Entry]:
    path = environ["PATH_INFO"] or "/"
    resource = provider.get_resource_inst(path, environ)
    if resource is None:
        raise NotFound(f"{provider.share.name}:{path}")
    found = [resource]
    if members and isinstance(resource, Folder):
        found += resource.get_member_list()
    share = provider.share
    return [_entry(services, principal, share.name, share.url, r) for r in found]


def _root_entries(
    environ: dict[str, Any], principal: Principal, services: Services, members: bool
) -> list[Entry]:
    providers = environ["wsgidav.app"].provider_map
    shares = services.policy.readable_shares(principal, sorted(services.shares))
    inbox = environ.get(INBOX_ROOT)
    roots = []
    for name in shares:
        url = services.shares[name].url
        if inbox is not None and inbox.startswith(url + "/"):
            resource = _inbox_folder(providers[url], inbox[len(url) :], environ)
        else:
            resource = providers[url].get_resource_inst("/", environ)
        if resource is not None:
            roots.append(_entry(services, principal, name, url, resource))
    newest = max((e.modified for e in roots), default=0.0)
    root = Entry("/", True, combined_etag([e.etag for e in roots]), 0, newest, "G")
    return [root, *roots] if members else [root]


def _inbox_folder(provider: ShareProvider, folder: str, environ: dict[str, Any]) -> Any:
    """The user's folder in the inbox share, shown as the camera inbox."""
    return provider.get_resource_inst(folder, environ)


def _entry(services: Services, principal: Principal, share: str, url: str, resource: Any) -> Entry:
    folder = isinstance(resource, Folder)
    path = resource.path
    letters = permissions(services.policy, principal, share, path, folder=folder)
    full = url + ("" if path == "/" else path)
    if folder:
        tree = tree_of(resource.target)
        return Entry(full, True, tree.etag, tree.size, resource.st.st_mtime, letters)
    assert isinstance(resource, StoredFile) and resource.st is not None
    return Entry(
        full,
        False,
        file_etag(resource.st),
        resource.get_content_length(),
        resource.st.st_mtime,
        letters,
        resource.get_content_type(),
    )


def _numbers(services: Services, entries: list[Entry]) -> dict[str, int]:
    """WebDAV path -> file number, per share in one query each."""
    ids = FileIds(services.sessions)
    by_share: dict[str, list[str]] = {}
    for entry in entries:
        first, _, below = entry.path.lstrip("/").partition("/")
        if first:
            by_share.setdefault(first, []).append("/" + below)
    found: dict[str, int] = {}
    for name, share in services.shares.items():
        paths = by_share.get(share.url.strip("/"))
        if paths:
            numbers = ids.numbers(name, paths)
            found.update({share.url + ("" if p == "/" else p): n for p, n in numbers.items()})
    return found


def _http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def _response(path: str, entry: Entry, number: int, *, first: bool) -> str:
    href = quote(path.rstrip("/") + ("/" if entry.folder else ""))
    props = [
        "<d:resourcetype><d:collection/></d:resourcetype>" if entry.folder else "<d:resourcetype/>",
        f"<d:getlastmodified>{_http_date(entry.modified)}</d:getlastmodified>",
        f"<d:getcontentlength>{0 if entry.folder else entry.size}</d:getcontentlength>",
        f'<d:getetag>"{entry.etag}"</d:getetag>',
        f"<oc:size>{entry.size}</oc:size>",
        f"<oc:permissions>{entry.permissions}</oc:permissions>",
        "<oc:share-types/>",
        "<nc:has-preview>false</nc:has-preview>",
    ]
    if number:
        props += [f"<oc:id>{oc_id(number)}</oc:id>", f"<oc:fileid>{number}</oc:fileid>"]
    else:  # the virtual root: a fixed number of its own
        props += [f"<oc:id>{oc_id(0)}</oc:id>", "<oc:fileid>0</oc:fileid>"]
    if entry.content_type:
        props.append(f"<d:getcontenttype>{escape(entry.content_type)}</d:getcontenttype>")
    if first:
        props.append("<oc:data-fingerprint></oc:data-fingerprint>")
    return (
        f"<d:response><d:href>{escape(href)}</d:href><d:propstat><d:prop>"
        + "".join(props)
        + "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
    )
