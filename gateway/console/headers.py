"""Where the console lives, read by the path guard (gateway/dav/guard.py) for
every request, so it imports nothing heavy.

WebDAV answers get ``sandbox; default-src 'none'``: nothing a share serves may
run or load anything.  Console pages get the page headers of
gateway/server/responses.py (``PAGE_HEADERS``) instead.
"""

from __future__ import annotations

MOUNT = "/app"


def is_console_path(path: str) -> bool:
    """A request path (PATH_INFO) the console answers."""
    return path == MOUNT or path.startswith(MOUNT + "/")
