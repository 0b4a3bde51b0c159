"""Where a Nextcloud app's file request lands: the WebDAV tree, under the apps' prefixes.

The apps address files as ``/remote.php/dav/files/<uid>/<path>`` (and the
legacy ``/remote.php/webdav/<path>``).  :func:`rewrite` turns such a request
into the WebDAV request of ``/<path>`` (the user's virtual root lists the
shares they may read), its ``Destination`` too, so the same middleware,
policy gate, provider, pipeline and audit answer it: there is no second
stack.  What the apps need beyond WebDAV (file numbers, permissions, ``OC-*``
headers) is added around it (gateway/nextcloud/propfind.py, replies.py).

The ``<uid>`` must be the signed-in user's (:func:`check_dav_user`, called by
the WebDAV middleware right after authentication): 403 ``other-users-files``.
The legacy root names no user: it is the signed-in user's own tree, the
same as ``files/<uid>``.  WsgiDAV picks the share from the path before
anyone is signed in, so :func:`rewrite` maps it with the name the request
signs in with; when the authenticator's uid is spelled otherwise (a
directory matches "Alice" to ``alice``), :func:`check_dav_user` maps it
again for that uid (the camera inbox and the Destination depend on it).

With ``nextcloud.inbox_share`` set, the apps also see a folder ``Camera
inbox``: it is ``/<inbox share>/<uid>/``, the user's own folder there (the
share's ``hold`` stage keeps every upload held until it is filed).  The
inbox share itself is not listed at the top.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from wsgidav.util import normalize_path

from gateway.auth.base import Principal
from gateway.errors import Forbidden
from gateway.services import Services

# The environ keys of a request that came through the Nextcloud door.
PREFIX = (
    "clindav.nextcloud.prefix"  # the apps' prefix of this request, e.g. /remote.php/dav/files/alice
)
DAV_USER = "clindav.nextcloud.user"  # the <uid> it names (the legacy root: the signed-in uid)
LEGACY = "clindav.nextcloud.legacy"  # a legacy root request, as it came (an AppsRequest)
TARGET = "clindav.nextcloud.target"  # the WebDAV path it was rewritten to
DESTINATION = "clindav.nextcloud.destination"  # the rewritten Destination's path, if any
INBOX_ROOT = "clindav.nextcloud.inbox"  # the WebDAV path of this user's camera inbox
INBOX = "Camera inbox"
MAKE_INBOX = "clindav.nextcloud.make_inbox"  # makes a uid's inbox folder, once signed in

_FILES = re.compile(r"^(?P<prefix>/remote\.php/dav/files/(?P<uid>[^/]+))(?P<rest>/.*)?$")
_LEGACY = re.compile(r"^(?P<prefix>/remote\.php/webdav)(?P<rest>/.*)?$")


class OtherUsersFiles(Forbidden):
    code = "other-users-files"
    message = "These are another user's files."


def _text(wsgi: str) -> str:
    """A WSGI string (latin-1 decoded bytes; the guard checked they are UTF-8) as text."""
    return wsgi.encode("latin-1").decode("utf-8")


def _wsgi(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def _split(path: str) -> tuple[str, str | None, str] | None:
    """(prefix, uid or None, WebDAV path) of an apps' file path (text), else None."""
    found = _FILES.match(path) or _LEGACY.match(path)
    if found is None:
        return None
    uid = found.groupdict().get("uid")
    rest = "/" + (found["rest"] or "/").lstrip("/")  # the desktop sends .../alice//
    return found["prefix"], uid, rest


def is_file_path(wsgi_path: str) -> bool:
    return _split(_text(wsgi_path)) is not None


def inbox_root(inbox_url: str | None, uid: str | None) -> str | None:
    return f"{inbox_url}/{uid}" if inbox_url and uid else None


def webdav_path(rest: str, inbox: str | None) -> str:
    """The WebDAV path of an apps' path below the user's root (the inbox mapped)."""
    top = "/" + INBOX
    if inbox and (rest == top or rest.startswith(top + "/")):
        return inbox + rest[len(top) :]
    return rest


