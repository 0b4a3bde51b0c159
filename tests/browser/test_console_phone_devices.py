"""Devices in Chromium: connect a phone by its QR code, then revoke it; an admin revokes one.

The phone is a requests client signing in to WebDAV with what the page showed;
the QR code as Chromium draws it is read back by ``zbarimg`` (Debian's
zbar-tools), as a phone's camera would read the screen.  With
CLINDAV_SCREENSHOTS set this saves the pictures of docs/CONSOLE.md.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.browser.conftest import Console
from tests.conftest import Gateway


def _dav_status(gateway: Gateway, secret: str) -> int:
    phone = gateway.session("alice", secret)
    url = f"{gateway.url}/remote.php/dav/files/alice/"
    return phone.request("PROPFIND", url, headers={"Depth": "0"}).status_code


def _connect(console: Console, device: str) -> str:
    page = console.open("/devices")
    page.fill("#connect-form input[name=device]", device)
    page.click("#connect-phone")
    assert page.inner_text("h1") == f"Connect {device}"
    return page.inner_text("#password")


def _scanned(console: Console, folder: Path) -> str:
    """The text of the QR code on the page, decoded from a picture of the screen."""
    picture = folder / "qr.png"
    console.page.locator("#qr svg").screenshot(path=str(picture))
    read = subprocess.run(
        ["zbarimg", "--raw", "-q", str(picture)], capture_output=True, text=True, check=True
    )
    return read.stdout.strip()


def test_a_clinician_connects_a_phone_and_revokes_it(console: Console, tmp_path: Path) -> None:
    gateway = console.gateway
    page = console.sign_in("alice")
    page.click("nav.menu >> text=Devices")
    assert page.inner_text("#device-count") == "0"
    assert page.locator("#all-devices").count() == 0  # every account's: admins only

    secret = _connect(console, "ward phone 3")
    box = page.locator("#qr svg").bounding_box()
    assert box is not None and box["width"] >= 150  # big enough to scan from the screen
    assert page.inner_text("#server") == gateway.url
    assert page.inner_text("#user") == "alice"
    scanned = _scanned(console, tmp_path)
    assert scanned == f"nc://login/user:alice&password:{secret}&server:{gateway.url}"
    console.screenshot("devices-connect")
    assert _dav_status(gateway, secret) == 207

    page.click("#done")
    console.screenshot("devices")
    row = page.locator("#my-devices tr:has(td.label:text-is('ward phone 3'))")
    assert row.count() == 1 and secret not in page.content()
    row.locator("button.revoke").click()
    assert "Revoked ward phone 3 (alice)" in page.inner_text("main")
    assert page.inner_text("#device-count") == "0"
    assert _dav_status(gateway, secret) == 401


def test_an_admin_revokes_a_lost_phone_from_the_users_page(
    console: Console, open_console: Callable[[Gateway], Console]
) -> None:
    gateway = console.gateway
    console.sign_in("alice")
    secret = _connect(console, "lost phone")

    admin = open_console(gateway)
    admin.sign_in("root-admin")
    page = admin.open("/users/alice")
    page.locator("#devices tr:has(td.label:text-is('lost phone')) button.revoke").click()
    assert page.url.endswith("/app/users/alice")
    assert "Revoked lost phone (alice)" in page.inner_text("main")
    assert page.locator("#devices tr[data-device]").count() == 0
    assert _dav_status(gateway, secret) == 401
