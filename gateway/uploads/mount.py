"""``/upload/...`` to the patient upload pages; everything else on to the next app."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.server.lazy import StartResponse, WsgiApp
from gateway.uploads.paths import MOUNT, is_upload_path


class UploadMount:
    def __init__(self, rest: WsgiApp, uploads: WsgiApp) -> None:
        self.rest = rest
        self.uploads = uploads

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not is_upload_path(path):
            return self.rest(environ, start_response)
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + MOUNT
        environ["PATH_INFO"] = path[len(MOUNT) :]
        return self.uploads(environ, start_response)
