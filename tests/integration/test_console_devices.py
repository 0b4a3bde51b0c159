"""The console's Devices page: connect a phone by QR code, list and revoke app passwords.

The real gateway; the phone is a requests client signing in to the Nextcloud
door and WebDAV with what the page showed.  No QR decoder is installed
(no zbarimg, zxingcpp or OpenCV), so the served QR code is read module by
module from its SVG and compared with the code of the text the page shows,
made by segno: equal matrices are the same text.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3

import requests
import segno

from tests.conftest import PASSWORD, Gateway, Instance, run_cli, start_in_process
from tests.integration.test_console_http import form_token, sign_in
from tests.integration.test_nextcloud_login import events, table

OCS = {"OCS-APIREQUEST": "true"}
LABEL_RULE = "Name the device in 1 to 128 printable characters."


def svg_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules (column, row) of segno's inline SVG: one path of horizontal runs."""
    path = re.search(r' d="([^"]+)"', svg)
    assert path, svg
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path.group(1)):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            dark.update((int(x) + i, int(y)) for i in range(int(a)))
            x += float(a)
    return dark


def code_modules(text: str) -> set[tuple[int, int]]:
    """The dark modules of ``text``'s QR code, inside the 4-module quiet zone."""
    matrix = segno.make(text, error="m").matrix
    return {(c + 4, r + 4) for r, row in enumerate(matrix) for c, bit in enumerate(row) if bit}


def shown(page: str, ident: str) -> str:
    found = re.search(rf'id="{ident}">([^<]*)<', page)
    assert found, page
    return html.unescape(found.group(1))


def connect(browser: requests.Session, gateway: Gateway, device: str) -> requests.Response:
    page = browser.get(f"{gateway.url}/app/devices")
    return browser.post(
        f"{gateway.url}/app/devices", data={"csrf_token": form_token(page.text), "device": device}
    )


def revoke(
    browser: requests.Session, gateway: Gateway, ident: int, **extra: str
) -> requests.Response:
    page = browser.get(f"{gateway.url}/app/devices")
    return browser.post(
        f"{gateway.url}/app/devices/{ident}/revoke",
        data={"csrf_token": form_token(page.text), **extra},
        allow_redirects=False,
    )


def dav_status(gateway: Gateway, user: str, secret: str) -> int:
    phone = gateway.session(user, secret)
    url = f"{gateway.url}/remote.php/dav/files/{user}/"
    return phone.request("PROPFIND", url, headers={"Depth": "0"}).status_code


def device_ids(gateway: Gateway, user: str) -> list[int]:
    return [row[0] for row in table(gateway.instance, "app_password") if row[1] == user]


def app_password_events(gateway: Gateway) -> list[tuple[str, int, str, dict]]:
    return [(a, s, c, json.loads(d)) for a, s, c, d in events(gateway.instance, "APP-PASSWORD")]


