"""Patient upload links end to end: `clindav request create`, the patient's pages over
HTTP, the photos in the patient's folder (scrubbed, encrypted), the consent record,
the audit trail, and GOV.UK Notify (a local server answering as its API does).

One gateway for the module, started with the instance clock (an expired link is
the clock moved on) and Notify pointed at the local server.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from gateway.clock import TEST_CLOCK
from tests.conftest import (
    Gateway,
    Instance,
    InstanceClock,
    make_instance,
    read_answer,
    run_cli,
    start_gateway,
    start_in_process,
)
from tests.integration.test_console_http import form_token, sign_in
from tests.integration.test_instance_integrity import write_key
from tests.integration.test_scrub_gateway import exiftool_read, nhs_check_digit
from tests.integration.test_workers import _children, _cpu_ticks, _wait_until
from tests.notify_server import NotifyServer
from tests.scrub_corpus import dirty_file
from tests.unit.scrub.test_scrub_exiftool import _outside_allowlist

DOB = dt.date(1984, 3, 27)
PRACTICE = "Riverside Surgery"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def _patients() -> Iterator[str]:
    for n in itertools.count(943476700):
        check = nhs_check_digit(str(n))
        if check is not None:
            yield f"{n}{check}"


_PATIENTS = _patients()


@dataclass
class Uploads:
    gw: Gateway
    notify: NotifyServer | None = None
    clock: InstanceClock | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=self.gw.instance.config, check=check)

    def create(self, patient: str, *extra: str) -> tuple[int, str, dict]:
        """A request made by alice; its id, token and the command's JSON."""
        out = self.cli(
            "request",
            "create",
            "--patient",
            patient,
            "--dob",
            DOB.isoformat(),
            "--as",
            "alice",
            "--json",
            *extra,
        )
        data = json.loads(out.stdout)
        return data["id"], data["link"].rsplit("/", 1)[1], data

    def browser(self) -> requests.Session:
        return self.gw.session(user=None)

    def page(self, token: str) -> str:
        return f"{self.gw.url}/upload/{token}"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uploads]:
    folder = tmp_path_factory.mktemp("uploads")
    clock_file = folder / "clock-offset"
    clock_file.write_text("")
    before = os.environ.get(TEST_CLOCK)
    os.environ[TEST_CLOCK] = str(clock_file)  # the gateway and every command inherit it
    notify = NotifyServer()
    notify_url = notify.start()
    instance = uploads_instance(folder)
    data = instance.settings()
    data["uploads"]["notify"] = {
        "api_key": notify.api_key,
        "base_url": notify_url,
        "sms_template": notify.sms_template,
        "email_template": notify.email_template,
    }
    instance.write_settings(data)
    gw = start_in_process(instance)
    yield Uploads(gw, notify, InstanceClock(clock_file))
    gw.stop()
    notify.stop()
    if before is None:
        os.environ.pop(TEST_CLOCK, None)
    else:
        os.environ[TEST_CLOCK] = before


def uploads_instance(folder: Path) -> Instance:
    """An instance whose upload links are set up (Notify not)."""
    instance = make_instance(folder)
    data = instance.settings()
    data["uploads"] = {
        "public_url": "https://gp.example",
        "practice_name": PRACTICE,
        "address_rate": 10_000,  # every test comes from 127.0.0.1
        "link_rate": 20,
    }
    instance.write_settings(data)
    return instance


def dob_form(day: dt.date) -> dict[str, str]:
    return {"day": str(day.day), "month": str(day.month), "year": str(day.year)}


def pass_of(page: requests.Response) -> str:
    found = re.search(r'name="pass" value="([^"]+)"', page.text)
    assert found, page.text[:2000]
    return found.group(1)


def verified(up: Uploads, token: str, browser: requests.Session | None = None) -> str:
    browser = browser or up.browser()
    assert browser.get(up.page(token)).status_code == 200
    answer = browser.post(up.page(token), data=dob_form(DOB))
    assert answer.status_code == 200, answer.text[:2000]
    return pass_of(answer)


def send(
    up: Uploads,
    token: str,
    secret: str,
    files: list[tuple[str, bytes]],
    *,
    consent: bool = True,
    teaching: bool = False,
    parent: str | None = None,
) -> requests.Response:
    form = {"pass": secret, "given_by": "parent" if parent else "self", "parent_name": parent or ""}
    if consent:
        form["consent"] = "yes"
    if teaching:
        form["teaching"] = "yes"
    parts = [("photos", (name, body, "application/octet-stream")) for name, body in files]
    return up.browser().post(f"{up.page(token)}/send", data=form, files=parts)


