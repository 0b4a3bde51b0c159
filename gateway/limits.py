"""Request limits and WebDAV header checks, before anything is read or locked.

Every malformed DAV header answers 400 (never 500), with a code naming the
header; bodies that are too large answer 413 before a byte of them is read.

* XML bodies (PROPFIND, PROPPATCH, LOCK, UNLOCK, REPORT): at most
  :data:`MAX_XML_BODY` bytes, with a declared length (chunked XML: 411).
* ``Transfer-Encoding`` together with ``Content-Length``: 400 (request
  smuggling); ``Content-Encoding`` on a PUT: 415 (clindav stores what it can
  check, not a compressed stream it would have to trust).
* ``Depth``: ``0``, ``1`` or ``infinity`` only; PROPFIND with ``infinity`` is
  refused (403, RFC 4918 ``propfind-finite-depth``): one request must not walk
  a whole share.
* ``Timeout`` (LOCK): parsed, and capped at :data:`MAX_LOCK_SECONDS` (an
  hour, refreshable) by rewriting the header WsgiDAV reads.  A
  depth-infinity lock on a share's root (every file of the share) is for the
  policy's admin group only; on a sub-folder it is allowed (litmus, Office).
* ``Overwrite``, ``Lock-Token``, ``If``: syntax checked.
"""

from __future__ import annotations

import re
from typing import Any

from wsgidav import util

from gateway.errors import (
    BadRequest,
    ClindavError,
    Forbidden,
    PayloadTooLarge,
    UnsupportedMediaType,
)

MAX_XML_BODY = 256 * 1024
MAX_LOCK_SECONDS = 3600
XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "REPORT"})
_TIMEOUT = re.compile(r"^(Second-(\d{1,12})|Infinite)$", re.IGNORECASE)
_LOCK_TOKEN = re.compile(r"^<[^<>\s]{1,200}>$")


class BadHeader(BadRequest):
    code = "bad-header"
    message = "A request header is malformed."


class LengthRequired(ClindavError):
    status = 411
    code = "length-required"
    message = "This request needs a Content-Length."


class XmlBodyTooLarge(PayloadTooLarge):
    code = "xml-body-too-large"
    message = "The request's XML body is larger than clindav accepts."


class EncodedUploadRefused(UnsupportedMediaType):
    code = "content-encoding-refused"
    message = "Uploads with a Content-Encoding are not accepted; send the file itself."


class InfiniteDepthRefused(Forbidden):
    code = "propfind-finite-depth"
    message = "PROPFIND with Depth: infinity is not allowed; list one level at a time."


class InfiniteLockRefused(Forbidden):
    code = "infinite-lock-refused"
    message = "Only administrators may lock a whole share."


def check_request(environ: dict[str, Any], method: str, *, is_admin: bool) -> None:
    """Refuse malformed or oversized requests; cap lock timeouts in place."""
    _check_framing(environ, method)
    _check_depth(environ, method, is_admin=is_admin)
    if method == "LOCK":
        _cap_timeout(environ)
    overwrite = environ.get("HTTP_OVERWRITE")
    if overwrite is not None and overwrite.upper() not in ("T", "F"):
        raise BadHeader(f"Overwrite: {overwrite[:20]!r}", public="Overwrite must be T or F.")
    token = environ.get("HTTP_LOCK_TOKEN")
    if token is not None and not _LOCK_TOKEN.match(token.strip()):
        raise BadHeader("malformed Lock-Token", public="Lock-Token must be one <token>.")
    if "HTTP_IF" in environ:
        _check_if_header(environ)


def _check_framing(environ: dict[str, Any], method: str) -> None:
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if length and chunked:
        raise BadHeader(
            "Transfer-Encoding with Content-Length",
            public="Send Content-Length or Transfer-Encoding, not both.",
        )
    if method == "PUT" and environ.get("HTTP_CONTENT_ENCODING", "identity").lower() != "identity":
        raise EncodedUploadRefused(f"Content-Encoding {environ['HTTP_CONTENT_ENCODING'][:20]!r}")
    if method in XML_METHODS:
        if chunked:
            raise LengthRequired(f"chunked {method} body")
        if length.isdigit() and int(length) > MAX_XML_BODY:
            raise XmlBodyTooLarge(f"{method} body of {length} bytes")


def _check_depth(environ: dict[str, Any], method: str, *, is_admin: bool) -> None:
    depth = environ.get("HTTP_DEPTH")
    if depth is None:
        if method == "PROPFIND":
            environ["HTTP_DEPTH"] = "1"  # RFC 4918 says infinity; we list one level
        return
    depth = depth.strip().lower()
    if depth not in ("0", "1", "infinity"):
        raise BadHeader(f"Depth: {depth[:20]!r}", public="Depth must be 0, 1 or infinity.")
    environ["HTTP_DEPTH"] = depth
    if method == "PROPFIND" and depth == "infinity":
        raise InfiniteDepthRefused("PROPFIND depth infinity")
    at_share_root = environ.get("PATH_INFO", "/").strip("/") == ""
    if method == "LOCK" and depth == "infinity" and at_share_root and not is_admin:
        raise InfiniteLockRefused("depth-infinity LOCK of a share root by a non-admin")


def _cap_timeout(environ: dict[str, Any]) -> None:
    raw = environ.get("HTTP_TIMEOUT")
    if raw is None:
        environ["HTTP_TIMEOUT"] = f"Second-{MAX_LOCK_SECONDS}"
        return
    seconds = []
    for item in (part.strip() for part in raw.split(",")):
        match = _TIMEOUT.match(item)
        if not match:
            raise BadHeader(
                f"Timeout: {raw[:40]!r}", public="Timeout must be Second-N or Infinite."
            )
        seconds.append(int(match.group(2)) if match.group(2) else MAX_LOCK_SECONDS)
    environ["HTTP_TIMEOUT"] = f"Second-{min(max(seconds[0], 1), MAX_LOCK_SECONDS)}"


def _check_if_header(environ: dict[str, Any]) -> None:
    value = environ["HTTP_IF"]
    if len(value) > 8192 or "(" not in value:
        raise BadHeader("malformed If header", public="The If header is malformed.")
    try:
        util.parse_if_header_dict(environ)
    except Exception:  # WsgiDAV's parser raises assorted errors on garbage
        raise BadHeader("unparsable If header", public="The If header is malformed.") from None
