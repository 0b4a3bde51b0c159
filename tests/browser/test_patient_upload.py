"""A patient sends photos from a phone, in Chromium, against the real gateway.

A clinician makes an upload link in the console (laptop); the patient opens it
on a phone-sized screen, gets the date of birth wrong once, then right, ticks
consent, and sends a real HEIC and a JPEG carrying GPS (with the page's
progress bar, its own script).  Then: both photos are in the patient's folder,
scrubbed (exiftool on what WebDAV returns), encrypted on the share, a consent
record names the statement's version, the audit trail has every step, and the
clinician's inbox lists them.  Screenshots for docs/PATIENT-UPLOADS.md with
``CLINDAV_SCREENSHOTS=docs/patient-uploads``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import SCREENSHOTS, Console
from tests.conftest import Gateway, Instance, run_cli, start_gateway
from tests.integration.test_scrub_gateway import exiftool_read
from tests.scrub_corpus import dirty_file
from tests.unit.scrub.test_scrub_exiftool import _outside_allowlist

PATIENT = "9434765919"
DOB = dt.date(1984, 3, 27)
PRACTICE = "Riverside Surgery"
# An iPhone 13's screen in CSS pixels, touch, a phone's browser.
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def gateway(instance: Instance) -> Iterator[Gateway]:
    data = instance.settings()
    data["uploads"] = {"practice_name": PRACTICE}
    instance.write_settings(data)
    gw = start_gateway(instance)
    yield gw
    gw.stop()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> None:
    """The whole page as ``<name>.png`` in $CLINDAV_SCREENSHOTS (unset: none is made)."""
    folder = os.environ.get(SCREENSHOTS)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def make_link(console: Console) -> str:
    """alice asks for photos in the console; the link's path (/upload/<token>)."""
    page = console.sign_in()
    console.open("/requests")
    page.fill("input[name=patient]", "943 476 5919")
    page.fill("input[name=dob]", DOB.isoformat())
    page.fill(
        "textarea[name=note]",
        "The rash on your left forearm, in daylight, close up and from further away.",
    )
    console.screenshot("console-request-form")
    page.click("#create-request")
    link = page.text_content("#upload-link") or ""
    assert "/upload/" in link and page.locator("#qr svg").count() == 1
    console.screenshot("console-request-created")
    return "/upload/" + link.rsplit("/upload/", 1)[1]


def enter_dob(page: Page, day: dt.date) -> None:
    page.fill("#day", str(day.day))
    page.fill("#month", str(day.month))
    page.fill("#year", str(day.year))
    page.click("#continue")


def test_a_patient_sends_a_heic_and_a_jpeg_with_gps_from_a_phone(
    console: Console, phone: Page, gateway: Gateway, tmp_path: Path
) -> None:
    link = make_link(console)

    phone.goto(gateway.url + link)
    assert phone.text_content("#practice-name") == PRACTICE
    assert PATIENT not in phone.content()
    shot(phone, "phone-date-of-birth")
    enter_dob(phone, DOB.replace(year=DOB.year + 1))
    assert "does not match" in (phone.text_content("#error") or "")
    assert "4 tries left" in (phone.text_content("#error") or "")
    shot(phone, "phone-date-of-birth-wrong")
    enter_dob(phone, DOB)

    assert "left forearm" in (phone.text_content("#note") or "")
    assert phone.get_attribute("#statement", "data-version") == "1"
    assert not phone.is_checked("#teaching")  # teaching is never ticked for the patient
    phone.check("#consent")
    heic, jpeg = dirty_file("pillow-heif.heic"), dirty_file("phone.jpg")
    phone.set_input_files(
        "#photos",
        [
            {"name": "IMG_4031.HEIC", "mimeType": "image/heic", "buffer": heic.data},
            {"name": "IMG_4032.JPG", "mimeType": "image/jpeg", "buffer": jpeg.data},
        ],
    )
    shot(phone, "phone-consent-and-photos")
    phone.click("#send")
    phone.wait_for_selector("#results", timeout=60_000)
    outcomes = phone.eval_on_selector_all(
        "#results li", "items => items.map(i => i.dataset.outcome)"
    )
    assert outcomes == ["stored", "stored"]
    shot(phone, "phone-results")

    stored = stored_photos(gateway)
    assert sorted(Path(p).suffix for p in stored) == [".heic", ".jpg"]
    check_scrubbed(stored, {".heic": heic, ".jpg": jpeg}, tmp_path)
    check_encrypted_on_the_share(gateway.instance, stored)
    check_consent_and_audit(gateway.instance)

    inbox = console.open("/")
    group = inbox.locator(f"#submissions [data-patient='{PATIENT}']")
    assert group.locator("[data-file]").count() == 2
    console.screenshot("console-inbox-submissions")