def outcomes(page: requests.Response) -> list[str]:
    return re.findall(r'data-outcome="(\w+)"', page.text)


def listing(up: Uploads, user: str, folder: str) -> list[str]:
    answer = up.gw.session(user).request(
        "PROPFIND", f"{up.gw.url}{folder}/", headers={"Depth": "1"}
    )
    assert answer.status_code == 207, answer.text
    hrefs = re.findall(r"<[^>]*href>([^<]+)</", answer.text)
    return sorted(h.rsplit("/", 1)[-1] for h in hrefs if not h.endswith("/"))


def consent_records(up: Uploads, patient: str) -> list[dict]:
    return json.loads(up.cli("consent", "list", "--patient", patient, "--json").stdout)


def audit_events(up: Uploads, patient: str) -> list[dict]:
    out = up.cli("audit", "export", "--patient", patient).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def today_folder(patient: str, intimate: bool = False) -> str:
    return f"/clinical/{patient}{'/intimate' if intimate else ''}/patient-uploads/{dt.datetime.now(dt.UTC).date().isoformat()}"


# --------------------------------------------------------------------------- the whole path


def test_photos_are_filed_scrubbed_and_encrypted_with_their_consent(
    up: Uploads, tmp_path: Path
) -> None:
    patient = next(_PATIENTS)
    request_id, token, created = up.create(patient, "--note", "the rash on your left arm")
    assert created["link"] == f"https://gp.example/upload/{token}"
    assert len(token) >= 32  # 192 random bits, URL-safe

    browser = up.browser()
    first = browser.get(up.page(token))
    assert first.status_code == 200 and PRACTICE in first.text
    # Before the date of birth: nothing of the patient, not even the clinician's note.
    assert patient not in first.text and "rash" not in first.text
    assert first.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in first.headers["Content-Security-Policy"]
    assert "Set-Cookie" not in first.headers
    form = browser.post(up.page(token), data=dob_form(DOB))
    assert form.status_code == 200
    assert "the rash on your left arm" in form.text and 'data-version="1"' in form.text
    assert patient not in form.text

    jpeg, heic = dirty_file("phone.jpg"), dirty_file("pillow-heif.heic")
    result = send(
        up, token, pass_of(form), [("IMG_0001.JPG", jpeg.data), ("IMG_0002.HEIC", heic.data)]
    )
    assert result.status_code == 200, result.text
    assert outcomes(result) == ["stored", "stored"]

    folder = today_folder(patient)
    names = listing(up, "alice", folder)
    assert len(names) == 2 and names[0].endswith(".jpg") and names[1].endswith(".heic")
    stored = {n: up.gw.session("alice").get(f"{up.gw.url}{folder}/{n}").content for n in names}
    tags = exiftool_read(stored, tmp_path / "exif")
    for (name, data), dirty in zip(stored.items(), (jpeg, heic), strict=True):
        entry = tags[name]
        assert not [k for k in entry if "GPS" in k], entry
        assert _outside_allowlist(dirty.format, entry) == [], entry  # what the scrub tests allow
        assert not [m for m in dirty.markers if m.encode() in data]

    # Encrypted on the share: no file there holds the photos' bytes or names the patient.
    share = up.gw.instance.share_dir("clinical")
    on_disk = [p for p in share.rglob("*") if p.is_file()]
    assert on_disk and not any(patient in str(p) for p in share.rglob("*"))
    for path in on_disk:
        raw = path.read_bytes()
        assert not any(raw.startswith(m) for m in (b"\xff\xd8", b"\x00\x00\x00")), path
        assert not any(body[1000:1064] in raw for body in stored.values())

    (record,) = consent_records(up, patient)
    assert record["form"] == f"upload-request-{request_id}/statement-1"
    assert record["given_by"] == "patient" and record["method"] == "written"
    assert record["scopes"] == ["record", "share"]  # teaching unticked: no teaching scope
    assert record["intimate"] is False and record["source"] == "patient-upload"
    assert record["date_of_birth"] == DOB.isoformat()
    # Covered at once: nothing is held.
    assert "0 images await consent" in up.cli("consent", "pending").stdout

    events = audit_events(up, patient)
    steps = [(e["action"], e["code"]) for e in events]
    for step in [
        ("UPLOAD-REQUEST", "upload-request-created"),
        ("UPLOAD-OPEN", "upload-link-opened"),
        ("UPLOAD-DOB", "upload-dob-verified"),
        ("CONSENT-ADD", "consent-recorded"),
        ("UPLOAD-SUBMIT", "upload-submitted"),
    ]:
        assert step in steps, steps
    puts = [e for e in events if e["action"] == "PUT" and e["code"] == "stored"]
    assert len(puts) == 2
    patients_steps = [e for e in events if e["action"] in ("UPLOAD-OPEN", "UPLOAD-DOB", "PUT")]
    assert {e["actor"] for e in patients_steps} == {f"patient-link-{request_id}"}
    assert steps.index(("CONSENT-ADD", "consent-recorded")) < steps.index(("PUT", "stored"))
    assert "audit chain intact" in up.cli("audit", "verify").stdout


