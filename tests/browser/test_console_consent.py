"""The staff console's clinical workflow in Chromium, against the real gateway.

A clinician drops a photo before the paperwork (WebDAV), sees it held in the
console with its thumbnail, records consent in the form and watches the
image leave the inbox and reach a colleague; a teaching copy made in the
console goes to the trash when teaching consent is withdrawn; bad input
shows the command line's own message and changes nothing; another user's
held image cannot be reached by its address.
"""

from __future__ import annotations

import io
import json
import sqlite3
from subprocess import CompletedProcess

from PIL import Image

from tests.browser.conftest import Console
from tests.conftest import Gateway, Instance, InstanceClock, run_cli, start_in_process

PATIENT = "9434765919"
MISTYPED = "9434765918"


def photo(colour: tuple[int, int, int] = (200, 120, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), colour).save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(gateway: Gateway, user: str, name: str, body: bytes) -> str:
    """PUT into the patient's clinical folder over WebDAV; the held-until header, if held."""
    s = gateway.session(user)
    folder = f"{gateway.url}/clinical/{PATIENT}"
    s.request("MKCOL", folder)
    r = s.put(f"{folder}/{name}", data=body)
    assert r.status_code == 201, r.text
    return r.headers.get("X-Clindav-Held-Until", "")


def consent_cli(instance: Instance, *args: str, check: bool = True) -> CompletedProcess[str]:
    """``clindav consent add`` (for PATIENT unless ``--patient`` is given): what the console matches."""
    base = ["consent", "add", "--recorded-by", "alice"]
    if "--patient" not in args:
        base += ["--patient", PATIENT]
    return run_cli(*base, *args, config=instance.config, check=check)


def rows(instance: Instance, query: str) -> list[tuple]:
    with sqlite3.connect(instance.folder / "clindav.db") as db:
        return db.execute(query).fetchall()


def file_id(instance: Instance, path: str) -> str:
    (found,) = rows(instance, f"SELECT file_id FROM stored_object WHERE logical_path = '{path}'")
    return found[0]


def test_a_held_photo_is_released_by_consent_recorded_in_the_console(console: Console) -> None:
    gateway = console.gateway
    held_until = upload(gateway, "alice", "mole.jpg", photo())
    assert held_until  # the uploader was told
    colleague = gateway.session("ivy")
    assert colleague.get(f"{gateway.url}/clinical/{PATIENT}/mole.jpg").status_code == 404
    page = console.sign_in("alice")
    assert "1 image waits for consent" in page.inner_text("#held-banner")
    assert page.inner_text("#held-count") == "1"
    tile = page.locator(f'[data-patient="{PATIENT}"] .tile')
    assert tile.locator(".uploader").inner_text() == "alice"
    assert tile.locator(".held-until time").get_attribute("datetime").startswith(held_until[:10])
    thumb = tile.locator("img")
    thumb.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
    )
    assert thumb.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [320, 240]
    console.screenshot("inbox-held")
    page.click(f'[data-patient="{PATIENT}"] >> text=Record consent')
    assert page.input_value("input[name=patient]") == PATIENT
    assert page.input_value("input[name=recorded_by]") == "alice"
    page.check("input[name=scope][value=record]")
    page.select_option("select[name=given_by]", "patient")
    page.select_option("select[name=method]", "verbal")
    console.screenshot("consent-form")
    page.click("#record-consent")
    assert page.url.endswith("/app/")
    assert "1 held image released" in page.inner_text(".done")
    assert page.inner_text("#inbox-empty") == "Nothing waits for consent."
    assert page.locator("#held-banner").count() == 0
    assert colleague.get(f"{gateway.url}/clinical/{PATIENT}/mole.jpg").status_code == 200
    (record,) = rows(
        gateway.instance, "SELECT patient_id, scopes, source, recorded_by FROM consent_record"
    )
    assert record == (PATIENT, '["record"]', "console", "alice")
    events = rows(gateway.instance, "SELECT action, actor, code, patient_id FROM audit_event")
    assert ("CONSENT-ADD", "alice", "consent-recorded", PATIENT) in events
    assert ("GET", "alice", "ok", PATIENT) in events  # the thumbnail, audited as a read


def test_withdrawing_teaching_consent_sends_the_console_copy_to_the_trash(console: Console) -> None:
    gateway = console.gateway
    consent_cli(
        gateway.instance,
        *["--scope", "record", "--scope", "share", "--scope", "teaching", "--given-by", "patient"],
        *["--method", "written", "--form", "scans/77.pdf"],
    )
    assert not upload(gateway, "alice", "rash.jpg", photo())  # consent exists: not held
    page = console.sign_in("alice")
    console.open(f"/patients/{PATIENT}")
    page.click("#patient-images .tile a.thumb")
    # A teaching copy may not carry the patient id: the stage's refusal, in the form.
    page.select_option("select[name=share]", "teaching")
    page.fill("input[name=name]", f"{PATIENT}-rash.jpg")
    page.click("#copy button[type=submit]")
    assert "patient identifier" in page.inner_text("#copy-error")
    page.fill("input[name=name]", "case-17.jpg")
    page.click("#copy button[type=submit]")
    assert "Copied to teaching as /case-17.jpg." in page.inner_text(".done")
    dav = gateway.session("alice")
    assert dav.get(f"{gateway.url}/teaching/case-17.jpg").status_code == 200
    console.open(f"/patients/{PATIENT}")
    assert page.locator("#patient-images .tile").count() == 2  # the original and the copy
    console.screenshot("patient")
    record = page.locator(".consent-record").first
    record.locator("input[value=teaching]").check()
    record.locator("input[name$=note]").fill("asked by phone")
    record.locator("button.danger").click()
    assert "Withdrew teaching" in page.inner_text(".done")
    assert "1 copy sent to the trash" in page.inner_text(".done")
    assert dav.get(f"{gateway.url}/teaching/case-17.jpg").status_code == 404
    assert page.locator("#patient-images .tile").count() == 1
    assert "teaching by alice" in page.inner_text(".withdrawal")
    trash = json.loads(run_cli("trash", "list", "--json", config=gateway.instance.config).stdout)
    assert [(t["share"], t["path"]) for t in trash] == [("teaching", "/case-17.jpg")]


