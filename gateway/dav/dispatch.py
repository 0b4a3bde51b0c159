"""Who answers a WebDAV request that passed the gate: the first handler of
:data:`HANDLERS` that takes it.

A handler is a :class:`Handler` row: a name, a test of whether it applies,
and a function that answers.  The answer calls ``start_response`` (the
:class:`Captured` it is given) before it returns its body, or returns None
to leave the request to the next row.  The middleware then audits the
outcome and only then sends the status line (gateway/dav/middleware.py).
Adding a handler is adding a row, in its place in the order:

1. an EHR's consent manifest (gateway/dav/manifest.py), recorded, never stored;
2. client junk (gateway/dav/junk.py), answered, never stored;
3. COPY/MOVE into another share (gateway/dav/crossshare.py);
4. PROPFIND from a Nextcloud app (gateway/nextcloud/propfind.py), with the
   properties the apps require, and its HEAD of a folder;
5. PROPFIND Depth 0/1 in a share (gateway/dav/propfind.py), where it can
   answer as WsgiDAV would;
6. WsgiDAV, for everything else.  Its error pages can carry exception text,
   so an error status is raised for the middleware to answer; its 207
   bodies lose their free-text descriptions; the success of a method that
   says nothing beyond its status has no body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from wsgidav.dav_error import DAVError

from gateway.dav import propfind
from gateway.dav.crossshare import copy_across
from gateway.dav.junk import PhantomStore, answer_junk, is_junk
from gateway.dav.manifest import handle_manifest, is_manifest
from gateway.dav.outcome import Outcome
from gateway.dav.provider import ERROR
from gateway.errors import ClindavError
from gateway.nextcloud import propfind as nextcloud_propfind
from gateway.services import Services

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# Their success says nothing beyond the status; WsgiDAV's status page for it
# names its product and version, so it is never sent.
_STATUS_ONLY_METHODS = frozenset({"PUT", "MKCOL", "COPY", "MOVE", "DELETE", "UNLOCK"})
_BODY_HEADERS = ("content-type", "content-length")
_DESCRIPTION = re.compile(rb"<(\w+:)?responsedescription>.*?</(\w+:)?responsedescription>", re.S)


class Captured:
    """A handler's status line and headers, held until the middleware sends them."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.status, self.headers = status, headers

    @property
    def code(self) -> int:
        return int(self.status.split(" ", 1)[0])


@dataclass(frozen=True)
class Dispatch:
    """One request that passed the gate, as the handlers see it."""

    environ: dict[str, Any]
    outcome: Outcome
    services: Services
    phantoms: PhantomStore  # client junk "stored" so far (gateway/dav/junk.py)
    wsgidav: WsgiApp  # WsgiDAV's request resolver and provider

    @property
    def share(self) -> str:
        assert self.outcome.share is not None
        return self.outcome.share

    @property
    def path(self) -> str:
        return self.outcome.path or "/"


@dataclass(frozen=True)
class Handler:
    name: str
    applies: Callable[[Dispatch], bool]
    answer: Callable[[Dispatch, Captured], Iterable[bytes] | None]
    code: str | None = None  # its success's audit code; None: "ok"


def _in_share(d: Dispatch) -> bool:
    return d.outcome.share is not None


def _manifest(d: Dispatch, capture: Captured) -> Iterable[bytes]:
    return handle_manifest(d.environ, capture, d.services, d.share, d.path)


def _junk(d: Dispatch, capture: Captured) -> Iterable[bytes]:
    principal = d.outcome.request.principal
    assert principal is not None  # the gate ran
    return answer_junk(d.environ, capture, principal.uid, d.phantoms)


def _into_other_share(d: Dispatch) -> bool:
    return d.outcome.destination is not None and d.outcome.destination[0] != d.outcome.share


def _across(d: Dispatch, capture: Captured) -> Iterable[bytes]:
    assert d.outcome.destination is not None
    return copy_across(d.environ, capture, d.services, (d.share, d.path), d.outcome.destination)


def _fast_propfind(d: Dispatch, capture: Captured) -> Iterable[bytes] | None:
    return propfind.answer(d.environ, capture, d.environ["wsgidav.provider"])


def _wsgidav(d: Dispatch, capture: Captured) -> Iterable[bytes]:
    app_iter = d.wsgidav(d.environ, capture)
    try:
        chunks = iter(app_iter)
        first = next(chunks, b"")  # WsgiDAV starts its response here
        if capture.code >= 400:
            raise _wsgidav_failure(d, capture.code)
        if capture.code == 207:
            first, chunks = _sanitised_multistatus(first, chunks, capture)
        elif d.environ["REQUEST_METHOD"].upper() in _STATUS_ONLY_METHODS:
            first, chunks = b"", iter(())
            capture.headers = [
                *(h for h in capture.headers if h[0].lower() not in _BODY_HEADERS),
                ("Content-Length", "0"),
            ]
    except BaseException:
        _close(app_iter)
        raise
    return _closing(first, chunks, app_iter)


HANDLERS: tuple[Handler, ...] = (
    Handler(
        "consent-manifest",
        lambda d: _in_share(d) and is_manifest(d.outcome.action, d.path),
        _manifest,
        code="consent-manifest",
    ),
    Handler("junk", lambda d: _in_share(d) and is_junk(d.path), _junk, code="junk-not-stored"),
    Handler("cross-share", _into_other_share, _across),
    Handler(
        "nextcloud-propfind",
        lambda d: nextcloud_propfind.applies(d.environ),
        lambda d, capture: nextcloud_propfind.answer(d.environ, capture, d.services),
    ),
    Handler(
        "nextcloud-folder-head",
        lambda d: nextcloud_propfind.is_folder_head(d.environ),
        lambda d, capture: nextcloud_propfind.folder_head(d.environ, capture),
    ),
    Handler(
        "fast-propfind",
        lambda d: _in_share(d) and propfind.serves(d.environ, d.services.settings),
        _fast_propfind,
    ),
    Handler("wsgidav", lambda d: True, _wsgidav),
)


def _wsgidav_failure(d: Dispatch, status: int) -> BaseException:
    """What WsgiDAV's error answer stands for: our own error where a provider method
    recorded one, the change's failure (the database, while WsgiDAV says 500), or
    the bare status."""
    recorded = d.environ.get(ERROR)
    if isinstance(recorded, ClindavError):
        return recorded
    change = d.outcome.change
    if change is not None and change.failure is not None:
        return change.failure
    return DAVError(status)


def _closing(first: bytes, rest: Iterator[bytes], app_iter: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield first
        yield from rest
    finally:
        _close(app_iter)


def _close(app_iter: Iterable[bytes]) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


def _sanitised_multistatus(
    first: bytes, rest: Iterator[bytes], capture: Captured
) -> tuple[bytes, Iterator[bytes]]:
    """A 207 body without WsgiDAV's free-text descriptions (they can name exceptions)."""
    body = first + b"".join(rest)
    if b"responsedescription>" in body:
        body = _DESCRIPTION.sub(b"", body)
        capture.headers = [
            (k, str(len(body)) if k.lower() == "content-length" else v) for k, v in capture.headers
        ]
    return body, iter(())
