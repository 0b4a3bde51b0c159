"""Request limits and WebDAV header checks, before anything is read or locked.

Every malformed DAV header answers 400 (never 500), with a code naming the
header; bodies that are too large answer 413 before a byte of them is read.

* XML bodies (PROPFIND, PROPPATCH, LOCK, UNLOCK, REPORT): at most
  :data:`MAX_XML_BODY` bytes, a LOCK body (and so its owner, which is stored
  with the lock and shown in every lockdiscovery) at most
  :data:`MAX_LOCK_BODY`; with a declared length (chunked XML: 411).
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
* ``Overwrite``, ``Lock-Token``, ``If`` (RFC 4918 section 10.4 grammar; WsgiDAV
  silently ignores what it cannot parse, so a garbled condition would not
  apply), ``Destination`` (an http(s) URL or an absolute path): syntax checked.
  ``Destination`` counts only on COPY and MOVE and is removed from any other
  request.
* ``Range`` (GET, HEAD): one well-formed byte range is served (206); several
  ranges or a malformed header are ignored and the whole content is served
  (200), as RFC 9110 section 14.2 allows.  WsgiDAV has no multipart answer and
  would serve one of several ranges, and it reads garbage as a range.
* Request headers: at most :data:`MAX_REQUEST_HEADERS` bytes, answered 431 by
  :mod:`gateway.server.http` (before WSGI).
* Dead properties (PROPPATCH): at most :data:`MAX_DEAD_PROPERTIES` per
  resource, :data:`MAX_DEAD_PROPERTY_BYTES` per value and
  :data:`MAX_DEAD_PROPERTIES_BYTES` per resource, checked on the whole body
  before WsgiDAV applies any of it (507, RFC 4918 section 9.2.1).
* COPY of a folder: at most ``limits.max_copy_members`` entries and
  ``limits.max_copy_bytes`` bytes below it, counted before anything is copied
  (507, RFC 4918 section 9.8.5).
"""

from __future__ import annotations

import io
import os
import re
import stat
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wsgidav import util