def test_a_used_link_answers_a_clear_page_and_sends_nothing_more(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient)
    secret = verified(up, token)
    assert outcomes(send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)])) == [
        "stored"
    ]
    again = up.browser().get(up.page(token))
    assert again.status_code == 410 and again.headers["X-Clindav-Error"] == "upload-link-used"
    assert "already been sent" in again.text
    replay = send(up, token, secret, [("b.jpg", dirty_file("phone.jpg").data)])
    assert replay.status_code == 410
    assert len(listing(up, "alice", today_folder(patient))) == 1


def test_an_expired_link_answers_a_clear_page(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient, "--expires", "1")
    secret = verified(up, token)
    up.clock.advance("2d")
    try:
        page = up.browser().get(up.page(token))
        assert page.status_code == 410 and page.headers["X-Clindav-Error"] == "upload-link-expired"
        assert "expired" in page.text
        late = send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)])
        assert late.status_code == 410
    finally:
        up.clock.advance("")
    assert not consent_records(up, patient)


def test_five_wrong_dates_of_birth_lock_the_link_like_an_unknown_one(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient)
    browser = up.browser()
    wrong = dob_form(DOB.replace(day=DOB.day - 1))
    for left in (4, 3, 2, 1):
        answer = browser.post(up.page(token), data=wrong)
        assert answer.status_code == 403 and f"{left} tr" in answer.text
    locked = browser.post(up.page(token), data=wrong)
    unknown = browser.get(up.page("A" * 32))
    assert locked.status_code == unknown.status_code == 404
    assert locked.headers["X-Clindav-Error"] == unknown.headers["X-Clindav-Error"]

    def without_reference(text: str) -> str:
        return re.sub(r"reference [0-9a-f]+", "", text)

    assert without_reference(locked.text) == without_reference(unknown.text)
    # The right date of birth no longer opens it.
    assert browser.post(up.page(token), data=dob_form(DOB)).status_code == 404
    codes = [e["code"] for e in audit_events(up, patient) if e["action"] == "UPLOAD-DOB"]
    assert codes == ["upload-dob-mismatch"] * 4 + ["upload-link-locked", "upload-link-unusable"]


def test_a_30_mb_photo_is_refused_and_the_others_stored(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient)
    big = b"\xff\xd8\xff\xe0" + os.urandom(30 * 1024 * 1024)
    result = send(
        up, token, verified(up, token), [("big.jpg", big), ("ok.jpg", dirty_file("phone.jpg").data)]
    )
    assert result.status_code == 200, (result.headers.get("X-Clindav-Error"), result.text[:500])
    assert outcomes(result) == ["refused", "stored"]
    assert "larger than 25 MB" in result.text
    refused = [e for e in audit_events(up, patient) if e["action"] == "PUT" and e["status"] == 413]
    assert [e["code"] for e in refused] == ["photo-too-large"]


def declare_body(up: Uploads, token: str, length: int) -> bytes:
    """Headers of a send declaring ``length`` bytes, and no body: the answer that comes."""
    host, port = "127.0.0.1", up.gw.port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            f"POST /upload/{token}/send HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        return read_answer(sock)