def shown_path(environ: dict[str, Any], path: str) -> str:
    """The apps' path of a WebDAV path (the inbox mapped back)."""
    inbox = environ.get(INBOX_ROOT)
    if inbox and (path == inbox or path.startswith(inbox + "/")):
        return "/" + INBOX + path[len(inbox) :]
    return path


@dataclass(frozen=True)
class AppsRequest:
    """What an apps' file request asked for, before it was mapped to WebDAV."""

    rest: str  # its path below the user's root
    destination: str | None  # its Destination header
    inbox_url: str | None  # the inbox share's URL
    script_name: str  # SCRIPT_NAME, before WsgiDAV appends the share to it


def rewrite(environ: dict[str, Any], inbox_url: str | None, login: str | None) -> None:
    """Make an apps' file request the WebDAV request it stands for (see the module doc).

    ``login``: the user name the request signs in with, the legacy root's user
    until :func:`check_dav_user` knows the signed-in uid.
    """
    split = _split(_text(environ["PATH_INFO"]))
    assert split is not None  # is_file_path said so
    prefix, named, rest = split
    request = AppsRequest(
        rest, environ.get("HTTP_DESTINATION"), inbox_url, environ.get("SCRIPT_NAME", "")
    )
    if named is None:
        environ[LEGACY] = request
    environ[PREFIX] = prefix
    _map(environ, request, named if named is not None else login)
    environ["PATH_INFO"] = _wsgi(environ[TARGET])


def _map(environ: dict[str, Any], request: AppsRequest, uid: str | None) -> None:
    """Set the request's target (and Destination) for the files of ``uid``."""
    inbox = inbox_root(request.inbox_url, uid)
    environ[DAV_USER], environ[INBOX_ROOT] = uid, inbox
    environ[TARGET] = webdav_path(request.rest, inbox)
    environ.pop(DESTINATION, None)
    if request.destination:
        environ["HTTP_DESTINATION"] = _rewrite_destination(environ, request.destination)


def _remap_legacy(environ: dict[str, Any], request: AppsRequest, uid: str) -> None:
    """The legacy root's request mapped again for the signed-in ``uid``; WsgiDAV's share
    and SCRIPT_NAME/PATH_INFO split (made from the path before sign-in) made again too."""
    _map(environ, request, uid)
    target = normalize_path(environ[TARGET])
    share, provider = environ["wsgidav.app"].resolve_provider(target)
    environ["wsgidav.provider"] = provider
    below_root = share not in (None, "/")
    environ["SCRIPT_NAME"] = request.script_name + (share if below_root else "")
    environ["PATH_INFO"] = target[len(share) :] if below_root else target


def _rewrite_destination(environ: dict[str, Any], destination: str) -> str:
    """The Destination (an absolute URL or path) with the apps' prefix taken off.

    One naming another user's files keeps its prefix and so names no share: the
    gate refuses it as any Destination outside the shares.
    """
    parts = urlsplit(destination)
    split = _split(unquote(parts.path))
    if split is None or (split[1] is not None and split[1] != environ.get(DAV_USER)):
        return destination
    path = webdav_path(split[2], environ.get(INBOX_ROOT))
    environ[DESTINATION] = path
    return urlunsplit(parts._replace(path=quote(path)))


def check_dav_user(environ: dict[str, Any], principal: Principal) -> None:
    """The ``<uid>`` of an apps' path is the signed-in user's, or OtherUsersFiles; the
    legacy root is the signed-in user's whatever spelling they signed in with."""
    legacy: AppsRequest | None = environ.get(LEGACY)
    if legacy is not None and environ.get(DAV_USER) != principal.uid:
        _remap_legacy(environ, legacy, principal.uid)
    uid = environ.get(DAV_USER)
    if uid is not None and uid != principal.uid:
        raise OtherUsersFiles(f"{principal.uid} asked for the files of {uid!r}")
    make_inbox: Callable[[str], None] | None = environ.get(MAKE_INBOX)
    if make_inbox is not None:
        make_inbox(principal.uid)


def locate(services: Services, path: str) -> tuple[str, str] | None:
    """(share, path in it) of a WebDAV path; None for the root and unknown shares."""
    first, _, below = path.lstrip("/").partition("/")
    for name, share in services.shares.items():
        if first and share.url.strip("/") == first:
            return name, "/" + below
    return None