def test_bad_input_shows_the_command_lines_message_and_changes_nothing(console: Console) -> None:
    gateway = console.gateway
    upload(gateway, "alice", "mole.jpg", photo())
    page = console.sign_in("alice")
    console.open("/patients")
    page.fill("input[name=patient]", MISTYPED)
    page.click("#open-patient")
    cli = consent_cli(
        gateway.instance,
        *f"--patient {MISTYPED} --scope record --given-by patient --method verbal".split(),
        check=False,
    )
    assert cli.returncode == 1
    shown = page.inner_text("#lookup-error")
    assert (
        shown
        == "Not a valid patient identifier: the check digit does not match: the number is mistyped."
    )
    assert shown in cli.stderr
    cases = [
        # (scopes, given by, method, form, name): teaching without a form; a representative unnamed
        (["record", "teaching"], "patient", "written", "", ""),
        (["record"], "parental-responsibility", "verbal", "", ""),
        (["share"], "patient", "verbal", "", ""),
    ]
    for scopes, given_by, method, form, name in cases:
        console.open(f"/patients/{PATIENT}/consent")
        for scope in scopes:
            page.check(f"input[name=scope][value={scope}]")
        page.select_option("select[name=given_by]", given_by)
        page.select_option("select[name=method]", method)
        page.fill("input[name=form]", form)
        page.fill("input[name=given_by_name]", name)
        page.click("#record-consent")
        shown = page.inner_text("#consent-error")
        args = [a for s in scopes for a in ("--scope", s)]
        cli = consent_cli(
            gateway.instance, *args, "--given-by", given_by, "--method", method, check=False
        )
        assert cli.returncode == 1 and shown.startswith("Invalid consent: ")
        assert f"clindav: error: {shown}" in cli.stderr
        assert page.input_value("select[name=method]") == method  # what was typed stays
    # The mistyped number typed into the form itself: the same message again.
    console.open(f"/patients/{PATIENT}/consent")
    page.fill("input[name=patient]", MISTYPED)
    page.check("input[name=scope][value=record]")
    page.select_option("select[name=given_by]", "patient")
    page.select_option("select[name=method]", "verbal")
    page.click("#record-consent")
    assert "the number is mistyped" in page.inner_text("#consent-error")
    assert rows(gateway.instance, "SELECT count(*) FROM consent_record") == [(0,)]
    assert rows(
        gateway.instance, "SELECT count(*) FROM stored_object WHERE held_until IS NOT NULL"
    ) == [(1,)]
    refusals = rows(
        gateway.instance,
        "SELECT code FROM audit_event WHERE action = 'CONSENT-ADD' AND actor = 'alice'",
    )
    assert [r[0] for r in refusals] == ["invalid-consent"] * 3 + ["invalid-patient-id"]


def test_another_users_held_image_cannot_be_reached_by_its_address(console: Console) -> None:
    gateway = console.gateway
    upload(gateway, "ivy", "private.jpg", photo())
    held = file_id(gateway.instance, f"/{PATIENT}/private.jpg")
    page = console.sign_in("alice")
    assert page.inner_text("#held-count") == "0"
    for suffix in ("", "/thumbnail", "/full"):
        response = page.goto(console.url(f"/images/{held}{suffix}"))
        assert response is not None and response.status == 403
        assert "private-image" in page.inner_text("#error")
    console.open(f"/patients/{PATIENT}")
    assert page.inner_text("#no-images") == "No images of this patient that you may see."
    codes = rows(
        gateway.instance, "SELECT code FROM audit_event WHERE actor = 'alice' AND status = 403"
    )
    assert codes == [("private-image",)] * 3


def test_a_session_ends_after_the_idle_timeout(
    instance: Instance, clock: InstanceClock, open_console
) -> None:  # type: ignore[no-untyped-def]
    gateway = start_in_process(instance)
    try:
        console = open_console(gateway)
        page = console.sign_in("alice")
        assert page.url.endswith("/app/")
        clock.advance("16m")
        page.reload()
        assert page.url.endswith("/app/sign-in/expired")
        assert "signed out after a period without activity" in page.inner_text("#expired")
        console.sign_in("alice")
        assert page.url.endswith("/app/")
    finally:
        gateway.stop()