def test_a_body_over_the_links_limit_is_refused_before_it_is_read(up: Uploads) -> None:
    _id, token, _ = up.create(next(_PATIENTS))
    answer = declare_body(up, token, 400 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"upload-too-large" in answer
    # A link for one photo takes one photo's worth: 30 MB declared is refused at once.
    _id, token, _ = up.create(next(_PATIENTS), "--max-files", "1")
    answer = declare_body(up, token, 30 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413") and b"upload-too-large" in answer


def test_a_send_to_a_link_that_does_not_work_is_refused_before_its_body_is_read(
    up: Uploads,
) -> None:
    """A stranger's guessed address must not have a body of photos read into memory first."""
    request_id, cancelled, _ = up.create(next(_PATIENTS))
    up.cli("request", "cancel", str(request_id), "--as", "alice")
    for token in ("a-token-never-issued", cancelled):
        answer = declare_body(up, token, 20 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 404"), answer[:300]
        assert b"upload-link-unusable" in answer


def test_a_pdf_renamed_jpg_is_refused_by_the_shares_file_check(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient)
    result = send(up, token, verified(up, token), [("scan.jpg", PDF)])
    assert outcomes(result) == ["refused"]
    refused = [e for e in audit_events(up, patient) if e["action"] == "PUT"]
    assert [e["code"] for e in refused] in (["extension-mismatch"], ["file-type-not-allowed"])
    assert listing(up, "alice", today_folder(patient)) == []


def test_teaching_ticked_adds_the_teaching_scope_and_a_parent_is_named(up: Uploads) -> None:
    patient = next(_PATIENTS)
    request_id, token, _ = up.create(patient)
    secret = verified(up, token)
    result = send(
        up,
        token,
        secret,
        [("a.png", dirty_file("dirty.png").data)],
        teaching=True,
        parent="Sam Jones",
    )
    assert outcomes(result) == ["stored"]
    (record,) = consent_records(up, patient)
    assert record["scopes"] == ["record", "share", "teaching"]
    assert (
        record["given_by"] == "parental-responsibility" and record["given_by_name"] == "Sam Jones"
    )
    assert record["form"] == f"upload-request-{request_id}/statement-1"


def test_without_the_consent_tick_nothing_is_stored_and_the_link_still_works(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient)
    secret = verified(up, token)
    refused = send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)], consent=False)
    assert refused.status_code == 400 and "Tick the box" in refused.text
    assert not consent_records(up, patient)
    assert outcomes(send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)])) == [
        "stored"
    ]


def test_intimate_photos_only_through_an_intimate_request_and_only_for_the_intimate_group(
    up: Uploads,
) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient, "--intimate")
    result = send(up, token, verified(up, token), [("a.jpg", dirty_file("phone.jpg").data)])
    assert outcomes(result) == ["stored"]
    (record,) = consent_records(up, patient)
    assert record["intimate"] is True
    folder = today_folder(patient, intimate=True)
    (name,) = listing(up, "ivy", folder)
    assert up.gw.session("ivy").get(f"{up.gw.url}{folder}/{name}").status_code == 200
    assert up.gw.session("alice").get(f"{up.gw.url}{folder}/{name}").status_code in (403, 404)

    # A request not marked intimate files into the ordinary folder, never the intimate one.
    plain = next(_PATIENTS)
    _id, token, _ = up.create(plain)
    assert outcomes(
        send(up, token, verified(up, token), [("a.jpg", dirty_file("phone.jpg").data)])
    ) == ["stored"]
    assert consent_records(up, plain)[0]["intimate"] is False
    assert len(listing(up, "alice", today_folder(plain))) == 1


# --------------------------------------------------------------------------- Notify


def test_notify_receives_the_link_by_sms_and_email(up: Uploads) -> None:
    patient = next(_PATIENTS)
    before = len(up.notify.received)
    request_id, token, data = up.create(
        patient, "--mobile", "07700 900123", "--email", "pat@example.org", "--note", "your knee"
    )
    assert data["deliveries"]["sms"]["ok"] is True and data["deliveries"]["email"]["ok"] is True
    sms, email = up.notify.received[before:]
    assert sms["kind"] == "sms" and sms["phone_number"] == "07700900123"
    assert sms["template_id"] == up.notify.sms_template
    assert (
        email["email_address"] == "pat@example.org"
        and email["template_id"] == up.notify.email_template
    )
    for message in (sms, email):
        fields = message["personalisation"]
        assert fields["link"] == f"https://gp.example/upload/{token}"
        assert fields["practice"] == PRACTICE and fields["note"] == "your knee"
        assert patient not in json.dumps(message)
    listed = json.loads(up.cli("request", "list", "--json").stdout)
    assert next(r for r in listed if r["id"] == request_id)["deliveries"]["sms"]["id"] == sms["id"]


