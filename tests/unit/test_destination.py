"""The Destination the gate judges is the one WsgiDAV reads from the rewritten header."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote, urlparse

import pytest
from wsgidav import util

from gateway.dav.destination import Destination, resolve_destination
from gateway.errors import ClindavError
from gateway.services import ShareRuntime
from gateway.storage.backing import BackingStore, PlainNames

SHARES = {
    name: ShareRuntime(
        name, f"/{name}", BackingStore(Path("/nonexistent"), PlainNames()), cast(Any, None)
    )
    for name in ("clinical", "documents")
}


def wsgidav_reading(header: str) -> str:
    """What WsgiDAV 4.4's COPY/MOVE makes of a Destination header (request_server.py)."""
    path = urlparse(unquote(header), allow_fragments=False).path
    return cast(str, util.normalize_path(path))


@pytest.mark.parametrize(
    "name",
    ["plain.jpg", "a b.jpg", "c#d.jpg", "e%f.jpg", "g+h.jpg", "ü.jpg", "日本.png", "x&y=z.txt"],
)
@pytest.mark.parametrize("form", ["/{}", "https://clindav.example:8443/{}"])
def test_the_rewritten_header_reads_back_as_the_judged_path(name: str, form: str) -> None:
    sent = form.format(f"Clinical/9434765919/{quote(unicodedata.normalize('NFD', name))}")
    environ = {"HTTP_DESTINATION": sent}
    destination = resolve_destination(environ, SHARES)
    expected = f"/9434765919/{unicodedata.normalize('NFC', name)}"
    assert destination == Destination("clinical", expected)
    assert wsgidav_reading(environ["HTTP_DESTINATION"]) == "/clinical" + expected


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("/clinical/p/x#/../intimate", "ambiguous-destination"),
        ("/clinical/p/intimate%3Bx", "ambiguous-destination"),
        ("/clinical/p/intimate;x", "ambiguous-destination"),
        ("/clinical/p/intimate?x", "ambiguous-destination"),
        ("/clinical/p/%2e%2e/q", "invalid-path"),
        ("/clinical/p/a%2fb", "forbidden-character"),
        ("/clinical/p/%ff", "invalid-path"),
        ("http://h%2fclinical/p/x", "bad-header"),
        ("http://user@h/clinical/p/x", "bad-header"),
        ("/elsewhere/x", "policy-denied"),
    ],
)
def test_what_could_be_read_two_ways_is_refused(header: str, code: str) -> None:
    environ = {"HTTP_DESTINATION": header}
    with pytest.raises(ClindavError) as refused:
        resolve_destination(environ, SHARES)
    assert refused.value.code == code
    assert environ["HTTP_DESTINATION"] == header  # nothing half-rewritten
