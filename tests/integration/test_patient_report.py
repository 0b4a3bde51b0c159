"""One command gives a complete per-patient access report (issue 16 point 7).

Uploads, reads, a listing of the patient's folder, a teaching copy named by
case label (and a read and delete of it), a move and a delete, by two users
over real HTTP: every one of them is in ``clindav audit report --patient``
and ``audit export --patient``, and nothing of another patient is.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import Gateway, run_cli
from tests.integration.test_consent import written_consent
from tests.integration.test_dav_methods import small_jpeg

PATIENT, OTHER = "9434765919", "4010232137"


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_the_patient_report_holds_every_access(gateway: Gateway) -> None:
    instance = gateway.instance
    written_consent(instance, "record", "share", "teaching", form="scans/consent/2026-077.pdf")
    alice, admin = gateway.session("alice"), gateway.session("root-admin")
    clinical, teaching = f"{gateway.url}/clinical/{PATIENT}", f"{gateway.url}/teaching"
    mine: list[requests.Response] = []

    def call(s: requests.Session, method: str, url: str, **kwargs: object) -> None:
        r = s.request(method, url, **kwargs)  # type: ignore[arg-type]
        assert r.status_code < 300, (method, url, r.status_code, r.text)
        mine.append(r)

    call(alice, "MKCOL", clinical)
    call(alice, "PUT", f"{clinical}/wound.jpg", data=small_jpeg())
    call(alice, "PUT", f"{clinical}/rash.jpg", data=small_jpeg())
    call(alice, "GET", f"{clinical}/wound.jpg")
    call(admin, "GET", f"{clinical}/wound.jpg")
    call(alice, "PROPFIND", clinical, headers={"Depth": "1"})
    case = f"{teaching}/case-2026-014.jpg"
    call(alice, "COPY", f"{clinical}/wound.jpg", headers={"Destination": case})
    call(admin, "GET", case)  # the copy's name does not say whose it is
    call(alice, "MOVE", f"{clinical}/rash.jpg", headers={"Destination": f"{clinical}/rash-2.jpg"})
    call(alice, "DELETE", f"{clinical}/rash-2.jpg")
    call(admin, "DELETE", case)
    # A legal hold on the patient's folder, placed and lifted: part of their history.
    for change in ("add", "remove"):
        run_cli(
            "hold", change, f"/clinical/{PATIENT}", "--reason", "complaint", config=instance.config
        )
    # Someone else's patient: never in this report.
    other: list[requests.Response] = []
    other.append(alice.request("MKCOL", f"{gateway.url}/clinical/{OTHER}"))
    other.append(alice.put(f"{gateway.url}/clinical/{OTHER}/mole.jpg", data=small_jpeg()))
    other.append(alice.get(f"{gateway.url}/clinical/{OTHER}/mole.jpg"))
    assert all(r.status_code < 300 for r in other)

    report = json.loads(
        run_cli(
            "audit", "report", "--patient", "943 476 5919", "--json", config=instance.config
        ).stdout
    )
    events = {e["request_id"]: e for e in report["events"]}
    for r in mine:
        assert r.headers["X-Request-Id"] in events, (r.request.method, r.url)
    assert not {r.headers["X-Request-Id"] for r in other} & set(events)
    assert {e["patient_id"] for e in report["events"]} == {PATIENT}
    activities = {
        (e["actor"], e["activity"], e["share"], e["logical_path"]) for e in events.values()
    }
    assert {
        ("alice", "uploaded", "clinical", f"/{PATIENT}/wound.jpg"),
        ("alice", "read", "clinical", f"/{PATIENT}/wound.jpg"),
        ("root-admin", "read", "clinical", f"/{PATIENT}/wound.jpg"),
        ("alice", "listed", "clinical", f"/{PATIENT}"),
        ("alice", "copied", "teaching", "/case-2026-014.jpg"),  # details name the source
        ("root-admin", "read", "teaching", "/case-2026-014.jpg"),
        ("alice", "moved", "clinical", f"/{PATIENT}/rash.jpg"),
        ("alice", "deleted (to trash)", "clinical", f"/{PATIENT}/rash-2.jpg"),
        ("root-admin", "deleted (to trash)", "teaching", "/case-2026-014.jpg"),
    } <= activities, activities
    assert report["by_person"]["alice"]["uploaded"]["count"] == 2
    assert {"HOLD", "RELEASE"} <= {e["action"] for e in events.values()}
    assert "cli" in {e["client"] for e in events.values()}  # the consent record is there too

    # The same events from audit export, and a readable summary for people.
    exported = run_cli("audit", "export", "--patient", PATIENT, config=instance.config).stdout
    assert {json.loads(line)["request_id"] for line in exported.splitlines()} == set(events)
    text = run_cli("audit", "report", "--patient", PATIENT, config=instance.config).stdout
    assert text.startswith(f"Access report for patient {PATIENT}: {len(events)} events")
    assert "\nalice\n  " in text and "\nroot-admin\n  " in text
    assert "  uploaded: 2 times, " in text and "  listed: once, " in text
    assert f"teaching:/case-2026-014.jpg (from clinical:/{PATIENT}/wound.jpg)" in text
    nobody = run_cli("audit", "report", "--patient", "4857773456", config=instance.config)
    assert nobody.stdout == "No audit events for patient 4857773456.\n"
