"""When each device last signed in: noted by the real gateway, shown on the Devices page,
the user page and ``clindav user app-password NAME --list``.

A device is an app password issued on the console; the phone is a requests client
signing in to WebDAV with it.  Time moves through the instance clock, and the row's
stored value shows whether a request wrote it.
"""

from __future__ import annotations

import html
import re
import sqlite3

import requests

from gateway.auth.apppasswords import AppPasswords
from gateway.clock import instance_clock
from gateway.db import make_engine, make_sessions
from gateway.settings import load_settings
from tests.conftest import (
    PASSWORD,
    Gateway,
    Instance,
    InstanceClock,
    run_cli,
    start_in_process,
)
from tests.integration.test_console_devices import connect, dav_status, revoke, shown
from tests.integration.test_console_http import sign_in


def last_used(gateway: Gateway, ident: int) -> str | None:
    """The stored ``last_used_at`` of app password ``ident``, as the database holds it."""
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        row = db.execute("SELECT last_used_at FROM app_password WHERE id = ?", (ident,)).fetchone()
    assert row is not None, ident
    return row[0]


def shown_last_used(page: str, ident: int) -> str:
    """The Last used cell of device ``ident``'s row, as text."""
    row = re.search(rf'<tr data-device="{ident}".*?</tr>', page, re.S)
    assert row, page
    cell = re.search(r'<td class="last-used">(.*?)</td>', row.group(0), re.S)
    assert cell, row.group(0)
    return html.unescape(re.sub(r"<[^>]+>", "", cell.group(1))).strip()


def listed(gateway: Gateway, user: str) -> list[list[str]]:
    out = run_cli("user", "app-password", user, "--list", config=gateway.instance.config).stdout
    return [line.split("\t") for line in out.splitlines()]


def a_device(gateway: Gateway, console: requests.Session, name: str) -> tuple[int, str]:
    """A device connected on ``console``'s Devices page: its number and its app password."""
    secret = shown(connect(console, gateway, name).text, "password")
    [row] = [r for r in listed(gateway, "alice") if r[2] == name]
    return int(row[0]), secret


def test_a_devices_last_use_is_noted_at_most_every_five_minutes(
    instance: Instance, clock: InstanceClock
) -> None:
    gateway = start_in_process(instance)
    try:
        alice = sign_in(gateway)
        ident, secret = a_device(gateway, alice, "ward phone 3")
        admin = sign_in(gateway, "root-admin", PASSWORD)
        account = f"{gateway.url}/app/users/alice"

        # Never used: every place says so.
        assert last_used(gateway, ident) is None
        assert shown_last_used(alice.get(f"{gateway.url}/app/devices").text, ident) == "never"
        assert shown_last_used(admin.get(account).text, ident) == "never"
        [[number, _connected, name, used]] = listed(gateway, "alice")
        assert (number, name, used) == (str(ident), "ward phone 3", "never")

        # The first request signs in with it (a fresh login) and notes it.
        assert dav_status(gateway, "alice", secret) == 207
        first = last_used(gateway, ident)
        assert first is not None
        assert listed(gateway, "alice")[0][3] == first[:16]  # YYYY-MM-DD HH:MM, UTC

        # Within five minutes more requests (cached logins) write nothing.
        clock.advance("4m")
        for _ in range(3):
            assert dav_status(gateway, "alice", secret) == 207
        assert last_used(gateway, ident) == first
        assert shown_last_used(alice.get(f"{gateway.url}/app/devices").text, ident) == "4 min ago"
        assert shown_last_used(admin.get(account).text, ident) == "4 min ago"

        # Past the five minutes the next request notes it again, once.
        clock.advance("6m")
        assert dav_status(gateway, "alice", secret) == 207
        later = last_used(gateway, ident)
        assert later is not None and later > first
        assert dav_status(gateway, "alice", secret) == 207
        assert last_used(gateway, ident) == later
        assert shown_last_used(alice.get(f"{gateway.url}/app/devices").text, ident) == "0 min ago"

        # A revoked device is gone from every list.
        assert revoke(alice, gateway, ident).status_code == 303
        assert f'data-device="{ident}"' not in alice.get(f"{gateway.url}/app/devices").text
        assert f'data-device="{ident}"' not in admin.get(account).text
        assert listed(gateway, "alice") == []
    finally:
        gateway.stop()


def test_a_use_that_cannot_be_noted_is_logged_and_the_request_served(
    gateway: Gateway,
) -> None:
    alice = sign_in(gateway)
    ident, secret = a_device(gateway, alice, "ward phone 4")
    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        db.execute(
            "CREATE TRIGGER no_last_used BEFORE UPDATE OF last_used_at ON app_password "
            "BEGIN SELECT RAISE(ABORT, 'app_password is read-only'); END"
        )
    assert dav_status(gateway, "alice", secret) == 207  # the login itself was verified
    assert last_used(gateway, ident) is None
    assert f"app password {ident} of alice: its use was not noted" in gateway.log()
    assert "app_password is read-only" in gateway.log()

    with sqlite3.connect(gateway.instance.folder / "clindav.db") as db:
        db.execute("DROP TRIGGER no_last_used")
    assert dav_status(gateway, "alice", secret) == 207
    assert last_used(gateway, ident) is not None


def test_a_process_that_read_the_row_before_another_noted_the_use_writes_nothing(
    gateway: Gateway,
) -> None:
    """Two gateway processes serving one device at once: each read the row before either
    wrote, and only the first to write notes the use (the UPDATE's own condition)."""
    alice = sign_in(gateway)
    ident, secret = a_device(gateway, alice, "ward phone 5")
    engine = make_engine(load_settings(gateway.instance.config).sqlalchemy_url())
    try:
        other_process = AppPasswords(make_sessions(engine), instance_clock())
        read_first = other_process.find("alice", secret)
        assert read_first is not None and read_first.last_used_at is None
        assert dav_status(gateway, "alice", secret) == 207
        noted = last_used(gateway, ident)
        assert noted is not None
        other_process.note_use(read_first)
        assert last_used(gateway, ident) == noted
    finally:
        engine.dispose()
