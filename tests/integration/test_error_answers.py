"""Every error answer has one form, whichever layer gives it (gateway/server/responses.py).

The HTTP server's 431 (before WSGI), the path guard's 400, the gate's 403, a
failed login's 401 and WsgiDAV's 404 all carry the same security headers, the
clindav error header and body, and one request id: the one on the request's
audit event and its log lines.  A layer in front of the gateway that gives a
request its id has that id used throughout; an app serving HTML pages gets
the page headers.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from flask import Flask

from gateway.app import build_app, build_services
from gateway.dav.limits import MAX_REQUEST_HEADERS
from gateway.server.http import Server, make_server
from gateway.server.responses import (
    PAGE_HEADERS,
    REQUEST_ID,
    SecurityHeaders,
    error_answer,
    is_https,
    request_id,
)
from gateway.settings import load_settings
from tests.conftest import PASSWORD, Gateway, Instance, make_instance, start_in_process
from tests.integration.test_audit import events_by_request
from tests.integration.test_fail_closed import AUDIT_DOWN, AUDIT_UP

SECURITY = (
    "X-Content-Type-Options",
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "Referrer-Policy",
)
EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Strict-Transport-Security": "max-age=31536000",
}
REQUEST_IDS = re.compile(r"request ([0-9a-f]{16})\b")


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # one value per name; a repeated name is joined with ", "
    body: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Answer:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return cls(int(lines[0].split(" ")[1]), headers, body)

    @classmethod
    def of(cls, r: requests.Response) -> Answer:
        return cls(r.status_code, dict(r.headers), r.content)


def exchange(gw: Gateway, request: bytes, *, until: bytes | None = None) -> bytes:
    """Send raw bytes over TLS; read until the server closes, goes quiet, or ``until`` ends it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    data = b""
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    with context.wrap_socket(raw) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        with contextlib.suppress(TimeoutError, ConnectionResetError, ssl.SSLError):
            while chunk := sock.recv(65536):
                data += chunk
                if until is not None and data.endswith(until):
                    break
    return data


def header_flood() -> bytes:
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    return (
        b"GET /documents/a.txt HTTP/1.1\r\nHost: x\r\n"
        + pad * (MAX_REQUEST_HEADERS // len(pad) + 2)
        + b"\r\n"
    )


def security_of(answer: Answer) -> dict[str, str]:
    return {name: answer.headers[name] for name in SECURITY if name in answer.headers}


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_in_process(make_instance(tmp_path_factory.mktemp("tls")), tls=True)
    yield gw
    gw.stop()


def _store_a_file(gw: Gateway) -> None:
    """For the gate to refuse to an auditor."""
    assert gw.session().put(f"{gw.url}/documents/a.txt", data=b"x").status_code in (201, 204)


def _error_answers(gw: Gateway) -> dict[str, Answer]:
    """One error answer of each layer."""
    s, auditor, wrong = gw.session(), gw.session("audrey"), gw.session("alice", "not it")
    return {
        "server": Answer.parse(exchange(gw, header_flood())),
        "guard": Answer.of(s.get(f"{gw.url}/documents/%ff")),
        "gate": Answer.of(auditor.get(f"{gw.url}/documents/a.txt")),
        "login": Answer.of(wrong.get(f"{gw.url}/documents/a.txt")),
        "wsgidav": Answer.of(s.get(f"{gw.url}/documents/missing.txt")),
    }


def test_every_layer_answers_errors_in_one_form_with_its_audited_request_id(
    tls_gateway: Gateway,
) -> None:
    gw = tls_gateway
    _store_a_file(gw)
    logged_before = len(gw.log())
    answers = _error_answers(gw)
    expected = {
        "server": (431, "header-fields-too-large"),
        "guard": (400, "invalid-path"),
        "gate": (403, "policy-denied"),
        "login": (401, "authentication-required"),
        "wsgidav": (404, "not-found"),
    }
    events = events_by_request(gw.instance)
    ids = set()
    for layer, answer in answers.items():
        status, code = expected[layer]
        rid = answer.headers["X-Request-Id"]
        ids.add(rid)
        assert (answer.status, answer.headers["X-Clindav-Error"]) == (status, code), layer
        assert security_of(answer) == EXPECTED, layer
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8", layer
        assert answer.body.startswith(f"{status} {code}: ".encode()), layer
        assert answer.body.endswith(f"\nrequest id: {rid}\n".encode()), layer
        assert [(e.status, e.code) for e in events[rid]] == [(status, code)], layer
    assert answers["login"].headers["WWW-Authenticate"].startswith("Basic realm=")
    # The log speaks of these requests by the same ids, and of no request without one.
    logged = set(REQUEST_IDS.findall(gw.log()[logged_before:]))
    assert ids - {answers["wsgidav"].headers["X-Request-Id"]} <= logged  # refusals are logged
    assert logged <= set(events)


def test_a_refused_head_request_has_no_body_and_the_connection_goes_on(
    tls_gateway: Gateway,
) -> None:
    gw = tls_gateway
    auth = basic("alice").encode()
    pipelined = (
        b"HEAD /documents/%ff HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    data = exchange(gw, pipelined, until=b"\r\n\r\nok\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    refused = Answer.parse(head + b"\r\n\r\n")
    assert (refused.status, refused.headers["X-Clindav-Error"]) == (400, "invalid-path")
    assert int(refused.headers["Content-Length"]) > 0  # what a GET would have had
    # No body after a HEAD answer: the next bytes are the next answer.
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:120]
    assert Answer.parse(rest).body == b"ok\n"


def test_monitoring_answers_carry_the_security_headers(tls_gateway: Gateway) -> None:
    anonymous = tls_gateway.session(None)
    for path in ("/healthz", "/readyz", "/metrics"):
        r = anonymous.get(f"{tls_gateway.url}{path}")
        assert r.status_code == 200, path
        assert security_of(Answer.of(r)) == EXPECTED, path
        assert r.headers["Cache-Control"] == "no-store", path


@contextlib.contextmanager
def audit_down(instance: Instance) -> Iterator[None]:
    """Every audit event fails to be written (a trigger in the instance's own database)."""
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.begin() as conn:
            for sql in AUDIT_DOWN[instance.database]:
                conn.exec_driver_sql(sql)
        yield
        with engine.begin() as conn:
            for sql in AUDIT_UP[instance.database]:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def test_a_refusal_that_cannot_be_audited_is_503_in_the_same_form(tmp_path: Path) -> None:
    instance = make_instance(tmp_path)
    gw = start_in_process(instance, tls=True)
    try:
        _store_a_file(gw)
        with audit_down(instance):
            answers = _error_answers(gw)
    finally:
        gw.stop()
    assert (
        set(events_by_request(instance)) & {a.headers["X-Request-Id"] for a in answers.values()}
        == set()
    )
    for layer, answer in answers.items():
        rid = answer.headers["X-Request-Id"]
        assert (answer.status, answer.headers["X-Clindav-Error"]) == (503, "audit-unavailable"), (
            layer,
            answer.status,
            answer.body[:200],
        )
        assert security_of(answer) == EXPECTED, layer
        assert answer.body.startswith(b"503 audit-unavailable: "), layer
        assert answer.body.endswith(f"\nrequest id: {rid}\n".encode()), layer


# --- in front of the gateway: a layer that gives requests their ids --------------------


@contextlib.contextmanager
def serving(instance: Instance, app: Any, *, tls: bool) -> Iterator[str]:
    """``app`` on clindav's HTTP server in this process, on a free loopback port."""
    settings = load_settings(instance.config)
    server: Server = make_server(settings, app, host="127.0.0.1", port=0, tls=tls)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.bind_addr[1]}"
    finally:
        server.stop()
        thread.join(10)