def test_a_notify_failure_is_shown_to_the_clinician(up: Uploads) -> None:
    settings = up.gw.instance.settings()
    broken = json.loads(json.dumps(settings))
    broken["uploads"]["notify"]["api_key"] = f"clindav_test-{up.notify.service_id}-{'0' * 36}"
    up.gw.instance.write_settings(broken)
    try:
        out = up.cli(
            "request",
            "create",
            "--patient",
            next(_PATIENTS),
            "--dob",
            DOB.isoformat(),
            "--mobile",
            "07700900123",
            "--as",
            "alice",
        )
    finally:
        up.gw.instance.write_settings(settings)
    assert "https://gp.example/upload/" in out.stdout  # the link works; give it by hand
    assert "clindav: warning: sms: not sent: GOV.UK Notify answered 403 AuthError" in out.stderr
    assert up.notify.refused[-1]["status"] == 403


# --------------------------------------------------------------------------- the clinician's side


def test_request_create_validates_as_consent_add_does(up: Uploads) -> None:
    mistyped = up.cli(
        "request", "create", "--patient", "943 476 5918", "--dob", "1984-03-27", check=False
    )
    assert mistyped.returncode == 1
    assert "Not a valid patient identifier: the check digit does not match" in mistyped.stderr
    future = up.cli(
        "request", "create", "--patient", next(_PATIENTS), "--dob", "2999-01-01", check=False
    )
    assert future.returncode == 1 and "dob: a date of birth in the past is needed" in future.stderr
    landline = up.cli(
        "request",
        "create",
        "--patient",
        next(_PATIENTS),
        "--dob",
        "1984-03-27",
        "--mobile",
        "0207 946 0000",
        check=False,
    )
    assert landline.returncode == 1 and "not a UK mobile number" in landline.stderr


def test_a_cancelled_link_answers_as_an_unknown_one(up: Uploads) -> None:
    request_id, token, _ = up.create(next(_PATIENTS))
    up.cli("request", "cancel", str(request_id), "--as", "alice")
    page = up.browser().get(up.page(token))
    assert page.status_code == 404 and page.headers["X-Clindav-Error"] == "upload-link-unusable"
    assert up.browser().head(up.page(token)).status_code == 404  # HEAD as GET
    assert up.browser().get(f"{up.gw.url}/upload/").status_code == 404  # nothing is listed


def test_a_link_takes_a_limited_number_of_requests(up: Uploads) -> None:
    _id, token, _ = up.create(next(_PATIENTS))
    browser = up.browser()
    answers = [browser.get(up.page(token)).status_code for _ in range(21)]
    assert answers[:20] == [200] * 20 and answers[20] == 429


# --------------------------------------------------------------------------- the console


def console_create(up: Uploads, user: str, **fields: str) -> requests.Response:
    s = sign_in(up.gw, user)
    page = s.get(f"{up.gw.url}/app/requests")
    assert page.status_code == 200, page.text[:500]
    data = {
        "csrf_token": form_token(page.text),
        "dob": DOB.isoformat(),
        "max_files": "10",
        "expires": "7",
    }
    return s.post(f"{up.gw.url}/app/requests", data={**data, **fields})


def test_the_console_creates_a_link_with_its_qr_code_and_shows_notifys_answer(up: Uploads) -> None:
    patient = next(_PATIENTS)
    before = len(up.notify.received)
    made = console_create(
        up, "alice", patient=patient, mobile="07700900456", email="not-an-address@x"
    )
    assert (
        made.status_code == 400 and "email: not an e-mail address" in made.text
    )  # the CLI's words
    made = console_create(up, "alice", patient=patient, mobile="07700900456", note="your ankle")
    assert made.status_code == 201, made.text[:1000]
    link = re.search(r'id="upload-link"[^>]*>([^<]+)<', made.text).group(1)
    assert link.startswith("https://gp.example/upload/")
    assert 'id="link-unreachable"' not in made.text  # uploads.public_url names the address
    assert "<svg" in made.text and 'data-ok="yes"' in made.text
    assert up.notify.received[before]["personalisation"]["link"] == link
    # The link works for the patient.
    token = link.rsplit("/", 1)[1]
    assert up.browser().get(up.page(token)).status_code == 200


