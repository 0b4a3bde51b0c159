"""Chunked upload v2: ``/remote.php/dav/uploads/<uid>/<transfer>/`` (../shared/NEXTCLOUD.md §5).

``MKCOL`` opens a transfer, ``PUT <transfer>/<n>`` stores chunk ``n``
(encrypted as it arrives, gateway/nextcloud/chunks.py), ``PROPFIND`` lists the
chunks received (how the apps resume), ``DELETE`` cancels, and ``MOVE
<transfer>/.file`` with a ``Destination`` in the user's files finishes it.

The final MOVE becomes the ordinary PUT of the destination, whose body is
the chunks read back in order (:func:`as_put`): the WebDAV middleware, policy
gate (the consent checks of a PUT there), pipeline (scrubbing, a streamed body
above ``limits.max_upload_bytes``), sealing and audit are the ones every
upload goes through, and the answer carries the ``OC-*`` headers of any PUT
from the apps (gateway/nextcloud/replies.py).  The transfer is removed once
that PUT succeeded; after a refusal it stays for the app to retry or cancel.

The ``<uid>`` must be the signed-in user's, as in the files tree.  Starting
and cancelling a transfer, and every refusal, are audited (``UPLOAD``); the
chunks themselves are not events, the stored file is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

from gateway.dav.guard import path_problem
from gateway.errors import BadRequest, ClindavError, InvalidPath, NotFound, PayloadTooLarge
from gateway.nextcloud import paths
from gateway.nextcloud.chunks import ChunkStore
from gateway.nextcloud.paths import OtherUsersFiles

StartResponse = Callable[..., Any]
_UPLOADS = re.compile(
    r"^(?P<prefix>/remote\.php/dav/uploads/(?P<uid>[^/]+))(?:/(?P<transfer>[^/]+))?"
    r"(?:/(?P<chunk>[^/]+))?/?$"
)
_FINAL = ".file"


class MethodNotAllowed(ClindavError):
    status = 405
    code = "upload-method-not-allowed"
    message = "This request is not part of a chunked upload."


class BadUploadDestination(BadRequest):
    code = "bad-upload-destination"
    message = "A chunked upload ends with a MOVE to a place in your own files."


def is_upload_path(wsgi_path: str) -> bool:
    return wsgi_path.startswith("/remote.php/dav/uploads/")


class UploadRequest:
    """The parts of an uploads path, or BadRequest."""

    def __init__(self, environ: dict[str, Any]) -> None:
        text = environ["PATH_INFO"].encode("latin-1").decode("utf-8")
        found = _UPLOADS.match(text)
        if found is None:
            raise NotFound(f"no upload path {text[:120]!r}")
        self.prefix = found["prefix"]
        self.uid: str = found["uid"]
        self.transfer: str | None = found["transfer"]
        self.chunk: str | None = found["chunk"]
        self.method = environ.get("REQUEST_METHOD", "").upper()

    def check_user(self, uid: str) -> None:
        if uid != self.uid:
            raise OtherUsersFiles(f"{uid} used the upload folder of {self.uid!r}")


def answer(
    request: UploadRequest,
    environ: dict[str, Any],
    store: ChunkStore,
    start_response: StartResponse,
    limit: int,
) -> Iterable[bytes]:
    """Every uploads request but the final MOVE (see :func:`as_put`).

    ``limit``: the largest chunk taken (``limits.max_stream_bytes``, the largest
    upload at all): 413 before any byte of a larger one is read.
    """
    method, transfer, chunk = request.method, request.transfer, request.chunk
    if method == "MKCOL" and transfer and not chunk:
        store.sweep()
        if not store.create(request.uid, transfer):
            raise MethodNotAllowed(f"transfer {transfer!r} exists")
        return _empty(start_response, "201 Created")
    if method == "PUT" and transfer and chunk:
        length = _length(environ)
        if length > limit:
            raise PayloadTooLarge(f"chunk of {length} bytes, over {limit}")
        store.write(request.uid, transfer, chunk, environ["wsgi.input"], length)
        return _empty(start_response, "201 Created")
    if method == "DELETE" and transfer and not chunk:
        if not store.remove(request.uid, transfer):
            raise NotFound(f"no transfer {transfer!r}")
        return _empty(start_response, "204 No Content")
    if method == "PROPFIND":
        return _listing(request, environ, store, start_response)
    raise MethodNotAllowed(f"{method} {environ['PATH_INFO'][:120]!r}")


def _length(environ: dict[str, Any]) -> int:
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        raise BadRequest("a chunk sent without Content-Length")
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise BadRequest("a chunk without Content-Length") from None
    if length < 0:
        raise BadRequest("negative Content-Length")
    return length


def _empty(start_response: StartResponse, status: str) -> list[bytes]:
    start_response(status, [("Content-Length", "0")])
    return [b""]


def _listing(
    request: UploadRequest,
    environ: dict[str, Any],
    store: ChunkStore,
    start_response: StartResponse,
) -> list[bytes]:
    """PROPFIND of the uploads root (Depth 0) or of a transfer (its chunks at Depth 1)."""
    if request.chunk:
        raise MethodNotAllowed("PROPFIND of a chunk")
    base = request.prefix + "/"
    rows = [_response(base, folder=True, size=0)]
    if request.transfer:
        if not store.exists(request.uid, request.transfer):
            raise NotFound(f"no transfer {request.transfer!r}")
        base += request.transfer + "/"
        rows = [_response(base, folder=True, size=0)]
        if environ.get("HTTP_DEPTH", "1") == "1":
            for chunk in store.chunks(request.uid, request.transfer):
                rows.append(_response(base + chunk.name, folder=False, size=chunk.size))
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n<d:multistatus xmlns:d="DAV:">'
        + "".join(rows)
        + "</d:multistatus>"
    ).encode()
    start_response(
        "207 Multi-Status",
        [("Content-Type", "application/xml; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _response(href: str, *, folder: bool, size: int) -> str:
    kind = "<d:collection/>" if folder else ""
    return (
        f"<d:response><d:href>{escape(quote(href))}</d:href><d:propstat><d:prop>"
        f"<d:resourcetype>{kind}</d:resourcetype><d:getcontentlength>{size}</d:getcontentlength>"
        "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
    )


def is_final_move(request: UploadRequest) -> bool:
    return request.method == "MOVE" and bool(request.transfer) and request.chunk == _FINAL


def as_put(
    request: UploadRequest, environ: dict[str, Any], store: ChunkStore, inbox_url: str | None
) -> None:
    """Turn the final MOVE into the PUT of its destination with the assembled body."""
    assert request.transfer is not None
    inbox = paths.inbox_root(inbox_url, request.uid)
    destination = paths.webdav_path(_destination(environ, request.uid), inbox)
    expected = environ.get("HTTP_OC_TOTAL_LENGTH")
    try:
        announced = int(expected) if expected else None
    except ValueError:
        raise BadRequest(f"OC-Total-Length {str(expected)[:40]!r}") from None
    body = store.assembled(request.uid, request.transfer, announced)
    for header in ("HTTP_DESTINATION", "HTTP_OVERWRITE", "HTTP_TRANSFER_ENCODING"):
        environ.pop(header, None)
    environ["REQUEST_METHOD"] = "PUT"
    environ["PATH_INFO"] = destination.encode("utf-8").decode("latin-1")
    environ["CONTENT_LENGTH"] = str(body.size)
    environ["wsgi.input"] = body
    environ[paths.PREFIX] = "/remote.php/dav/files/" + request.uid
    environ[paths.DAV_USER] = request.uid
    environ[paths.TARGET] = destination
    environ[paths.INBOX_ROOT] = inbox


def _destination(environ: dict[str, Any], uid: str) -> str:
    """The WebDAV path the upload is for: a place in ``uid``'s files, checked as the
    path guard checks request paths (UTF-8, no NUL or dot segments, NFC)."""
    raw = environ.get("HTTP_DESTINATION", "")
    path = unquote(urlsplit(raw).path)
    prefix = f"/remote.php/dav/files/{uid}/"
    if not path.startswith(prefix):
        raise BadUploadDestination(f"Destination {raw[:200]!r}")
    problem = path_problem(path.encode("utf-8").decode("latin-1"))
    if problem is not None:
        raise InvalidPath(problem, public=f"{problem}.")
    return unicodedata.normalize("NFC", "/" + path[len(prefix) :].lstrip("/"))