def stored_photos(gateway: Gateway) -> dict[str, bytes]:
    """The patient's uploads of today, decrypted, as WebDAV's GET returns them."""
    folder = f"/clinical/{PATIENT}/patient-uploads/{dt.datetime.now(dt.UTC).date().isoformat()}"
    s = gateway.session("alice")
    listing = s.request("PROPFIND", f"{gateway.url}{folder}/", headers={"Depth": "1"})
    assert listing.status_code == 207, listing.text
    paths = [h for h in re.findall(r"<[^>]*href>([^<]+)</", listing.text) if not h.endswith("/")]
    files = {p: s.get(f"{gateway.url}{p}") for p in paths}
    assert all(r.status_code == 200 for r in files.values())
    return {p: r.content for p, r in files.items()}


def check_scrubbed(stored: dict[str, bytes], dirty: dict[str, object], tmp_path: Path) -> None:
    named = {Path(p).name: body for p, body in stored.items()}
    tags = exiftool_read(named, tmp_path / "exif")
    for name, body in named.items():
        original = dirty[Path(name).suffix]
        assert not [k for k in tags[name] if "GPS" in k], tags[name]
        assert _outside_allowlist(original.format, tags[name]) == [], tags[name]  # type: ignore[attr-defined]
        assert not [m for m in original.markers if m.encode() in body]  # type: ignore[attr-defined]


def check_encrypted_on_the_share(instance: Instance, stored: dict[str, bytes]) -> None:
    files = [p for p in instance.share_dir("clinical").rglob("*") if p.is_file()]
    assert len(files) >= 2
    for path in files:
        raw = path.read_bytes()
        assert PATIENT not in str(path)
        assert not any(body[2000:2064] in raw for body in stored.values()), path


def check_consent_and_audit(instance: Instance) -> None:
    records = json.loads(
        run_cli("consent", "list", "--patient", PATIENT, "--json", config=instance.config).stdout
    )
    (record,) = records
    assert record["form"].endswith("/statement-1") and record["form"].startswith("upload-request-")
    assert record["scopes"] == ["record", "share"] and record["given_by"] == "patient"
    out = run_cli("audit", "export", "--patient", PATIENT, config=instance.config).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    steps = [(e["action"], e["code"]) for e in events]
    expected = [
        ("UPLOAD-REQUEST", "upload-request-created"),
        ("UPLOAD-OPEN", "upload-link-opened"),
        ("UPLOAD-DOB", "upload-dob-mismatch"),
        ("UPLOAD-DOB", "upload-dob-verified"),
        ("CONSENT-ADD", "consent-recorded"),
        ("MKCOL", "created"),
        ("PUT", "stored"),
        ("PUT", "stored"),
        ("UPLOAD-SUBMIT", "upload-submitted"),
    ]
    positions = [steps.index(step) for step in dict.fromkeys(expected)]
    assert positions == sorted(positions), steps  # in this order
    assert steps.count(("PUT", "stored")) == 2


def test_the_pages_work_without_javascript(
    console: Console, browser: Browser, gateway: Gateway
) -> None:
    link = make_link(console)
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(gateway.url + link)
        enter_dob(page, DOB)
        page.check("#consent")
        page.set_input_files(
            "#photos",
            [{"name": "a.jpg", "mimeType": "image/jpeg", "buffer": dirty_file("phone.jpg").data}],
        )
        page.click("#send")
        page.wait_for_selector("#results")
        assert page.url == f"{gateway.url}{link}/send"  # the form's own post
        assert page.get_attribute("#results li", "data-outcome") == "stored"
    finally:
        context.close()