def test_a_phone_scans_its_login_which_works_until_revoked(gateway: Gateway) -> None:
    alice = sign_in(gateway)
    empty = alice.get(f"{gateway.url}/app/devices")
    assert empty.status_code == 200 and 'id="device-count">0<' in empty.text

    made = connect(alice, gateway, "ward phone 3")
    assert made.status_code == 201, made.text
    assert made.headers["Cache-Control"] == "no-store"
    server, user, secret = (shown(made.text, i) for i in ("server", "user", "password"))
    assert (server, user) == (gateway.url, "alice")
    login = f"nc://login/user:alice&password:{secret}&server:{gateway.url}"
    figure = re.search(r'<figure class="qr" id="qr">(<svg.*?</svg>)', made.text, re.S)
    assert figure, made.text
    assert svg_modules(figure.group(1)) == code_modules(login)
    assert secret.encode() not in (gateway.instance.folder / "clindav.db").read_bytes()

    # The phone signs in with what the code carries: the Nextcloud door and WebDAV.
    phone = gateway.session(user, secret)
    me = phone.get(f"{gateway.url}/ocs/v2.php/cloud/user?format=json", headers=OCS)
    assert me.status_code == 200 and me.json()["ocs"]["data"]["id"] == "alice"
    assert dav_status(gateway, "alice", secret) == 207

    listed = alice.get(f"{gateway.url}/app/devices").text
    [ident] = device_ids(gateway, "alice")
    assert f'data-device="{ident}"' in listed and "ward phone 3" in listed
    assert secret not in listed  # shown once, never again

    gone = revoke(alice, gateway, ident)
    assert gone.status_code == 303 and gone.headers["Location"].endswith("/app/devices")
    assert dav_status(gateway, "alice", secret) == 401
    assert phone.get(f"{gateway.url}/ocs/v2.php/cloud/user", headers=OCS).status_code == 401
    assert (
        run_cli("user", "app-password", "alice", "--list", config=gateway.instance.config).stdout
        == ""
    )

    issued, revoked = app_password_events(gateway)
    assert issued[:3] == ("alice", 200, "ok")
    assert issued[3] == {
        "change": "issued", "uid": "alice", "device": "ward phone 3", "console": True
    }  # fmt: skip
    assert revoked[:3] == ("alice", 200, "ok")
    assert revoked[3] == {"change": "revoked", "uid": "alice", "id": ident, "console": True}


def test_device_names_follow_the_command_lines_rule(gateway: Gateway) -> None:
    alice = sign_in(gateway)
    for bad in ("   ", "x" * 129, "tab\there"):
        refused = connect(alice, gateway, bad)
        assert refused.status_code == 400
        assert LABEL_RULE in refused.text and 'id="qr"' not in refused.text
    cli = run_cli(
        "user", "app-password", "alice", "--device", "   ", config=gateway.instance.config, check=False
    )  # fmt: skip
    assert cli.returncode == 1 and LABEL_RULE in cli.stderr
    assert table(gateway.instance, "app_password") == []
    refusals = app_password_events(gateway)
    assert [e[:3] for e in refusals] == [("alice", 400, "bad-request")] * 3
    assert refusals[0][3]["change"] == "issued"


def test_a_user_cannot_revoke_another_users_device(gateway: Gateway) -> None:
    made = run_cli(
        "user", "app-password", "ivy", "--device", "ivy's phone", config=gateway.instance.config
    )
    secret = made.stdout.splitlines()[0].rsplit(" ", 1)[1]
    [ident] = device_ids(gateway, "ivy")
    alice = sign_in(gateway)
    assert "ivy's phone" not in html.unescape(alice.get(f"{gateway.url}/app/devices").text)

    crafted = revoke(alice, gateway, ident)
    assert crafted.status_code == 403
    assert crafted.headers["X-Clindav-Error"] == "page-not-allowed"
    missing = revoke(alice, gateway, ident + 100)
    assert missing.status_code == 404
    assert dav_status(gateway, "ivy", secret) == 207
    assert device_ids(gateway, "ivy") == [ident]
    refused = [e for e in app_password_events(gateway) if e[0] == "alice"]
    assert [e[1:3] for e in refused] == [(403, "page-not-allowed"), (404, "not-found")]
    assert refused[0][3]["uid"] == "ivy" and refused[0][3]["change"] == "revoked"


def test_a_revoke_without_the_form_token_changes_nothing(gateway: Gateway) -> None:
    alice = sign_in(gateway)
    secret = shown(connect(alice, gateway, "ward phone 1").text, "password")
    [ident] = device_ids(gateway, "alice")
    for data in ({}, {"csrf_token": "forged"}):
        refused = alice.post(f"{gateway.url}/app/devices/{ident}/revoke", data=data)
        assert refused.status_code == 400
        assert refused.headers["X-Clindav-Error"] == "form-token-invalid"
    assert dav_status(gateway, "alice", secret) == 207
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        codes = db.execute(
            "SELECT actor, status FROM audit_event WHERE code = 'form-token-invalid'"
        ).fetchall()
    assert codes == [("alice", 400), ("alice", 400)]