def test_a_request_id_given_by_an_earlier_layer_is_the_one_used(instance: Instance) -> None:
    services = build_services(load_settings(instance.config))
    gateway_app = build_app(services)
    given = [f"{n:016x}" for n in range(0xFEED0000, 0xFEED0010)]
    remaining = iter(given)

    def front(environ: dict[str, Any], start_response: Any) -> Any:
        environ[REQUEST_ID] = next(remaining)
        return gateway_app(environ, start_response)

    with serving(instance, front, tls=False) as url:
        alice, auditor = requests.Session(), requests.Session()
        alice.auth, auditor.auth = ("alice", PASSWORD), ("audrey", PASSWORD)
        answers = [
            alice.put(f"{url}/documents/b.txt", data=b"b"),
            alice.get(f"{url}/documents/b.txt"),
            alice.get(f"{url}/documents/%ff"),
            auditor.get(f"{url}/documents/b.txt"),
            alice.get(f"{url}/documents/missing.txt"),
        ]
    assert [r.status_code for r in answers] == [201, 200, 400, 403, 404]
    assert [r.headers["X-Request-Id"] for r in answers] == given[: len(answers)]
    events = events_by_request(instance)
    for r in answers:
        assert [e.status for e in events[r.headers["X-Request-Id"]]] == [r.status_code]


# --- an app serving HTML pages ---------------------------------------------------------


def test_an_app_serving_pages_gets_the_page_headers(instance: Instance) -> None:
    pages = Flask("pages")

    @pages.get("/app/")
    def home() -> str:
        return "<!doctype html><title>clindav</title><p>staff console</p>"

    def front(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/app/refused":
            refused = error_answer(
                403, "forbidden", "No.", request_id(environ), https=is_https(environ)
            )
            return refused.send(start_response)
        return pages.wsgi_app(environ, start_response)

    page_csp = dict(PAGE_HEADERS)["Content-Security-Policy"]
    with serving(instance, SecurityHeaders(front, extra=PAGE_HEADERS), tls=True) as url:
        s = requests.Session()
        s.trust_env, s.verify = False, False
        answers = [s.get(f"{url}/app/"), s.get(f"{url}/app/refused"), s.get(f"{url}/app/none")]
    assert [r.status_code for r in answers] == [200, 403, 404]
    for r in answers:
        assert security_of(Answer.of(r)) == {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": page_csp,  # in place of the sandbox, not beside it
            "Strict-Transport-Security": "max-age=31536000",
            "Referrer-Policy": "no-referrer",
        }, r.url
    refused = answers[1]
    assert refused.headers["X-Clindav-Error"] == "forbidden"
    assert refused.text == f"403 forbidden: No.\nrequest id: {refused.headers['X-Request-Id']}\n"