def test_a_link_no_phone_can_open_is_flagged_by_the_console_and_the_cli(gateway: Gateway) -> None:
    """Without uploads.public_url, a link made from the gateway host carries its loopback
    address: both doors say so, with the setting to change."""
    made = console_create(Uploads(gateway), "alice", patient=next(_PATIENTS))
    assert made.status_code == 201, made.text[:1000]
    assert re.search(r'id="upload-link"[^>]*>https?://127\.0\.0\.1:', made.text)
    warning = re.search(r'id="link-unreachable">([^<]+)<', made.text)
    assert warning and "uploads.public_url" in warning.group(1), made.text[:2000]
    printed = Uploads(gateway).cli(
        "request", "create", "--patient", next(_PATIENTS), "--dob", DOB.isoformat(), "--as", "alice"
    )  # fmt: skip
    assert "warning: the link's address is 127.0.0.1" in printed.stderr, printed.stderr
    assert "uploads.public_url" in printed.stderr
    # The command writes links with server.host: served on every address, that is none.
    data = gateway.instance.settings()
    data["server"]["host"] = "0.0.0.0"
    gateway.instance.write_settings(data)
    printed = Uploads(gateway).cli(
        "request", "create", "--patient", next(_PATIENTS), "--dob", DOB.isoformat(), "--as", "alice"
    )  # fmt: skip
    assert "warning: the link's address is 0.0.0.0" in printed.stderr, printed.stderr


def test_the_console_shows_a_notify_failure(up: Uploads) -> None:
    # Notify no longer knows the e-mail template: it answers 400, the console says so.
    up.notify.email_template, kept = str(uuid.uuid4()), up.notify.email_template
    try:
        made = console_create(up, "alice", patient=next(_PATIENTS), email="pat@example.org")
    finally:
        up.notify.email_template = kept
    assert made.status_code == 201 and 'data-ok="no"' in made.text  # the link still stands
    assert "GOV.UK Notify answered 400 BadRequestError: Template not found" in made.text
    assert "Give the patient the link or the QR code instead" in made.text
    listed = sign_in(up.gw, "alice").get(f"{up.gw.url}/app/requests").text
    assert "email: not sent: GOV.UK Notify answered 400" in listed


def test_an_intimate_link_needs_the_intimate_group(up: Uploads) -> None:
    refused = console_create(up, "alice", patient=next(_PATIENTS), intimate="y")
    assert refused.status_code == 403 and "intimate group only" in refused.text
    allowed = console_create(up, "ivy", patient=next(_PATIENTS), intimate="y")
    assert allowed.status_code == 201


def test_the_clinicians_inbox_lists_what_patients_sent(up: Uploads) -> None:
    patient = next(_PATIENTS)
    made = console_create(up, "alice", patient=patient)
    token = re.search(r'id="upload-link"[^>]*>([^<]+)<', made.text).group(1).rsplit("/", 1)[1]
    files = [("a.jpg", dirty_file("phone.jpg").data), ("b.pdf.jpg", PDF)]
    assert outcomes(send(up, token, verified(up, token), files)) == ["stored", "refused"]
    inbox = sign_in(up.gw, "alice").get(f"{up.gw.url}/app/")
    section = inbox.text.split('id="submissions"', 1)[1]
    group = section.split(f'data-patient="{patient}"', 1)[1].split("</article>", 1)[0]
    assert group.count("data-file=") == 1 and "b.pdf.jpg: not stored" in group
    # Another clinician's inbox does not list them.
    other = sign_in(up.gw, "ivy").get(f"{up.gw.url}/app/")
    assert f'data-patient="{patient}"' not in other.text


# --------------------------------------------------------------------------- failing closed


def test_an_unmounted_share_is_a_503_and_leaves_the_link_unused(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient)
    secret = verified(up, token)
    share = up.gw.instance.share_dir("clinical")
    (marker,) = share.glob(".clindav-share.*")
    away = share.parent / "marker-away"
    marker.rename(away)
    try:
        # The marker is re-checked at most once a second; a few spaced tries stay well
        # inside uploads.link_rate (each try counts), however slow the machine.
        for _ in range(10):
            time.sleep(1.2)
            refused = send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)])
            if refused.status_code == 503:
                break
        assert (
            refused.status_code == 503 and refused.headers["X-Clindav-Error"] == "share-unavailable"
        )
        assert "Something went wrong" in refused.text
    finally:
        away.rename(marker)
    assert not consent_records(up, patient)  # nothing recorded, the link not used
    time.sleep(1.1)
    assert outcomes(send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)])) == [
        "stored"
    ]