def test_an_admin_sees_and_revokes_any_accounts_devices(gateway: Gateway) -> None:
    alice = sign_in(gateway)
    secret = shown(connect(alice, gateway, "ward phone 2").text, "password")
    [ident] = device_ids(gateway, "alice")
    admin = sign_in(gateway, "root-admin", PASSWORD)

    everyone = admin.get(f"{gateway.url}/app/devices").text
    every = everyone[everyone.index('id="all-devices"') :]
    assert f'data-device="{ident}" data-user="alice"' in every
    account = admin.get(f"{gateway.url}/app/users/alice").text
    assert f'data-device="{ident}"' in account and "ward phone 2" in account

    gone = revoke(admin, gateway, ident, back="user")
    assert gone.status_code == 303 and gone.headers["Location"].endswith("/app/users/alice")
    assert dav_status(gateway, "alice", secret) == 401
    actor, status, code, details = app_password_events(gateway)[-1]
    assert (actor, status, code) == ("root-admin", 200, "ok")
    assert details == {"change": "revoked", "uid": "alice", "id": ident, "console": True}
    # A clinician's "back to the user page" is only the Devices page.
    secret = shown(connect(alice, gateway, "ward phone 4").text, "password")
    [ident] = device_ids(gateway, "alice")
    mine = revoke(alice, gateway, ident, back="user")
    assert mine.headers["Location"].endswith("/app/devices")


def test_a_user_name_the_qr_login_cannot_carry_is_refused_before_issuing(
    gateway: Gateway,
) -> None:
    gateway.instance.add_user("o&neil", "clinicians")  # as a directory could name someone
    odd = sign_in(gateway, "o&neil", PASSWORD)
    refused = connect(odd, gateway, "ward phone 5")
    assert refused.status_code == 400
    assert "(user-name-not-qr-safe)" in refused.text
    assert "QR login cannot carry" in html.unescape(refused.text)
    assert table(gateway.instance, "app_password") == []
    [event] = app_password_events(gateway)
    assert event[:3] == ("o&neil", 400, "user-name-not-qr-safe")


def test_no_phone_is_connected_while_the_apps_door_is_off(instance: Instance) -> None:
    data = instance.settings()
    data["nextcloud"] = {**data.get("nextcloud", {}), "enabled": False}
    instance.write_settings(data)
    gateway = start_in_process(instance)
    try:
        alice = sign_in(gateway)
        page = alice.get(f"{gateway.url}/app/devices").text
        assert 'id="door-off"' in page and 'id="connect-form"' not in page
        crafted = alice.post(
            f"{gateway.url}/app/devices",
            data={"csrf_token": form_token(page), "device": "ward phone 6"},
        )
        assert crafted.status_code == 409 and 'id="qr"' not in crafted.text
        assert "(nextcloud-door-off)" in crafted.text
        assert table(instance, "app_password") == []
        [event] = app_password_events(gateway)
        assert event[:3] == ("alice", 409, "nextcloud-door-off")
    finally:
        gateway.stop()


def test_the_page_warns_when_a_phone_cannot_reach_its_address(gateway: Gateway) -> None:
    """Opened on the gateway host, the QR would carry 127.0.0.1: the page says so."""
    alice = sign_in(gateway)
    local = html.unescape(alice.get(f"{gateway.url}/app/devices").text)
    assert 'id="server-unreachable"' in local and "127.0.0.1, this machine's own" in local
    made = html.unescape(connect(alice, gateway, "ward phone 7").text)
    assert 'id="server-unreachable"' in made
    named = alice.get(f"{gateway.url}/app/devices", headers={"Host": "clindav.practice.test"})
    assert named.status_code == 200 and 'id="server-unreachable"' not in named.text
