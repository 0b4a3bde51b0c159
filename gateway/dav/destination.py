"""The Destination of a COPY or MOVE: read once, judged, and handed on as judged.

WsgiDAV reads the header its own way: it percent-decodes the whole header
first, then splits off a query and ``;`` parameters, keeps a ``#`` in the
path and resolves dot segments.  The gate once read it the standard way
(fragment off, then decoding), so ``/clinical/<p>/x#/../intimate`` and
``/clinical/<p>/intimate%3Bx`` were one path to the policy and another (the
patient's ``intimate`` folder) to WsgiDAV.

So the header is read here, once, strictly:

* a fragment, a query or a ``;`` (raw or percent-encoded) is ambiguous:
  ``400 ambiguous-destination``;
* the host part must be a plain host name or address with an optional port;
* the path is split on ``/`` first and each segment percent-decoded (strict
  UTF-8); an encoded ``/`` is refused, as no name can hold one;
* ``.`` and ``..`` segments, raw or encoded, are refused as in request paths;
* every segment is NFC-normalised and checked by the name rules
  (:func:`gateway.storage.backing.split_path`);
* the path must lie in a share (403 ``policy-denied`` otherwise).

The header is then replaced by the canonical URL of the path that was read,
written so that WsgiDAV's own reading of it gives back exactly that path:
what the gate judged is what WsgiDAV copies or moves to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from gateway.dav.limits import BadHeader
from gateway.errors import BadRequest, InvalidPath, PolicyDenied
from gateway.services import ShareRuntime
from gateway.storage.backing import ForbiddenCharacter, split_path

_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class AmbiguousDestination(BadRequest):
    code = "ambiguous-destination"
    message = (
        "The Destination can be read more than one way (a '#', '?' or ';' in it); "
        "name the target without them."
    )


class Destination(NamedTuple):
    """Where a COPY or MOVE goes: a share and its NFC, validated, share-relative path."""

    share: str
    path: str


def resolve_destination(
    environ: dict[str, Any], shares: Mapping[str, ShareRuntime]
) -> Destination | None:
    """Read ``HTTP_DESTINATION`` once and replace it with the URL of what was read.

    ``None`` when the request has no Destination.
    """
    header = environ.get("HTTP_DESTINATION")
    if not header:
        return None
    parts = urlsplit(header)
    if "#" in header or "?" in header or ";" in header or "%3b" in header.lower():
        raise AmbiguousDestination(f"Destination {header[:200]!r}")
    if parts.netloc and not _HOST.fullmatch(parts.netloc):
        raise BadHeader(
            f"Destination host {parts.netloc[:60]!r}",
            public="Destination must be an http(s) URL or an absolute path.",
        )
    segments = [_decode(raw) for raw in parts.path.split("/")]
    path = "/".join(segments)
    for name, share in shares.items():
        prefix = share.url.lower()
        if path.lower() == prefix or path.lower().startswith(prefix + "/"):
            logical = "/" + "/".join(split_path(path[len(prefix) :]))
            trailing = "/" if path.endswith("/") and logical != "/" else ""
            quoted = quote(share.url + logical.rstrip("/") + trailing, safe="/")
            origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
            environ["HTTP_DESTINATION"] = origin + quoted
            return Destination(name, logical)
    raise PolicyDenied(f"destination {path!r} is in no share")


def _decode(raw: str) -> str:
    """One percent-decoded segment; dot segments are refused before and after decoding."""
    try:
        segment = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidPath("Destination is not valid UTF-8") from None
    if "/" in segment:  # an encoded slash: no name can hold one
        raise ForbiddenCharacter("Destination segment with an encoded /")
    if segment in (".", ".."):
        raise InvalidPath("Destination contains . or .. segments")
    return segment