def test_a_wrong_master_key_is_a_503_and_leaves_the_link_unused(up: Uploads) -> None:
    patient = next(_PATIENTS)
    _id, token, _ = up.create(patient)
    secret = verified(up, token)
    key = up.gw.instance.folder / "keys" / "master.key"
    right = key.read_text()
    key_id = right.strip().splitlines()[-1].split()[0]
    write_key(key, f"{key_id} {secrets.token_hex(32)}\n")  # same id, other bytes
    try:
        refused = send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)])
    finally:
        write_key(key, right)
    assert (
        refused.status_code == 503 and refused.headers["X-Clindav-Error"] == "master-key-mismatch"
    )
    assert not consent_records(up, patient)
    # The patient may send again with the same page: the link was not used up.
    assert outcomes(send(up, token, secret, [("a.jpg", dirty_file("phone.jpg").data)])) == [
        "stored"
    ]


def test_only_consent_recorders_make_links_and_only_their_maker_cancels_one(up: Uploads) -> None:
    auditor = sign_in(up.gw, "audrey")
    assert auditor.get(f"{up.gw.url}/app/requests").status_code == 403
    request_id, token, _ = up.create(next(_PATIENTS))  # made --as alice
    ivy = sign_in(up.gw, "ivy")
    page = ivy.get(f"{up.gw.url}/app/requests")
    refused = ivy.post(
        f"{up.gw.url}/app/requests/{request_id}/cancel", data={"csrf_token": form_token(page.text)}
    )
    assert refused.status_code == 403
    assert up.browser().get(up.page(token)).status_code == 200  # still open
    alice = sign_in(up.gw, "alice")
    page = alice.get(f"{up.gw.url}/app/requests")
    assert f'data-request="{request_id}"' in page.text
    done = alice.post(
        f"{up.gw.url}/app/requests/{request_id}/cancel", data={"csrf_token": form_token(page.text)}
    )
    assert done.status_code == 200 and f"Upload link #{request_id} cancelled" in done.text
    assert up.browser().get(up.page(token)).status_code == 404


# --------------------------------------------------------------------------- retried filing


@pytest.fixture
def small_clinical(tmp_path: Path) -> Iterator[Uploads]:
    """A gateway of its own whose clinical share is a 256 KiB tmpfs (made larger by the test)."""
    instance = uploads_instance(tmp_path)
    share = instance.share_dir("clinical")
    markers = [entry.name for entry in share.glob(".clindav-share.*")]
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(share)], check=True
    )
    for name in markers:  # the instance's mark goes with the share
        (share / name).mkdir(mode=0o700)
    gw = start_in_process(instance)
    try:
        yield Uploads(gw)
    finally:
        gw.stop()
        subprocess.run(["umount", "-l", str(share)], check=False)


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: ``side`` x ``side`` x 3 bytes of noise."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


def test_a_retry_after_a_failure_part_way_stores_nothing_twice(small_clinical: Uploads) -> None:
    up = small_clinical
    patient = next(_PATIENTS)
    request_id, token, _ = up.create(patient)
    secret = verified(up, token)
    photos = [("small.jpg", dirty_file("phone.jpg").data), ("large.png", noise_png(400))]
    # The share fills up at the second photo: the first is stored, then the gateway fails.
    failed = send(up, token, secret, photos, teaching=True)
    assert failed.status_code == 507, up.gw.log()[-4000:]
    assert failed.headers["X-Clindav-Error"] == "insufficient-storage"
    folder = today_folder(patient)
    assert len(listing(up, "alice", folder)) == 1
    (first,) = consent_records(up, patient)

    share = up.gw.instance.share_dir("clinical")
    subprocess.run(["mount", "-o", "remount,size=16m", str(share)], check=True)
    # The patient sends the same photos again, this time without the teaching tick.
    retried = send(up, token, secret, photos)
    assert retried.status_code == 200, retried.text[:500]
    assert outcomes(retried) == ["stored", "stored"]

    assert len(listing(up, "alice", folder)) == 2  # the first photo once, not twice
    (record,) = consent_records(up, patient)  # the first try's record, reused
    assert record["id"] == first["id"]
    assert record["form"] == f"upload-request-{request_id}/statement-1"
    assert record["active_scopes"] == ["record", "share"]  # teaching unticked on the retry
    assert [w["scopes"] for w in record["withdrawals"]] == [["teaching"]]

    events = audit_events(up, patient)
    codes = [
        (e["action"], e["code"])
        for e in events
        if e["action"].startswith(("PUT", "UPLOAD-SUBMIT", "CONSENT"))
    ]
    assert codes.count(("PUT", "stored")) == 2
    assert codes.count(("PUT", "upload-already-filed")) == 1
    assert codes.count(("CONSENT-ADD", "consent-recorded")) == 1
    assert ("UPLOAD-SUBMIT", "upload-link-released") in codes
    assert codes[-1] == ("UPLOAD-SUBMIT", "upload-submitted")
    listed = json.loads(up.cli("request", "list", "--json").stdout)
    mine = next(r for r in listed if r["id"] == request_id)
    assert mine["state"] == "submitted"
    assert "audit chain intact" in up.cli("audit", "verify").stdout