from gateway.errors import (
    BadRequest,
    ClindavError,
    Forbidden,
    IncompleteBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from gateway.dav.props import DatabasePropertyManager
    from gateway.services import ShareRuntime
    from gateway.settings import LimitSettings

MAX_XML_BODY = 256 * 1024
# A lockinfo is a scope, a type and an owner: Windows, Office, Finder and
# litmus send a few hundred bytes.  The owner is kept with the lock.
MAX_LOCK_BODY = 8 * 1024
MAX_LOCK_SECONDS = 3600
MAX_REQUEST_HEADERS = 64 * 1024
# Dead properties are stored encrypted in the database, one row each: a
# client must not turn PROPPATCH into unbounded storage (Office and Windows
# set a handful of small ones).
MAX_DEAD_PROPERTIES = 64
MAX_DEAD_PROPERTY_BYTES = 16 * 1024
MAX_DEAD_PROPERTIES_BYTES = 64 * 1024
XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "REPORT"})
_TIMEOUT = re.compile(r"^(Second-(\d{1,12})|Infinite)$", re.IGNORECASE)
_LOCK_TOKEN = re.compile(r"^<[^<>\s]{1,200}>$")
# RFC 4918 section 10.4.2, over tokens: U a Coded-URL or Resource-Tag, E an
# entity tag, N "Not".  1*No-tag-list | 1*Tagged-list, each List 1*Condition.
_IF_TOKEN = re.compile(r"\s*(?:(<[^<>\s]+>)|(\[[^\[\]]+\])|(\()|(\))|(not)(?=\s*[<\[]))", re.I)
_IF_GRAMMAR = re.compile(r"(?:\((?:N?[UE])+\))+|(?:U(?:\((?:N?[UE])+\))+)+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 9110 section 14.1.1 byte ranges; 18 digits keep int() cheap and exact.
_BYTE_RANGE = re.compile(r"^(\d{1,18})-(\d{0,18})$|^-(\d{1,18})$")


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


class HeaderFieldsTooLarge(ClindavError):
    status = 431
    code = "header-fields-too-large"
    message = "The request's headers are larger than clindav accepts."


class InsufficientStorage(ClindavError):
    """507: RFC 4918's answer when a PROPPATCH or COPY cannot be recorded."""

    status = 507
    code = "insufficient-storage"
    message = "The server cannot store this."


class TooManyProperties(InsufficientStorage):
    code = "too-many-properties"
    message = f"A resource may have at most {MAX_DEAD_PROPERTIES} custom properties."


class PropertyTooLarge(InsufficientStorage):
    code = "property-too-large"
    message = f"A custom property's value may be at most {MAX_DEAD_PROPERTY_BYTES} bytes."


class PropertiesTooLarge(InsufficientStorage):
    code = "properties-too-large"
    message = (
        f"A resource's custom properties may be at most {MAX_DEAD_PROPERTIES_BYTES} bytes in all."
    )


class CopyTooLarge(InsufficientStorage):
    code = "copy-too-large"
    message = "The folder is too large to copy in one request; copy its sub-folders one by one."


def check_request(environ: dict[str, Any], method: str, *, is_admin: bool) -> None:
    """Refuse malformed or oversized requests; cap lock timeouts in place."""
    _check_framing(environ, method)
    _check_depth(environ, method, is_admin=is_admin)
    if method == "LOCK":
        _cap_timeout(environ)
    if method in ("GET", "HEAD") and "HTTP_RANGE" in environ:
        _check_range(environ)
    overwrite = environ.get("HTTP_OVERWRITE")
    if overwrite is not None and overwrite.upper() not in ("T", "F"):
        raise BadHeader(f"Overwrite: {overwrite[:20]!r}", public="Overwrite must be T or F.")
    token = environ.get("HTTP_LOCK_TOKEN")
    if token is not None and not _LOCK_TOKEN.match(token.strip()):
        raise BadHeader("malformed Lock-Token", public="Lock-Token must be one <token>.")
    if "HTTP_IF" in environ:
        _check_if_header(environ)
    _check_destination(environ, method)


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
        limit = MAX_LOCK_BODY if method == "LOCK" else MAX_XML_BODY
        if length.isdigit() and int(length) > limit:
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
    value = environ["HTTP_IF"].strip()
    if len(value) > 8192 or not _if_is_well_formed(value):
        raise BadHeader("malformed If header", public="The If header is malformed.")
    try:
        util.parse_if_header_dict(environ)
    except Exception:  # WsgiDAV's parser raises assorted errors on garbage
        raise BadHeader("unparsable If header", public="The If header is malformed.") from None


def _if_is_well_formed(value: str) -> bool:
    kinds: list[str] = []
    pos = 0
    while pos < len(value):
        match = _IF_TOKEN.match(value, pos)
        if match is None or match.lastindex is None:
            return False
        kinds.append("UE()N"[match.lastindex - 1])
        pos = match.end()
    return _IF_GRAMMAR.fullmatch("".join(kinds)) is not None


def _check_destination(environ: dict[str, Any], method: str) -> None:
    """COPY/MOVE: an http(s) URL or an absolute path (RFC 4918 section 10.3).

    On any other method the header means nothing and is removed: the gateway
    must never act on it (a GET with a Destination in another share was
    once answered as a copy into that share).
    """
    if method not in ("COPY", "MOVE"):
        environ.pop("HTTP_DESTINATION", None)
        return
    value = environ.get("HTTP_DESTINATION") or ""
    if not value:
        return  # no Destination: the middleware answers 400 bad-request
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is no number
    except ValueError:
        parts = None
    absolute = parts is not None and parts.scheme.lower() in ("http", "https") and parts.netloc
    relative = parts is not None and not parts.scheme and not parts.netloc
    if (
        len(value) > 8192
        or parts is None
        or not (absolute or relative)
        or not parts.path.startswith("/")
        or _BAD_ESCAPE.search(value)
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
    ):
        raise BadHeader(
            f"Destination: {value[:60]!r}",
            public="Destination must be an http(s) URL or an absolute path.",
        )


def _check_range(environ: dict[str, Any]) -> None:
    """Keep one well-formed byte range (normalised for WsgiDAV); drop anything else."""
    unit, _, specs = environ["HTTP_RANGE"].partition("=")
    # RFC 9110 5.6.1: empty list elements are allowed and ignored.
    ranges = [spec for spec in (part.strip(" \t") for part in specs.split(",")) if spec]
    match = _BYTE_RANGE.match(ranges[0]) if len(ranges) == 1 else None
    valid = match is not None and unit.strip(" \t").lower() == "bytes"
    if match is not None:
        first, last, suffix = match.groups()
        if suffix is not None:
            valid = valid and int(suffix) > 0
        elif last:
            valid = valid and int(first) <= int(last)
    if valid:
        environ["HTTP_RANGE"] = f"bytes={ranges[0]}"
    else:
        del environ["HTTP_RANGE"]  # several ranges, another unit or garbage: all of it (200)


def check_dead_properties(
    environ: dict[str, Any], resource: Any, manager: DatabasePropertyManager
) -> None:
    """Refuse a PROPPATCH whose result would exceed the dead-property caps.

    Runs after the policy gate, before WsgiDAV: the body (at most
    :data:`MAX_XML_BODY`) is read here and handed on in memory, so the whole
    request is judged at once and nothing of a refused one is stored.  A
    request that only shrinks a resource already over a cap passes.
    """
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    if len(body) < length:
        raise IncompleteBody(f"PROPPATCH body: got {len(body)} of {length} bytes")
    environ["wsgi.input"] = io.BytesIO(body)
    root = util.parse_xml_body(environ)  # WsgiDAV's own parser: its 400s are WsgiDAV's too
    environ["wsgi.input"] = io.BytesIO(body)
    environ.pop("wsgidav.all_input_read", None)
    before = manager.usage(resource.get_ref_url(), environ)
    after = dict(before)
    for update in root:
        if update.tag not in ("{DAV:}set", "{DAV:}remove"):
            continue  # WsgiDAV answers 400
        for element in (e for prop in update if prop.tag == "{DAV:}prop" for e in prop):
            if not isinstance(element.tag, str) or element.tag.startswith("{DAV:}"):
                continue  # live properties (and XML comments) are not stored here
            if update.tag == "{DAV:}remove":
                after.pop(element.tag, None)
                continue
            # The serialisation WsgiDAV stores (DAVResource.set_property_value).
            size = len(util.etree.tostring(element))
            if size > MAX_DEAD_PROPERTY_BYTES:
                raise PropertyTooLarge(f"{element.tag[:100]!r}: {size} bytes")
            after[element.tag] = size
    if len(after) > max(MAX_DEAD_PROPERTIES, len(before)):
        raise TooManyProperties(f"{len(after)} dead properties on {resource.path!r}")
    total = sum(after.values())
    if total > max(MAX_DEAD_PROPERTIES_BYTES, sum(before.values())):
        raise PropertiesTooLarge(f"{total} bytes of dead properties on {resource.path!r}")


def check_copy_size(
    share: ShareRuntime, segments: list[str], depth: str | None, limits: LimitSettings
) -> None:
    """Refuse a COPY of a folder over ``limits.max_copy_*`` before anything is copied.

    The walk stops at the first entry over a limit, so refusing a huge tree
    costs no more than the limit.  Sizes are bytes as stored on the share.
    """
    store = share.store
    top = store.locate(segments)
    st = store.lstat(top)
    if st is None or not stat.S_ISDIR(st.st_mode) or depth == "0":
        return  # a file, nothing (WsgiDAV answers) or the folder alone
    members = size = 0
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            names = store.list_names(folder)  # skips links and foreign names
        except FileNotFoundError:
            continue  # deleted meanwhile
        for name in names:
            path = folder / store.names.encode(name)
            try:
                child = os.lstat(path)
            except FileNotFoundError:
                continue  # deleted meanwhile
            members += 1
            size += child.st_size if stat.S_ISREG(child.st_mode) else 0
            if members > limits.max_copy_members or size > limits.max_copy_bytes:
                raise CopyTooLarge(
                    f"COPY source {'/'.join(segments)!r} holds over "
                    f"{limits.max_copy_members} entries or {limits.max_copy_bytes} bytes"
                )
            if stat.S_ISDIR(child.st_mode):
                pending.append(path)
