"""Slow clients cannot starve the gateway behind the shipped production layout.

50 connections that trickle their headers (a bounded slowloris, loopback
only) are opened against (a) nginx configured from deploy/nginx-clindav.conf
in front of clindav, and (b) clindav alone.  A normal GET through the
production layout must complete in under a second; the figure for clindav
alone is reported (its worker threads are held by the slow clients until
``server.socket_timeout``), not asserted.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, Gateway, Instance, require_tool, start_gateway

SLOW_CLIENTS = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_conf(instance: Instance, gateway_port: int, port: int, prefix: Path) -> Path:
    """The shipped site config, pointed at this test's ports, certificate and folders."""
    site = (REPO / "deploy" / "nginx-clindav.conf").read_text()
    cert, key = instance.folder / "tls" / "cert.pem", instance.folder / "tls" / "key.pem"
    replacements = [
        (r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        (r"listen \[::\]:443 ssl;", ""),
        (r"server 127\.0\.0\.1:8443;", f"server 127.0.0.1:{gateway_port};"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};"),
        (r"proxy_ssl_trusted_certificate\s+\S+;", f"proxy_ssl_trusted_certificate {cert};"),
        (r"access_log\s+\S+\s+clindav;", f"access_log {prefix}/access.log clindav;"),
    ]
    for pattern, value in replacements:
        site, count = re.subn(pattern, value, site)
        assert count == 1 or not value, f"deploy/nginx-clindav.conf no longer has {pattern}"
    (prefix / "site.conf").write_text(site)
    main = prefix / "nginx.conf"
    main.write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{}}\n"
        f"http {{\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
        f"  include {prefix}/site.conf;\n}}\n"
    )
    return main


@contextlib.contextmanager
def behind_nginx(instance: Instance, gateway: Gateway, prefix: Path) -> Iterator[str]:
    """nginx with the shipped config in front of ``gateway`` (TLS); yields its URL."""
    nginx = require_tool("nginx")
    port = free_port()
    conf = nginx_conf(instance, gateway.port, port, prefix)
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def production(instance: Instance, tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    gw = start_gateway(instance, tls=True)
    try:
        with behind_nginx(instance, gw, tmp_path) as url:
            yield gw, url
    finally:
        gw.stop()


def slowloris(port: int, stop: threading.Event, *, tls: bool) -> list[socket.socket]:
    """Open the slow connections; a thread trickles one header byte a second."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conns = []
    for _ in range(SLOW_CLIENTS):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn = context.wrap_socket(raw, server_hostname="localhost") if tls else raw
        conn.sendall(b"GET /documents/ HTTP/1.1\r\nHost: localhost\r\n")
        conns.append(conn)

    def trickle() -> None:
        for _ in range(30):  # bounded: at most 30 s
            if stop.wait(1.0):
                return
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.sendall(b"X-Slow: a\r\n")

    threading.Thread(target=trickle, daemon=True).start()
    return conns


def timed_get(url: str, auth: tuple[str, str], verify: str | bool) -> float:
    session = requests.Session()
    session.trust_env = False  # loopback: no proxy or CA bundle from the environment
    start = time.monotonic()
    try:
        r = session.get(url, auth=auth, verify=verify, timeout=15)
        assert r.status_code == 200
    except requests.RequestException:
        return 15.0
    return time.monotonic() - start


def test_slow_clients_do_not_starve_the_production_layout(production, capsys) -> None:
    gw, proxy_url = production
    from tests.conftest import PASSWORD

    s = gw.session()
    assert s.put(f"{gw.url}/documents/page.txt", data=b"hello").status_code == 201
    auth = ("alice", PASSWORD)
    assert timed_get(f"{proxy_url}/documents/page.txt", auth, False) < 5  # warm
    results = {}
    for name, port, url in (
        ("behind nginx", int(proxy_url.rsplit(":", 1)[1]), f"{proxy_url}/documents/page.txt"),
        ("clindav alone", gw.port, f"{gw.url}/documents/page.txt"),
    ):
        stop = threading.Event()
        conns = slowloris(port, stop, tls=True)
        time.sleep(1.5)
        results[name] = timed_get(url, auth, False)
        stop.set()
        for conn in conns:
            conn.close()
        time.sleep(0.5)
    with capsys.disabled():
        print(
            f"\nGET with {SLOW_CLIENTS} slow clients open: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in results.items())
        )
    assert results["behind nginx"] < 1.0, results
