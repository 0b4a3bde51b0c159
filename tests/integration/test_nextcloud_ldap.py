"""App passwords of directory (LDAP) accounts: the same authenticator, throttle and 503.

A real slapd (tests/ldap_server.py).  The device signs in through the console
with the directory password (Login Flow v2), or gets an app password from the
command line; either works on OCS and WebDAV, its groups come from the
directory, wrong app passwords are throttled like wrong passwords, and with
the directory down an app password is refused with 503, never accepted blind.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, Instance, run_cli, start_in_process
from tests.integration.test_console_http import browser_session, form_token, sign_in
from tests.integration.test_dav_methods import small_jpeg
from tests.integration.test_ldap import ldap_instance, slapd  # noqa: F401 - fixtures
from tests.integration.test_nextcloud_files import listing
from tests.integration.test_nextcloud_login import events
from tests.ldap_server import PASSWORDS, Slapd


@pytest.fixture(scope="module")
def gateway_ldap(ldap_instance: Instance) -> Iterator[Gateway]:  # noqa: F811 - the fixture
    gw = start_in_process(ldap_instance)
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


def _stored(gw: Gateway, share: str) -> list[str]:
    with sqlite3.connect(gw.instance.folder / "clindav.db") as db:
        rows = db.execute(
            "SELECT logical_path FROM stored_object WHERE share = ? ORDER BY id", (share,)
        ).fetchall()
    return [path for (path,) in rows]


@pytest.mark.parametrize("typed", ["Alice", "ALICE"])
def test_a_differently_spelled_sign_in_has_its_own_tree_under_the_legacy_root(
    gateway_ldap: Gateway, typed: str
) -> None:
    """The directory matches "Alice" to the account ``alice``: the legacy root, its
    camera inbox and its Destinations are alice's, never a 403 for the spelling."""
    gw = gateway_ldap
    s = gw.session(typed, PASSWORDS["alice"])
    legacy = gw.url + "/remote.php/webdav"
    root = listing(s, legacy + "/")
    assert "/remote.php/webdav/Camera%20inbox/" in root
    assert "/remote.php/webdav/documents/" in root
    put = s.put(f"{legacy}/Camera%20inbox/{typed}.jpg", data=small_jpeg())
    assert put.status_code == 201, put.text
    assert f"/alice/{typed}.jpg" in _stored(gw, "inbox")
    inbox = listing(s, f"{legacy}/Camera%20inbox/")
    assert f"/remote.php/webdav/Camera%20inbox/{typed}.jpg" in inbox
    moved = s.request(
        "MOVE",
        f"{legacy}/Camera%20inbox/{typed}.jpg",
        headers={"Destination": f"{legacy}/Camera%20inbox/{typed}-moved.jpg"},
    )
    assert moved.status_code == 201, moved.text
    # The apps take the account's id from OCS and address files/<id>: alice's.
    user = s.get(gw.url + "/ocs/v2.php/cloud/user?format=json").json()["ocs"]["data"]
    assert user["id"] == "alice"
    canonical = gw.url + "/remote.php/dav/files/alice"
    assert f"/remote.php/dav/files/alice/Camera%20inbox/{typed}-moved.jpg" in listing(
        s, canonical + "/Camera%20inbox/"
    )
    # A Destination in files/alice, from the legacy root, and the other way round.
    filed = s.request(
        "MOVE",
        f"{legacy}/Camera%20inbox/{typed}-moved.jpg",
        headers={"Destination": f"{canonical}/Camera%20inbox/{typed}-filed.jpg"},
    )
    assert filed.status_code == 201, filed.text
    back = s.request(
        "COPY",
        f"{canonical}/Camera%20inbox/{typed}-filed.jpg",
        headers={"Destination": f"{legacy}/Camera%20inbox/{typed}-copy.jpg"},
    )
    assert back.status_code == 201, back.text
    assert {f"/alice/{typed}-filed.jpg", f"/alice/{typed}-copy.jpg"} <= set(_stored(gw, "inbox"))
    assert not any(path.startswith(f"/{typed}/") for path in _stored(gw, "inbox"))


def test_a_differently_spelled_sign_in_still_reaches_no_one_elses_files(
    gateway_ldap: Gateway,
) -> None:
    gw = gateway_ldap
    frank = gw.session("frank", PASSWORDS["frank"])
    assert frank.put(gw.url + "/remote.php/webdav/Camera%20inbox/franks.jpg", data=small_jpeg()).ok
    s = gw.session("ALICE", PASSWORDS["alice"])
    for path in ("/remote.php/dav/files/frank/", "/remote.php/dav/files/ALICE/"):
        refused = s.request("PROPFIND", gw.url + path, headers={"Depth": "0"})
        assert refused.status_code == 403, path
        assert refused.headers["X-Clindav-Error"] == "other-users-files"
    assert (
        "franks.jpg"
        not in s.request(
            "PROPFIND", gw.url + "/remote.php/webdav/Camera%20inbox/", headers={"Depth": "1"}
        ).text
    )
    into_franks = s.request(
        "COPY",
        gw.url + "/remote.php/webdav/documents/",
        headers={"Destination": gw.url + "/remote.php/dav/files/frank/Camera%20inbox/x/"},
    )
    assert into_franks.status_code == 403, into_franks.text
    assert s.get(gw.url + "/inbox/frank/franks.jpg").status_code == 404
