"""Behind the shipped nginx config (deploy/nginx-clindav.conf), every door works and
clindav sees each client's own address.

Real nginx in front of the real gateway, over TLS; the clients connect from
127.0.0.2 and 127.0.0.3 (loopback addresses of their own), so what clindav
records can be told apart from the proxy's 127.0.0.1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import PASSWORD, Gateway, Instance, start_in_process
from tests.integration.test_console_http import form_token
from tests.integration.test_slow_clients import behind_nginx

GUESSER, COLLEAGUE = "127.0.0.2", "127.0.0.3"


class _From(HTTPAdapter):
    """Connections from one loopback address."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)


def client(address: str, auth: tuple[str, str] | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback: no proxy or CA bundle from the environment
    s.verify = False  # nginx serves the instance's self-signed certificate
    s.mount("https://", _From(address))
    s.auth = auth
    return s


def recorded(instance: Instance) -> list[tuple[str, str, str, int]]:
    """(action, actor, client, status) of every audit event."""
    with sqlite3.connect(instance.folder / "clindav.db") as db:
        rows = db.execute("SELECT action, actor, client, status FROM audit_event ORDER BY seq")
        return [(a, u, c, s) for a, u, c, s in rows]


def refused_from(instance: Instance) -> set[str]:
    """The client addresses of the refused logins (401) and throttled requests (429)."""
    return {c for _, _, c, status in recorded(instance) if status in (401, 429)}


def start_behind_nginx(
    instance: Instance, tmp_path: Path, trusted: list[str]
) -> Iterator[tuple[Gateway, str]]:
    data = instance.settings()
    data.setdefault("server", {})["trusted_proxies"] = trusted
    # A small per-address limit and a large per-user one: the address is what counts here.
    data.setdefault("auth", {})["throttle"] = {
        "max_failures_per_user": 100,
        "max_failures_per_address": 3,
        "window": 300,
    }
    instance.write_settings(data)
    gateway: Gateway = start_in_process(instance, tls=True)
    try:
        with behind_nginx(instance, gateway, tmp_path) as url:
            yield gateway, url
    finally:
        gateway.stop()


@pytest.fixture
def proxied(instance: Instance, tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    """The example deployment: nginx on this host, trusted (deploy/clindav.example.yaml)."""
    yield from start_behind_nginx(instance, tmp_path, ["127.0.0.1"])


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_the_console_and_the_apps_sign_in_through_the_proxy(
    proxied: tuple[Gateway, str], instance: Instance
) -> None:
    gateway, proxied_url = proxied
    browser = client(COLLEAGUE)
    page = browser.get(f"{proxied_url}/app/sign-in")
    assert page.status_code == 200
    signed_in = browser.post(
        f"{proxied_url}/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": PASSWORD},
        allow_redirects=False,
    )
    assert signed_in.status_code == 303, signed_in.text
    assert browser.get(f"{proxied_url}/app/").status_code == 200
    assert ("LOGIN", "alice", COLLEAGUE, 200) in recorded(instance)

    # Login Flow v2 (a POST) gives the apps the proxy's address, not clindav's own port.
    flow = client(COLLEAGUE).post(f"{proxied_url}/index.php/login/v2")
    assert flow.status_code == 200, flow.text
    assert flow.json()["login"].startswith(f"{proxied_url}/")
    assert flow.json()["poll"]["endpoint"] == f"{proxied_url}/index.php/login/v2/poll"
    # A chunked upload's final MOVE goes from the apps' door on to the WebDAV stack:
    # its forwarding headers are judged once, so the client's own (loopback) address
    # is not taken for an untrusted proxy.
    phone = client(COLLEAGUE, ("alice", PASSWORD))
    transfer = f"{proxied_url}/remote.php/dav/uploads/alice/7a1e2b3c"
    assert phone.request("MKCOL", transfer).status_code == 201
    assert phone.put(f"{transfer}/00001", data=b"a chunk of notes").status_code == 201
    final = phone.request(
        "MOVE",
        f"{transfer}/.file",
        headers={
            "Destination": f"{proxied_url}/remote.php/dav/files/alice/documents/notes.txt",
            "OC-Total-Length": "16",
        },
    )
    assert final.status_code == 201, final.text
    assert ("PUT", "alice", COLLEAGUE, 201) in recorded(instance)
    assert "X-Forwarded-For" not in gateway.log()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_one_guesser_behind_the_proxy_is_throttled_alone(
    proxied: tuple[Gateway, str], instance: Instance
) -> None:
    _gateway, proxied_url = proxied
    guesses = [
        client(GUESSER, (f"name-{i}", "wrong")).request("PROPFIND", f"{proxied_url}/documents/")
        for i in range(5)
    ]
    assert [r.status_code for r in guesses] == [401, 401, 401, 429, 429]
    colleague = client(COLLEAGUE, ("alice", PASSWORD))
    answer = colleague.request("PROPFIND", f"{proxied_url}/documents/", headers={"Depth": "0"})
    assert answer.status_code == 207
    assert refused_from(instance) == {GUESSER}
    assert ("PROPFIND", "alice", COLLEAGUE, 207) in recorded(instance)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_an_untrusted_proxy_makes_every_client_one(instance: Instance, tmp_path: Path) -> None:
    """Why the example settings trust the proxy: without it, one guesser locks out all,
    and the gateway's log says so, once, with the setting that fixes it."""
    for gateway, url in start_behind_nginx(instance, tmp_path, []):
        for i in range(3):
            client(GUESSER, (f"name-{i}", "wrong")).request("PROPFIND", f"{url}/documents/")
        colleague = client(COLLEAGUE, ("alice", PASSWORD))
        answer = colleague.request("PROPFIND", f"{url}/documents/", headers={"Depth": "0"})
        assert answer.status_code == 429
        assert refused_from(instance) == {"127.0.0.1"}
        warnings = [line for line in gateway.log().splitlines() if "X-Forwarded-For" in line]
        assert len(warnings) == 1, warnings
        assert "server.trusted_proxies does not list 127.0.0.1" in warnings[0]
