"""One reading of every path: Destination, NFC names, client junk, Windows names,
and what every response carries (HSTS under TLS, no server product or version).

All against the real gateway on loopback.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
import sqlalchemy
from sqlalchemy.pool import NullPool

from gateway.settings import load_settings
from tests.conftest import (
    Gateway,
    make_instance,
    read_answer,
    run_cli,
    start_gateway,
)
from tests.integration.test_dav_methods import LOCK_BODY

PATIENT, OTHER, HELD = "9434765919", "4010232137", "9434765870"
HSTS = "Strict-Transport-Security"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    instance = make_instance(tmp_path_factory.mktemp("destination-and-names"))
    instance.add_user("bob", "clinicians")
    for patient, extra in ((PATIENT, ()), (OTHER, ("--intimate",))):
        run_cli(
            "consent",
            "add",
            "--patient",
            patient,
            "--scope",
            "record",
            "--given-by",
            "patient",
            "--method",
            "verbal",
            "--recorded-by",
            "dr-a",
            *extra,
            config=instance.config,
        )
    gateway = start_gateway(instance)
    yield gateway
    gateway.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def query(gw: Gateway, sql: str, **params: Any) -> list[tuple]:
    engine = sqlalchemy.create_engine(
        load_settings(gw.instance.config).sqlalchemy_url(), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()


def audited(gw: Gateway, response: requests.Response) -> list[tuple[str, int, str]]:
    return [
        tuple(row)  # type: ignore[misc]
        for row in query(
            gw,
            "SELECT action, status, code FROM audit_event WHERE request_id = :id",
            id=response.headers["X-Request-Id"],
        )
    ]


# --- issue 15 point 1: the Destination is read once ------------------------


# --- issue 15 point 4: NFD names ----------------------------------------------


# --- issue 15 point 6: junk is never a destination ---------------------------


# --- issue 15 point 21: names Windows cannot hold ----------------------------

NAMES = [
    ("\u00a0", "trailing-dot-or-space"),
    ("\u2003", "trailing-dot-or-space"),
    ("\u3000", "trailing-dot-or-space"),
    ("report\u3000", "trailing-dot-or-space"),
    ("a\u200bb.txt", "control-character"),
    ("\ufeffbom.txt", "control-character"),
    ("a\u200db.txt", "control-character"),
    ("line\u2028break.txt", "control-character"),
    ("CON .txt", "reserved-name"),
    ("COM\u00b9", "reserved-name"),
    ("lpt\u00b3.jpg", "reserved-name"),
    ("CONIN$", "reserved-name"),
    ("conout$.txt", "reserved-name"),
    ("COM0", "reserved-name"),
]


@pytest.mark.parametrize(("name", "code"), NAMES)
def test_names_windows_cannot_hold_are_refused(gw: Gateway, name: str, code: str) -> None:
    s = gw.session()
    source = f"{gw.url}/documents/{unique('src')}.txt"
    assert s.put(source, data=b"source").status_code == 201
    target = f"{gw.url}/documents/{quote(name)}"
    attempts = [
        s.put(target, data=b"x"),
        s.request("MKCOL", target),
        s.request("LOCK", target, data=LOCK_BODY),
        s.request("COPY", source, headers={"Destination": target}),
        s.request("MOVE", source, headers={"Destination": target}),
    ]
    for r in attempts:
        assert (r.status_code, r.headers.get("X-Clindav-Error")) == (400, code), r.request.method
        assert audited(gw, r) == [(r.request.method, 400, code)]
    assert s.get(source).content == b"source"
    assert s.get(target).status_code in (400, 404)


# --- issue 15 point 21: HSTS, product and version -----------------------------


def _tls_raw(gw: Gateway, request: bytes) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    with context.wrap_socket(raw) as sock:
        sock.sendall(request)
        return read_answer(sock)


# --- issue 15 point 21: --no-tls on a public address ---------------------------


# --- issue 16 point 10: Finder ---------------------------------------------------
