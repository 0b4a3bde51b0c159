"""The admin and audit pages in Chromium: trash, holds, audit, users.

Each test sets the scene over WebDAV and the command line (the real gateway,
real clients), then works in the console as a person would, and checks the
outcome again over WebDAV and in the database.  With CLINDAV_SCREENSHOTS set
they also save the pictures of docs/CONSOLE-ADMIN.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import requests
import sqlalchemy
from playwright.sync_api import Page

from gateway.db import DataKey, LegalHold, LocalUser
from tests.browser.conftest import TABLET, Console
from tests.conftest import PASSWORD, Gateway, run_cli
from tests.integration.test_consent import PATIENT, consent
from tests.integration.test_dav_methods import small_jpeg
from tests.integration.test_trash import engine_for, trash_list

CLINICAL = f"/clinical/{PATIENT}"


def _count(gateway: Gateway, model: type) -> int:
    engine = engine_for(gateway.instance)
    with engine.connect() as conn:
        found = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(model))
        count = int(found.scalar_one())
    engine.dispose()
    return count


def _ok(r: requests.Response) -> requests.Response:
    assert r.status_code < 300, (r.request.method, r.url, r.status_code, r.text)
    return r


def _row(page: Page, path: str) -> str:
    return f"#trash-items tr:has(.path:text-is('{path}'))"


def test_restore_is_refused_while_consent_is_withdrawn_and_allowed_otherwise(
    gateway: Gateway, open_console: Callable[[Gateway], Console]
) -> None:
    inst, alice = gateway.instance, gateway.session("alice")
    record = consent(
        inst, "--scope", "record", "--scope", "share", "--scope", "teaching",
        "--method", "written", "--form", "forms/2026/77.pdf",
    )  # fmt: skip
    folder = f"{gateway.url}{CLINICAL}"
    _ok(alice.request("MKCOL", folder))
    _ok(alice.put(f"{folder}/wound.jpg", data=small_jpeg()))
    for share in ("teaching", "referrals"):
        dest = f"{gateway.url}/{share}/case-2026-014.jpg"
        _ok(alice.request("COPY", f"{folder}/wound.jpg", headers={"Destination": dest}))
    run_cli(
        "consent", "withdraw", str(record["id"]), "--scope", "teaching", "--by", "dr-a",
        config=inst.config,
    )  # fmt: skip
    _ok(alice.delete(f"{gateway.url}/referrals/case-2026-014.jpg"))

    # Alice sees what she deleted, not the copy the withdrawal sent to the trash.
    mine = open_console(gateway)
    page = mine.sign_in("alice")
    page = mine.open("/trash")
    assert page.locator("#trash-items tbody tr").count() == 1
    page.click(f"{_row(page, '/case-2026-014.jpg')} button.restore")
    assert "Restored referrals:/case-2026-014.jpg." in page.inner_text("main")
    assert alice.get(f"{gateway.url}/referrals/case-2026-014.jpg").status_code == 200
    assert page.locator("#trash-empty").is_visible()

    # The admin sees the teaching copy; restoring it is refused with the CLI's words.
    admin = open_console(gateway)
    admin.sign_in("root-admin")
    page = admin.open("/trash")
    page.click(f"{_row(page, '/case-2026-014.jpg')} button.restore")
    problem = page.inner_text("#restore .problem")
    assert "Cannot restore teaching:/case-2026-014.jpg" in problem
    assert "No recorded 'teaching' consent" in problem
    assert alice.get(f"{gateway.url}/teaching/case-2026-014.jpg").status_code == 404
    assert [i["share"] for i in trash_list(inst)] == ["teaching"]

    # Teaching consent recorded again: the same button brings the copy back.
    consent(inst, "--scope", "record", "--scope", "teaching", "--method", "written",
            "--form", "forms/2026/90.pdf")  # fmt: skip
    page.click("#restore button.primary")
    assert "Restored teaching:/case-2026-014.jpg." in page.inner_text("main")
    assert (
        gateway.session("root-admin").get(f"{gateway.url}/teaching/case-2026-014.jpg").status_code
        == 200
    )
    assert trash_list(inst) == []


def test_an_admin_purges_and_a_hold_stops_the_purge_until_released(
    console: Console, gateway: Gateway
) -> None:
    inst, alice = gateway.instance, gateway.session("alice")
    consent(inst, "--scope", "record")
    folder = f"{gateway.url}{CLINICAL}"
    _ok(alice.request("MKCOL", folder))
    for name in ("wound.jpg", "rash.jpg"):
        _ok(alice.put(f"{folder}/{name}", data=small_jpeg()))
        _ok(alice.delete(f"{folder}/{name}"))
    keys = _count(gateway, DataKey)

    console.sign_in("root-admin")
    page = console.open("/holds")
    page.fill("#add-hold input[name=path]", f"{CLINICAL}/wound.jpg")
    page.fill("#add-hold input[name=reason]", "complaint 2026-031")
    page.click("#add-hold button[type=submit]")
    assert f"{CLINICAL}/wound.jpg is under a legal hold." in page.inner_text("main")
    assert page.locator("#holds tbody tr").count() == 1
    console.screenshot("holds")

    # A held item is not purged; another one is.
    page = console.open("/trash")
    console.screenshot("trash")
    page.click(f"{_row(page, f'/{PATIENT}/wound.jpg')} a.more")
    page.fill("#purge input[name=reason]", "duplicate upload")
    page.click("#purge button[type=submit]")
    assert "under a legal hold" in page.inner_text("#purge .problem")
    assert _count(gateway, DataKey) == keys
    page = console.open("/trash")
    page.click(f"{_row(page, f'/{PATIENT}/rash.jpg')} a.more")
    page.click("#purge button[type=submit]")
    assert f"Purged clinical:/{PATIENT}/rash.jpg for good." in page.inner_text("main")
    assert _count(gateway, DataKey) == keys - 1

    # Released, the held item can go too.
    page = console.open("/holds")
    page.click("#holds button.release")
    assert "Releasing a legal hold needs a reason" in page.inner_text("#holds .problem")
    assert _count(gateway, LegalHold) == 1
    page.fill("#holds input[name=reason]", "complaint closed")
    page.click("#holds button.release")
    assert page.locator("#holds-empty").is_visible()
    page = console.open("/trash")
    page.click(f"{_row(page, f'/{PATIENT}/wound.jpg')} a.more")
    page.click("#purge button[type=submit]")
    assert page.locator("#trash-empty").is_visible()
    assert _count(gateway, DataKey) == keys - 2


def test_an_auditor_finds_every_access_to_one_patient(
    console: Console, gateway: Gateway, open_console: Callable[[Gateway], Console]
) -> None:
    inst = gateway.instance
    consent(inst, "--scope", "record")
    alice, admin = gateway.session("alice"), gateway.session("root-admin")
    folder = f"{gateway.url}{CLINICAL}"
    webdav = [
        _ok(alice.request("MKCOL", folder)),
        _ok(alice.put(f"{folder}/wound.jpg", data=small_jpeg())),
        _ok(alice.get(f"{folder}/wound.jpg")),
        _ok(admin.get(f"{folder}/wound.jpg")),
        _ok(alice.request("PROPFIND", folder, headers={"Depth": "1"})),
        _ok(alice.delete(f"{folder}/wound.jpg")),
    ]
    other = _ok(alice.request("MKCOL", f"{gateway.url}/clinical/4010232137"))
    # In the console the admin restores the photo and holds the folder.
    colleague = open_console(gateway)
    colleague.sign_in("root-admin")
    page = colleague.open("/trash")
    page.click("#trash-items button.restore")
    page = colleague.open("/holds")
    page.fill("#add-hold input[name=path]", CLINICAL)
    page.fill("#add-hold input[name=reason]", "subject access request 2026-12")
    page.click("#add-hold button[type=submit]")
    webdav.append(_ok(alice.get(f"{folder}/wound.jpg")))

    console.sign_in("audrey")
    page = console.open("/audit/patient")
    page.fill("input[name=patient]", "943 476 5919")
    page.click("#report-button")
    assert page.url.endswith("/app/audit/patient")  # the patient id went in the body
    assert page.inner_text("#report h1") == f"Patient {PATIENT}"
    shown = set(page.locator("#report-events tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.request)"
    ))  # fmt: skip
    for r in webdav:
        assert r.headers["X-Request-Id"] in shown, (r.request.method, r.url)
    assert other.headers["X-Request-Id"] not in shown
    people = page.inner_text(".people")
    for words in ("uploaded", "read", "listed", "deleted (to trash)"):
        assert words in page.inner_text(".person[data-person=alice]"), words
    assert "restored from trash" in people and "placed a legal hold" in people
    console.screenshot("audit-patient-report")

    # The report itself is on record, for the patient.
    page.fill("input[name=patient]", PATIENT)
    page.click("#report-button")
    assert "read the access report" in page.inner_text(".person[data-person=audrey]")

    # Search: the refusals of one user, then the chain's verification.
    page = console.open("/audit")
    page.fill("#search-form input[name=user]", "alice")
    page.select_option("#search-form select[name=outcome]", "success")
    page.click("#search-button")
    actors = page.locator("#events td.actor").all_inner_texts()
    assert actors and all(a.startswith("alice") for a in actors)
    page.click("#verify")
    assert re.match(r"Intact: \d+ events", page.inner_text("#chain-status"))
    page.fill("#search-form input[name=patient]", PATIENT)
    page.click("#search-button")
    console.screenshot("audit-search")


def test_a_clinician_reaches_no_admin_or_audit_page(console: Console) -> None:
    page = console.sign_in("alice")
    menu = page.locator("nav.menu").inner_text()
    assert "Trash" in menu
    for label in ("Audit", "Holds", "Users"):
        assert label not in menu
    for path in ("/audit", "/audit/patient", "/holds", "/users", "/users/alice"):
        answer = page.goto(console.url(path))
        assert answer is not None and answer.status == 403, path
        assert answer.headers["x-clindav-error"] == "page-not-allowed"
        assert "Your groups do not give access to" in page.inner_text("#error")


def test_an_admin_adds_and_disables_a_user_and_webdav_follows(
    console: Console, gateway: Gateway
) -> None:
    console.sign_in("root-admin")
    page = console.open("/users")
    before = _count(gateway, LocalUser)
    page.fill("#add-user input[name=name]", "bob")
    page.check("#add-user input[value=clinicians]")
    page.fill("#add-user input[name=password]", "too short")
    page.fill("#add-user input[name=again]", "too short")
    page.click("#add-user button[type=submit]")
    assert "Passwords need at least 12 characters." in page.inner_text("#add-user .problem")
    assert _count(gateway, LocalUser) == before
    page.fill("#add-user input[name=password]", PASSWORD)
    page.fill("#add-user input[name=again]", PASSWORD)
    page.click("#add-user button[type=submit]")
    assert page.url.endswith("/app/users/bob")
    assert "Added bob (clinicians)." in page.inner_text("main")
    bob = gateway.session("bob")
    assert bob.request("PROPFIND", f"{gateway.url}/documents/").status_code == 207

    page.click("#disable")
    assert page.inner_text("#state") == "disabled"
    assert gateway.session("bob").get(f"{gateway.url}/documents/").status_code == 401
    page = console.open("/users")
    console.screenshot("users")
    assert page.inner_text("#users tr[data-user=bob] .state") == "disabled"


def test_inbox_screenshots_at_laptop_and_tablet_sizes(console: Console, gateway: Gateway) -> None:
    alice = gateway.session("alice")
    for patient in (PATIENT, "4010232137"):
        _ok(alice.request("MKCOL", f"{gateway.url}/clinical/{patient}"))
        for n in range(3 if patient == PATIENT else 2):
            _ok(alice.put(f"{gateway.url}/clinical/{patient}/IMG_{n:04d}.jpg", data=small_jpeg()))
    page = console.sign_in("alice")
    assert page.inner_text("#held-count") == "5"
    console.screenshot("inbox")
    console.screenshot("inbox-tablet", TABLET)
