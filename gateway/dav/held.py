"""Telling an uploader that an image is held until consent is recorded.

With ``missing: hold`` (docs/CONSENT.md) an image uploaded before its
consent is stored, but private to its uploader and admins and purged when
its window ends.  A mapped drive would otherwise never say so.  Three places
do:

* the PUT's answer carries ``X-Clindav-Held-Until: <when>`` (ISO 8601, UTC);
* PROPFIND lists the live property ``held-until`` in the namespace
  ``clindav:`` (:data:`HELD_PROPERTY`) on a held file, with the same value,
  from WsgiDAV's resources and from the fast path (gateway/dav/propfind.py);
* the console's inbox (gateway/console/inbox.py).

The property is clindav's: a PROPPATCH may not set or remove anything in
the ``clindav:`` namespace (403, ``cannot-modify-protected-property``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError, PRECONDITION_CODE_ProtectedProperty

from gateway.clock import aware
from gateway.db import StoredObject, starts_with
from gateway.services import Services

NAMESPACE = "clindav:"
HELD_PROPERTY = "{clindav:}held-until"
HEADER = "X-Clindav-Held-Until"
# Set by the provider when a PUT stored a held image: its held_until.
STORED_HELD = "clindav.stored_held_until"
_FOLDERS = "clindav.held_below"  # per request: folder -> {name: held_until}


def held_text(when: dt.datetime) -> str:
    """``2026-05-01T09:30:00Z``: when a held image is purged unless consent comes."""
    return aware(when).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def held_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The header of an answer to a PUT that stored a held image (else none)."""
    when = environ.get(STORED_HELD)
    return [] if when is None else [(HEADER, held_text(when))]


def held_in(
    services: Services, share: str, folder: str, environ: dict[str, Any]
) -> dict[str, dt.datetime]:
    """Name -> held_until of the held files directly in ``folder``: one query per request.

    Whether this user may see them is the listing's business (held files of
    others are never listed); this only says which listed ones are held.
    """
    prefix = folder.rstrip("/") + "/"
    cache: dict[tuple[str, str], dict[str, dt.datetime]] = environ.setdefault(_FOLDERS, {})
    found = cache.get((share, prefix))
    if found is None:
        with services.sessions() as session:
            rows = session.execute(
                select(StoredObject.logical_path, StoredObject.held_until).where(
                    StoredObject.share == share,
                    StoredObject.held_until.is_not(None),
                    starts_with(StoredObject.logical_path, prefix),
                )
            ).all()
        found = {
            path[len(prefix) :]: aware(when)
            for path, when in rows
            if when is not None and "/" not in path[len(prefix) :]
        }
        cache[(share, prefix)] = found
    return found


def protect(name: str) -> None:
    """Refuse a PROPPATCH of a property in clindav's namespace."""
    if name.startswith("{" + NAMESPACE + "}"):
        raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_ProtectedProperty)
