"""App passwords of directory (LDAP) accounts: the same authenticator, throttle and 503.

A real slapd (tests/ldap_server.py).  The device signs in through the console
with the directory password (Login Flow v2), or gets an app password from the
command line; either works on OCS and WebDAV, its groups come from the
directory, wrong app passwords are throttled like wrong passwords, and with
the directory down an app password is refused with 503, never accepted blind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, Instance, run_cli, start_gateway
from tests.integration.test_console_http import browser_session, form_token, sign_in
from tests.integration.test_ldap import ldap_instance, slapd  # noqa: F401 - fixtures
from tests.integration.test_nextcloud_login import events
from tests.ldap_server import PASSWORDS, Slapd


@pytest.fixture(scope="module")
def gateway_ldap(ldap_instance: Instance) -> Iterator[Gateway]:  # noqa: F811 - the fixture
    gw = start_gateway(ldap_instance)
    yield gw
    gw.stop()


def _cli_app_password(gw: Gateway, user: str) -> str:
    made = run_cli("user", "app-password", user, config=gw.instance.config)
    found = re.search(r": ([a-z0-9-]{29})$", made.stdout.splitlines()[0])
    assert found, made.stdout
    return found.group(1)


def test_directory_account_gets_an_app_password_by_login_flow(gateway_ldap: Gateway) -> None:
    gw = gateway_ldap
    start = gw.session(user=None).post(gw.url + "/index.php/login/v2").json()
    browser = browser_session(gw)
    page = browser.get(gw.url + "/app/sign-in")
    browser.post(
        gw.url + "/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": PASSWORDS["alice"]},
    )
    grant = browser.get(start["login"])
    assert grant.status_code == 200
    assert browser.post(start["login"], data={"csrf_token": form_token(grant.text)}).ok
    creds = gw.session(user=None).post(
        start["poll"]["endpoint"], data={"token": start["poll"]["token"]}
    )
    secret = creds.json()["appPassword"]
    device = gw.session("alice", secret)
    assert (
        device.get(gw.url + "/ocs/v2.php/cloud/user?format=json").json()["ocs"]["data"]["id"]
        == "alice"
    )
    put = device.put(gw.url + "/remote.php/dav/files/alice/documents/ldap-device.txt", data=b"x")
    assert put.status_code == 201, put.text


def test_command_line_app_password_of_a_directory_account(gateway_ldap: Gateway) -> None:
    gw = gateway_ldap
    secret = _cli_app_password(gw, "alice")
    listing = gw.session("alice", secret).request(
        "PROPFIND", gw.url + "/remote.php/dav/files/alice/", headers={"Depth": "0"}
    )
    assert listing.status_code == 207
    missing = run_cli("user", "app-password", "nobody-here", config=gw.instance.config, check=False)
    assert missing.returncode == 1


def test_an_admin_revokes_a_directory_accounts_device_in_the_console(
    gateway_ldap: Gateway,
) -> None:
    gw = gateway_ldap
    secret = _cli_app_password(gw, "frank")
    ident = run_cli("user", "app-password", "frank", "--list", config=gw.instance.config).stdout
    ident = ident.split("\t")[0]
    erin = sign_in(gw, "erin", PASSWORDS["erin"])  # admins, from the directory
    users = erin.get(gw.url + "/app/users").text
    assert 'href="/app/devices"' in users  # the users page points directory accounts there
    page = erin.get(gw.url + "/app/devices").text
    every = page[page.index('id="all-devices"') :]
    assert f'data-device="{ident}" data-user="frank"' in every
    revoked = erin.post(
        f"{gw.url}/app/devices/{ident}/revoke",
        data={"csrf_token": form_token(page)},
        allow_redirects=False,
    )
    assert revoked.status_code == 303
    assert gw.session("frank", secret).get(gw.url + "/ocs/v1.php/cloud/user").status_code == 401
    actor, status, _code, details = events(gw.instance, "APP-PASSWORD")[-1]
    assert (actor, status) == ("erin", 200)
    assert '"revoked"' in details and '"uid": "frank"' in details


def test_wrong_app_passwords_are_throttled_like_passwords(gateway_ldap: Gateway) -> None:
    gw = gateway_ldap
    secret = _cli_app_password(gw, "bob")
    wrong = "aaaaa-bbbbb-ccccc-ddddd-eeeee"
    codes = [
        gw.session("bob", wrong).get(gw.url + "/ocs/v1.php/cloud/user").status_code
        for _ in range(10)
    ]
    assert set(codes) == {401}
    assert gw.session("bob", secret).get(gw.url + "/ocs/v1.php/cloud/user").status_code == 429


def test_directory_down_refuses_app_passwords_with_503(gateway_ldap: Gateway, slapd: Slapd) -> None:  # noqa: F811
    gw = gateway_ldap
    secret = _cli_app_password(gw, "carol")
    slapd.stop()
    try:
        answer = gw.session("carol", secret).get(gw.url + "/ocs/v1.php/cloud/user")
        assert answer.status_code == 503
    finally:
        slapd.start()
    assert gw.session("carol", secret).get(gw.url + "/ocs/v1.php/cloud/user").status_code == 200
