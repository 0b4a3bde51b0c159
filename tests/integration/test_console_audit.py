"""The console's audit pages over plain HTTP: search, pages of results, the patient
report, the chain's verification, and what each of them leaves in the trail."""

from __future__ import annotations

import re
import sqlite3

from tests.conftest import Gateway
from tests.integration.test_consent import PATIENT, consent
from tests.integration.test_console_admin import post, rows
from tests.integration.test_console_http import sign_in
from tests.integration.test_dav_methods import small_jpeg

OTHER = "4010232137"


def shown(page: str) -> list[int]:
    """The ``seq`` of every event row of a results page, in page order."""
    return [int(seq) for seq in re.findall(r'<tr data-seq="(\d+)"', page)]


def test_search_by_each_term_in_pages_without_terms_in_addresses(gateway: Gateway) -> None:
    inst = gateway.instance
    consent(inst, "--scope", "record")
    consent(inst, "--scope", "record", patient=OTHER)
    alice, ivy = gateway.session("alice"), gateway.session("ivy")
    for patient in (PATIENT, OTHER):
        assert alice.request("MKCOL", f"{gateway.url}/clinical/{patient}").status_code == 201
        assert (
            alice.put(f"{gateway.url}/clinical/{patient}/a.jpg", data=small_jpeg()).status_code
            == 201
        )
    for _ in range(60):
        assert ivy.get(f"{gateway.url}/clinical/{PATIENT}/a.jpg").status_code == 200
    assert (
        gateway.session("audrey").get(f"{gateway.url}/clinical/{PATIENT}/a.jpg").status_code == 403
    )
    auditor = sign_in(gateway, "audrey")

    # Newest first, 50 a page; Older and Newer continue from the page shown.
    first = post(auditor, gateway, "/audit", user="ivy")
    assert first.status_code == 200 and first.url.endswith("/app/audit")
    seqs = shown(first.text)
    assert len(seqs) == 50 and seqs == sorted(seqs, reverse=True)
    assert f'name="before" value="{seqs[-1]}"' in first.text and 'name="after"' not in first.text
    older = shown(post(auditor, gateway, "/audit", user="ivy", before=seqs[-1]).text)
    assert len(older) == 10 and max(older) < min(seqs)
    back = post(auditor, gateway, "/audit", user="ivy", after=max(older))
    assert shown(back.text) == seqs

    # Each term narrows the search.
    found = set(shown(post(auditor, gateway, "/audit", patient=OTHER).text))
    recorded = rows(
        inst,
        "SELECT seq FROM audit_event WHERE patient_id = ? AND action != 'AUDIT-SEARCH'",
        OTHER,
    )
    assert found == {seq for (seq,) in recorded} and len(found) == 3  # consent, MKCOL, PUT
    refused = post(auditor, gateway, "/audit", outcome="refusal", status="403").text
    assert shown(refused) and "refused GET (policy-denied)" in refused and "ivy" not in refused
    by_path = post(auditor, gateway, "/audit", path=f"/clinical/{OTHER}", status="stored").text
    assert len(shown(by_path)) == 1 and f"clinical:/{OTHER}/a.jpg" in by_path
    later = post(auditor, gateway, "/audit", user="ivy", since="2999-01-01").text
    assert "No event matches." in later

    # Bad terms: the form says what is wrong, and the refusal is on record.
    for terms, message in (
        ({"since": "01/02/2026"}, "Not an ISO date (YYYY-MM-DD): &#39;01/02/2026&#39;."),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "The end of the date range comes before"),
        ({"path": "/nowhere"}, "No share holds &#39;/nowhere&#39;."),
        ({"outcome": "maybe"}, "The outcome is one of success, miss, refusal"),
        ({"before": "x"}, "That page of results does not exist."),
    ):
        r = post(auditor, gateway, "/audit", **terms)
        assert r.status_code in (400, 404) and message in r.text, (terms, r.text)
    searches = rows(inst, "SELECT actor, status, patient_id, details FROM audit_event "
                    "WHERE action = 'AUDIT-SEARCH' ORDER BY seq")  # fmt: skip
    assert ("audrey", 200, OTHER) in [s[:3] for s in searches]
    assert '"user": "ivy"' in searches[0][3] and '"console": true' in searches[0][3]
    assert [s[1] for s in searches].count(400) == 4 and [s[1] for s in searches].count(404) == 1


def test_the_patient_report_and_who_ran_it(gateway: Gateway) -> None:
    inst = gateway.instance
    consent(inst, "--scope", "record")
    alice = gateway.session("alice")
    assert alice.request("MKCOL", f"{gateway.url}/clinical/{PATIENT}").status_code == 201
    put = alice.put(f"{gateway.url}/clinical/{PATIENT}/a.jpg", data=small_jpeg())
    read = gateway.session("root-admin").get(f"{gateway.url}/clinical/{PATIENT}/a.jpg")
    auditor = sign_in(gateway, "audrey")
    report = post(auditor, gateway, "/audit/patient", patient="943 476 5919")
    assert report.status_code == 200 and report.url.endswith("/app/audit/patient")
    for r in (put, read):
        assert f'data-request="{r.headers["X-Request-Id"]}"' in report.text
    assert "uploaded" in report.text and "recorded consent" in report.text
    assert f"Patient {PATIENT}" in report.text
    empty = post(auditor, gateway, "/audit/patient", patient=OTHER)
    assert f"No audit events for patient {OTHER}." in empty.text
    for terms, message in (
        ({"patient": " "}, "Give the patient id to report on."),
        ({"patient": PATIENT, "until": "yesterday"}, "Not an ISO date (YYYY-MM-DD)"),
    ):
        r = post(auditor, gateway, "/audit/patient", **terms)
        assert r.status_code == 400 and message in r.text
    again = post(auditor, gateway, "/audit/patient", patient=PATIENT)
    assert "read the access report" in again.text
    assert rows(inst, "SELECT actor, patient_id, status FROM audit_event "
                "WHERE action = 'AUDIT-REPORT' AND status = 200 ORDER BY seq") == [
        ("audrey", PATIENT, 200), ("audrey", OTHER, 200), ("audrey", PATIENT, 200),
    ]  # fmt: skip


def test_verification_finds_an_edited_event(gateway: Gateway) -> None:
    inst = gateway.instance
    assert (
        gateway.session("alice").put(f"{gateway.url}/documents/a.txt", data=b"a").status_code == 201
    )
    admin = sign_in(gateway, "root-admin")
    intact = post(admin, gateway, "/audit/verify")
    assert intact.status_code == 200
    assert re.search(r"Intact: \d+ events, each matching its MAC", intact.text)
    (seq,) = rows(inst, "SELECT seq FROM audit_event WHERE code = 'stored'")[0]
    with sqlite3.connect(inst.folder / "clindav.db") as db:
        db.execute("UPDATE audit_event SET actor = 'someone-else' WHERE seq = ?", (seq,))
    broken = post(admin, gateway, "/audit/verify")
    assert "Broken: 1 problem(s); the first at position" in broken.text
    assert f"Position {seq}: content does not match its MAC (edited or forged)" in broken.text
    assert [r[0] for r in rows(inst, "SELECT code FROM audit_event WHERE action = 'AUDIT-VERIFY' "
                               "ORDER BY seq")] == ["chain-intact", "chain-broken"]  # fmt: skip
