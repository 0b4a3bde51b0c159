"""Where the patient upload pages live and how a link is written; read by the path
guard (gateway/dav/guard.py) for every request, so it imports nothing heavy."""

from __future__ import annotations

MOUNT = "/upload"


def is_upload_path(path: str) -> bool:
    """A request path (PATH_INFO) the patient upload pages answer."""
    return path == MOUNT or path.startswith(MOUNT + "/")


def link_url(base: str, token: str) -> str:
    """The link a patient opens: ``https://gateway.example/upload/<token>``."""
    return f"{base.rstrip('/')}{MOUNT}/{token}"