# --------------------------------------------------------------------------- rate limits


def test_the_limits_count_across_the_gateways_worker_processes(tmp_path: Path) -> None:
    instance = uploads_instance(tmp_path)
    data = instance.settings()
    data["server"]["workers"] = 2
    instance.write_settings(data)
    gw = start_gateway(instance)  # its own process: it forks the two workers
    try:
        assert _wait_until(lambda: len(_children(gw.process.pid)) == 2), gw.log()
        workers = _children(gw.process.pid)
        up = Uploads(gw)
        _id, token, _ = up.create(next(_PATIENTS))
        before = {pid: _cpu_ticks(pid) for pid in workers}
        answers = []
        for _ in range(30):  # new connections: the kernel spreads them over both workers
            with requests.Session() as s:
                s.trust_env = False
                answers.append(s.get(up.page(token), timeout=30).status_code)
        used = {pid: _cpu_ticks(pid) - before[pid] for pid in workers}
    finally:
        gw.stop()
    assert all(ticks > 0 for ticks in used.values()), used  # both workers answered
    # uploads.link_rate is 20 for the link, whichever process counts.
    assert answers[:20] == [200] * 20 and answers[20:] == [429] * 10, answers


def filed_so_far(instance: Instance, request_id: int) -> int:
    """Photos the link's filing has committed (each noted in its own commit)."""
    with sqlite3.connect(f"file:{instance.folder / 'clindav.db'}?mode=ro", uri=True) as db:
        (results,) = db.execute(
            "SELECT results FROM upload_request WHERE id = ?", (request_id,)
        ).fetchone()
    return len(json.loads(results))


def test_a_gateway_killed_while_filing_takes_the_retry_after_the_lease(
    tmp_path: Path, clock: InstanceClock
) -> None:
    instance = uploads_instance(tmp_path)
    up = Uploads(start_gateway(instance), clock=clock)  # its own process: killed mid-filing
    try:
        patient = next(_PATIENTS)
        request_id, token, _ = up.create(patient)
        secret = verified(up, token)
        photos = [("a.jpg", dirty_file("phone.jpg").data)]
        photos += [(f"n{n}.png", noise_png(1500)) for n in range(6)]  # seconds to scrub
        answers: list[object] = []

        def patient_sends() -> None:
            try:
                answers.append(send(up, token, secret, photos))
            except requests.ConnectionError as exc:
                answers.append(exc)

        sender = threading.Thread(target=patient_sends)
        sender.start()
        deadline = time.monotonic() + 120
        while filed_so_far(instance, request_id) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        up.gw.kill()  # SIGKILL mid-filing: no release, no finish
        sender.join(60)
        filed = filed_so_far(instance, request_id)
        assert 1 <= filed < len(photos), filed
        assert isinstance(answers[0], requests.ConnectionError)

        up.gw = start_in_process(instance)  # the restart: any gateway of the instance
        soon = send(up, token, secret, photos)  # within the lease: the filing may still run
        assert soon.status_code == 410 and soon.headers["X-Clindav-Error"] == "upload-link-used"
        clock.advance("11m")
        retried = send(up, token, secret, photos)
        assert retried.status_code == 200, retried.text[:500]
        assert outcomes(retried) == ["stored"] * len(photos)

        assert len(listing(up, "alice", today_folder(patient))) == len(photos)  # none twice
        assert len(consent_records(up, patient)) == 1
        codes = [(e["action"], e["code"]) for e in audit_events(up, patient)]
        assert codes.count(("PUT", "stored")) == len(photos)
        assert codes.count(("PUT", "upload-already-filed")) == filed
        assert codes.count(("UPLOAD-SUBMIT", "upload-submitted")) == 1
    finally:
        up.gw.stop()
