"""The ``OC-*`` headers of a successful change made through the Nextcloud door.

WebDAV answers the request (gateway/nextcloud/paths.py); once it has
committed, this adds what the apps need to record the result
(../shared/NEXTCLOUD.md §4.4, §5.1, §7):

* PUT and the final MOVE of a chunked upload: the client's ``X-OC-Mtime``
  (integer or fractional; zero or negative ignored rather than refused) is
  applied to the stored file, then ``ETag``/``OC-ETag`` are computed, so the
  answer's ETag is the stored file's.  When a stage changed the body (the
  scrubber removed metadata; WebDAV then sends no ETag) the answer's ETag
  deliberately differs from the stored one: the desktop client downloads
  the scrubbed copy on its next sync instead of keeping the original;
* ``OC-FileId`` on PUT, MKCOL, MOVE and COPY (gateway/records/fileids.py;
  the MOVE itself took the numbers of what it moved along and the trash
  retired a deleted one's, whatever door they came through).

A failure here (the database gone between the commit and these lines) leaves
the change made and answers without ``OC-FileId``: the app reports the item
and retries, it loses nothing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from gateway.dav.provider import file_etag
from gateway.nextcloud.paths import DESTINATION, TARGET, locate
from gateway.nextcloud.tree import tree_of
from gateway.records.fileids import FileIds, oc_id
from gateway.services import Services
from gateway.storage.backing import split_path

log = logging.getLogger("clindav.nextcloud")

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]
_ANSWERED = frozenset({"PUT", "MKCOL", "MOVE", "COPY", "DELETE"})
_REPLACED = frozenset({"etag", "oc-etag", "oc-fileid", "x-oc-mtime"})


def client_mtime(environ: dict[str, Any]) -> float | None:
    """``X-OC-Mtime`` as seconds, or None when absent, unreadable or not positive."""
    raw = environ.get("HTTP_X_OC_MTIME", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


class Replies:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.ids = FileIds(services.sessions)

    def wrap(self, environ: dict[str, Any], start_response: StartResponse) -> StartResponse:
        method = environ.get("REQUEST_METHOD", "").upper()

        def start(status: str, headers: Headers, exc_info: Any = None) -> Any:
            if method in _ANSWERED and int(status[:3]) < 300:
                try:
                    headers = self._after(method, environ, headers)
                except (SQLAlchemyError, OSError) as exc:
                    log.error(
                        "nextcloud: %s %s done, OC headers not made: %r",
                        method,
                        environ[TARGET],
                        exc,
                    )
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        return start

    def _after(self, method: str, environ: dict[str, Any], headers: Headers) -> Headers:
        if method == "DELETE":  # its numbers retired with it (gateway/records/trash.py)
            return headers
        where = locate(self.services, environ[TARGET])
        if method in ("MOVE", "COPY"):
            destination = environ.get(DESTINATION)
            where = locate(self.services, destination) if destination else None
        if where is None:
            return headers
        changed = method == "PUT" and not _has_etag(headers)
        return self.stored_headers(environ, where, headers, changed=changed)

    def stored_headers(
        self, environ: dict[str, Any], where: tuple[str, str], headers: Headers, *, changed: bool
    ) -> Headers:
        """``headers`` with the OC headers of the file or folder now at ``where``."""
        share, path = where
        target = self.services.shares[share].store.locate(split_path(path))
        kept = [h for h in headers if h[0].lower() not in _REPLACED]
        number = self.ids.numbers(share, [path])[path]
        kept.append(("OC-FileId", oc_id(number)))
        if target.is_dir():
            etag = tree_of(target).etag
            return [*kept, ("ETag", f'"{etag}"'), ("OC-ETag", f'"{etag}"')]
        mtime = client_mtime(environ)
        if mtime is not None:
            os.utime(target, (mtime, mtime))
            kept.append(("X-OC-MTime", "accepted"))
        etag = _stored_etag(target)
        # A changed body answers an ETag the stored file never has: clients fetch it.
        answered = f"{etag}-received" if changed else etag
        return [*kept, ("ETag", f'"{answered}"'), ("OC-ETag", f'"{answered}"')]


def _has_etag(headers: Headers) -> bool:
    return any(name.lower() == "etag" for name, _value in headers)


def _stored_etag(target: Path) -> str:
    return file_etag(os.stat(target))
