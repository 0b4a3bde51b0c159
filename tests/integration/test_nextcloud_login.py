"""The Nextcloud apps' discovery and sign-in, replayed as the apps send it (../shared/NEXTCLOUD.md §3, §6).

status.php, capabilities v1/v2 (JSON and XML), cloud/user, index.php/204,
Login Flow v2 through the console to an app password, the app password on
WebDAV and OCS, its revocation by the device and by the command line, and
what the database keeps of it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import xml.etree.ElementTree as ET

import requests

from tests.conftest import PASSWORD, Gateway, Instance, run_cli, start_in_process
from tests.integration.test_console_http import browser_session, form_token, sign_in

OCS = {"OCS-APIREQUEST": "true"}
UA = "Mozilla/5.0 (Android) Nextcloud-android/3.30.1"


def events(inst: Instance, action: str) -> list[tuple[str, int, str, str]]:
    with sqlite3.connect(inst.folder / "clindav.db") as db:
        return db.execute(
            "SELECT actor, status, code, details FROM audit_event WHERE action = ? ORDER BY seq",
            (action,),
        ).fetchall()


def table(inst: Instance, name: str) -> list[tuple]:
    with sqlite3.connect(inst.folder / "clindav.db") as db:
        return db.execute(f"SELECT * FROM {name}").fetchall()


def test_status_and_capabilities_as_the_clients_read_them(gateway: Gateway) -> None:
    anon = gateway.session(user=None)
    for path in ("/status.php", "/nextcloud/status.php"):
        status = anon.get(gateway.url + path)
        assert status.status_code == 200
        body = status.json()
        assert body["installed"] is True and body["maintenance"] is False
        assert tuple(int(p) for p in body["version"].split(".")) >= (16,)
        assert status.headers["X-Content-Type-Options"] == "nosniff"
    # nextcloudcmd sends Basic pre-emptively even here: still answered.
    assert gateway.session().get(gateway.url + "/status.php").json()["installed"] is True

    for version, code in ((1, 100), (2, 200)):
        url = f"{gateway.url}/ocs/v{version}.php/cloud/capabilities?format=json"
        caps = anon.get(url, headers=OCS)
        assert caps.status_code == 200, caps.text
        ocs = caps.json()["ocs"]
        assert ocs["meta"]["statuscode"] == code
        data = ocs["data"]
        assert isinstance(data["version"]["string"], str)
        assert isinstance(data["version"]["major"], int) and data["version"]["major"] >= 16
        assert data["capabilities"]["dav"] == {"chunking": "1.0"}  # never bulkupload
        for absent in ("end-to-end-encryption", "files_sharing", "notifications"):
            assert absent not in data["capabilities"]
        assert "locking" not in data["capabilities"]["files"]
        assert data["capabilities"]["core"]["status"]["installed"] is True

    xml = anon.get(gateway.url + "/ocs/v1.php/cloud/capabilities", headers=OCS)
    assert xml.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(xml.content)
    assert root.findtext("meta/statuscode") == "100"
    assert root.findtext("data/capabilities/dav/chunking") == "1.0"

    probe = anon.get(gateway.url + "/index.php/204", allow_redirects=False)
    assert probe.status_code == 204 and probe.content == b""
    # Features clindav lacks are plain 404s the apps tolerate.
    for path in ("/ocs/v2.php/apps/notifications/api/v2/notifications", "/index.php/avatar/x/64"):
        assert anon.get(gateway.url + path, headers=OCS).status_code == 404


def test_cloud_user_needs_the_account_and_names_the_dav_user(gateway: Gateway) -> None:
    url = gateway.url + "/ocs/v1.php/cloud/user?format=json"
    bare = gateway.session(user=None).get(url, headers=OCS)
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = gateway.session(password="not the password").get(url, headers=OCS)
    assert wrong.status_code == 401
    # Audited as WebDAV's failed logins are (no principal; the reason names the user).
    assert [e[1:3] for e in events(gateway.instance, "LOGIN")] == [(401, "authentication-required")]
    for version in (1, 2):
        user = gateway.session().get(
            f"{gateway.url}/ocs/v{version}.php/cloud/user?format=json", headers=OCS
        )
        assert user.status_code == 200
        data = user.json()["ocs"]["data"]
        assert data["id"] == "alice" and data["display-name"] == "alice"
        assert data["quota"]["quota"] == -3


def start_flow(gateway: Gateway) -> tuple[str, str, str]:
    start = gateway.session(user=None).post(
        gateway.url + "/index.php/login/v2", headers={"User-Agent": UA}
    )
    assert start.status_code == 200, start.text
    body = start.json()
    assert body["poll"]["endpoint"] == gateway.url + "/index.php/login/v2/poll"
    assert body["login"].startswith(gateway.url + "/app/nextcloud/login/")
    return body["poll"]["token"], body["poll"]["endpoint"], body["login"]


def poll(gateway: Gateway, endpoint: str, token: str) -> requests.Response:
    return gateway.session(user=None).post(endpoint, data={"token": token})


def test_login_flow_v2_gives_a_device_an_app_password_once(gateway: Gateway) -> None:
    inst = gateway.instance
    token, endpoint, login = start_flow(gateway)
    assert poll(gateway, endpoint, token).status_code == 404  # not granted yet

    # The phone's browser: not signed in, so the console's sign-in first, then back here.
    browser = browser_session(gateway)
    first = browser.get(login, allow_redirects=False)
    assert first.status_code == 303 and first.headers["Location"].endswith("/app/sign-in")
    page = browser.get(gateway.url + "/app/sign-in")
    signed = browser.post(
        gateway.url + "/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": PASSWORD},
        allow_redirects=False,
    )
    assert signed.status_code == 303
    assert gateway.url + signed.headers["Location"] == login
    grant_page = browser.get(login)
    assert grant_page.status_code == 200 and "Nextcloud-android" in grant_page.text
    granted = browser.post(login, data={"csrf_token": form_token(grant_page.text)})
    assert granted.status_code == 200 and 'id="granted"' in granted.text

    # What the database holds between the grant and the poll: no password.
    flows = table(inst, "login_flow")
    assert len(flows) == 1 and token not in repr(flows)

    answer = poll(gateway, endpoint, token)
    assert answer.status_code == 200
    creds = answer.json()
    assert creds["server"] == gateway.url and creds["loginName"] == "alice"
    secret = creds["appPassword"]
    assert re.fullmatch(r"[a-z0-9]{5}(-[a-z0-9]{5}){4}", secret)
    assert secret.encode() not in (inst.folder / "clindav.db").read_bytes()
    assert poll(gateway, endpoint, token).status_code == 404  # single use
    assert table(inst, "login_flow") == []

    device = gateway.session("alice", secret)
    assert (
        device.get(gateway.url + "/ocs/v1.php/cloud/user?format=json").json()["ocs"]["data"]["id"]
        == "alice"
    )
    listing = device.request("PROPFIND", gateway.url + "/clinical/", headers={"Depth": "1"})
    assert listing.status_code == 207
    issued = events(inst, "APP-PASSWORD")
    assert len(issued) == 1 and issued[0][:3] == ("alice", 200, "ok")
    details = json.loads(issued[0][3])
    # Recorded as every door records an issued device: the account, the device, the change.
    assert (details["change"], details["uid"]) == ("issued", "alice")
    assert "Nextcloud-android" in details["device"]

    # Removing the account on the device revokes its app password, at once.
    assert (
        device.delete(gateway.url + "/ocs/v2.php/core/apppassword", headers=OCS).status_code == 200
    )
    assert device.get(gateway.url + "/ocs/v1.php/cloud/user").status_code == 401
    assert (
        device.request("PROPFIND", gateway.url + "/clinical/", headers={"Depth": "0"}).status_code
        == 401
    )
    assert '"revoked"' in events(inst, "APP-PASSWORD")[-1][3]
    assert table(inst, "app_password") == []


def test_a_flow_for_a_token_never_issued_is_refused(gateway: Gateway) -> None:
    browser = browser_session(gateway)
    page = browser.get(gateway.url + "/app/sign-in")
    browser.post(
        gateway.url + "/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": PASSWORD},
    )
    forged = browser.get(gateway.url + "/app/nextcloud/login/" + "0" * 64)
    assert forged.status_code == 404
    assert forged.headers["X-Clindav-Error"] == "login-flow-unknown"
    assert poll(gateway, gateway.url + "/index.php/login/v2/poll", "nope").status_code == 404


def test_a_flow_is_granted_once_by_its_first_user(gateway: Gateway) -> None:
    """Whoever else opens the device's sign-in address later (a shared computer's history, a
    look over the shoulder) cannot put their own account on the device instead."""
    token, endpoint, login = start_flow(gateway)
    alice, ivy = sign_in(gateway, "alice"), sign_in(gateway, "ivy")
    pages = [who.get(login) for who in (alice, ivy)]
    assert [page.status_code for page in pages] == [200, 200]
    granted = alice.post(login, data={"csrf_token": form_token(pages[0].text)})
    assert granted.status_code == 200
    again = ivy.post(login, data={"csrf_token": form_token(pages[1].text)})
    assert again.status_code == 404 and again.headers["X-Clindav-Error"] == "login-flow-unknown"
    assert ivy.get(login).status_code == 404  # a granted flow is no longer offered
    assert poll(gateway, endpoint, token).json()["loginName"] == "alice"
    refused = [e for e in events(gateway.instance, "APP-PASSWORD") if e[2] == "login-flow-unknown"]
    assert [(actor, status) for actor, status, _code, _details in refused] == [("ivy", 404)]
    # Only alice's device password was issued: none of ivy's waits unused.
    assert [row[1] for row in table(gateway.instance, "app_password")] == ["alice"]


def test_flows_started_per_address_are_limited(instance: Instance) -> None:
    """Starting a flow needs no account and writes a row: without a limit, one client fills
    the database for as long as nextcloud.login_flow_timeout keeps the rows."""
    settings = instance.settings()
    settings["server"]["trusted_proxies"] = ["127.0.0.1"]
    settings["nextcloud"] = {**settings.get("nextcloud", {}), "login_flow_rate": 3}
    instance.write_settings(settings)
    gw = start_in_process(instance)
    try:
        starts = [_start_from(gw, "192.0.2.9").status_code for _ in range(5)]
        assert starts == [200, 200, 200, 429, 429]
        refused = _start_from(gw, "192.0.2.9")
        assert refused.headers["X-Clindav-Error"] == "login-flow-rate-limited"
        assert len(table(instance, "login_flow")) == 3
        assert _start_from(gw, "198.51.100.4").status_code == 200  # another address
        with sqlite3.connect(instance.folder / "clindav.db") as db:
            audited = db.execute(
                "SELECT client, status FROM audit_event WHERE code = 'login-flow-rate-limited'"
            ).fetchall()
        assert audited == [("192.0.2.9", 429)] * 3
    finally:
        gw.stop()


def _start_from(gw: Gateway, address: str) -> requests.Response:
    return gw.session(user=None).post(
        gw.url + "/index.php/login/v2", headers={"User-Agent": UA, "X-Forwarded-For": address}
    )


def test_the_account_password_cannot_be_revoked_as_a_device(gateway: Gateway) -> None:
    answer = gateway.session().delete(gateway.url + "/ocs/v2.php/core/apppassword")
    assert answer.status_code == 403
    assert answer.headers["X-Clindav-Error"] == "not-an-app-password"
    assert gateway.session().get(gateway.url + "/ocs/v1.php/cloud/user").status_code == 200


def test_command_line_app_passwords_issue_list_revoke(gateway: Gateway) -> None:
    inst = gateway.instance
    made = run_cli("user", "app-password", "alice", "--device", "ward phone 3", config=inst.config)
    secret = re.search(r": ([a-z0-9-]{29})$", made.stdout.splitlines()[0])
    assert secret, made.stdout
    device = gateway.session("alice", secret.group(1))
    assert (
        device.request("PROPFIND", gateway.url + "/clinical/", headers={"Depth": "0"}).status_code
        == 207
    )
    # The same secret under another user's name is no login.
    other = gateway.session("ivy", secret.group(1))
    assert (
        other.request("PROPFIND", gateway.url + "/clinical/", headers={"Depth": "0"}).status_code
        == 401
    )

    listed = run_cli("user", "app-password", "alice", "--list", config=inst.config).stdout
    ident = listed.split("\t")[0]
    assert "ward phone 3" in listed and secret.group(1) not in listed
    run_cli("user", "app-password", "alice", "--revoke", ident, config=inst.config)
    assert (
        device.request("PROPFIND", gateway.url + "/clinical/", headers={"Depth": "0"}).status_code
        == 401
    )
    changes = [e[3] for e in events(inst, "APP-PASSWORD")]
    assert '"issued"' in changes[0] and '"revoked"' in changes[1]

    unknown = run_cli("user", "app-password", "nobody", config=inst.config, check=False)
    assert unknown.returncode == 1 and "no enabled account" in unknown.stderr


def test_a_disabled_account_loses_its_devices(gateway: Gateway) -> None:
    inst = gateway.instance
    made = run_cli("user", "app-password", "alice", config=inst.config)
    secret = made.stdout.splitlines()[0].rsplit(" ", 1)[1]
    device = gateway.session("alice", secret)
    assert device.get(gateway.url + "/ocs/v2.php/cloud/user").status_code == 200
    run_cli("user", "disable", "alice", config=inst.config)
    assert device.get(gateway.url + "/ocs/v2.php/cloud/user").status_code == 401


def test_fail_closed_when_the_app_password_store_is_unreadable(gateway: Gateway) -> None:
    inst = gateway.instance
    made = run_cli("user", "app-password", "alice", config=inst.config)
    secret = made.stdout.splitlines()[0].rsplit(" ", 1)[1]
    with sqlite3.connect(inst.folder / "clindav.db") as db:
        db.execute("ALTER TABLE app_password RENAME TO app_password_away")
        db.execute("ALTER TABLE login_flow RENAME TO login_flow_away")
    try:
        device = gateway.session("alice", secret)
        answer = device.get(gateway.url + "/ocs/v1.php/cloud/user")
        assert answer.status_code == 503  # never a guess either way
        assert answer.headers["X-Clindav-Error"] == "database-unavailable"
        dav_answer = device.request("PROPFIND", dav_root(gateway), headers={"Depth": "0"})
        assert dav_answer.status_code == 503
        flow = gateway.session(user=None).post(gateway.url + "/index.php/login/v2")
        assert flow.status_code == 503
    finally:
        with sqlite3.connect(inst.folder / "clindav.db") as db:
            db.execute("ALTER TABLE app_password_away RENAME TO app_password")
            db.execute("ALTER TABLE login_flow_away RENAME TO login_flow")
    assert (
        gateway.session("alice", secret).get(gateway.url + "/ocs/v1.php/cloud/user").status_code
        == 200
    )


def dav_root(gateway: Gateway) -> str:
    return gateway.url + "/remote.php/dav/files/alice/"


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "dav.example.org"}


def test_behind_a_trusted_tls_proxy_the_flow_names_the_https_address(instance: Instance) -> None:
    """A TLS proxy before a plain clindav: the URLs the app is given are the proxy's
    (as Nextcloud's overwriteprotocol gives), from a trusted proxy only."""
    untrusted = start_in_process(instance)
    try:
        body = untrusted.session(user=None).post(
            untrusted.url + "/index.php/login/v2", headers=FORWARDED
        )
        assert body.json()["poll"]["endpoint"] == untrusted.url + "/index.php/login/v2/poll"
    finally:
        untrusted.stop()
    settings = instance.settings()
    settings["server"]["trusted_proxies"] = ["127.0.0.1"]
    instance.write_settings(settings)
    gw = start_in_process(instance)
    try:
        start = gw.session(user=None).post(
            gw.url + "/index.php/login/v2",
            headers={**FORWARDED, "X-Forwarded-Proto": "http, https"},  # the last is the proxy's
        )
        body = start.json()
        assert body["poll"]["endpoint"] == "https://dav.example.org/index.php/login/v2/poll"
        assert body["login"].startswith("https://dav.example.org/app/nextcloud/login/")
    finally:
        gw.stop()
