"""Where the console lives and the headers its pages carry beyond every response's.

Read by the path guard (gateway/dav/guard.py) for every request, so it
imports nothing heavy.  WebDAV answers get ``sandbox; default-src 'none'``:
nothing a share serves may run or load anything.  Console pages load their
own stylesheet and images (no inline script or style, nothing from another
origin), may not be framed (clickjacking of the consent forms), and send no
Referer: a page address names a patient.
"""

from __future__ import annotations

MOUNT = "/app"
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_PAGE_HEADERS = (
    ("Content-Security-Policy", CONSOLE_CSP),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


def is_console_path(path: str) -> bool:
    """A request path (PATH_INFO) the console answers."""
    return path == MOUNT or path.startswith(MOUNT + "/")


def with_console_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every response's security headers, with the console's in place of WebDAV's CSP."""
    names = {name.lower() for name, _ in _PAGE_HEADERS}
    return [*(h for h in headers if h[0].lower() not in names), *_PAGE_HEADERS]
