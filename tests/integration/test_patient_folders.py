"""Patient folders are refused at MKCOL when their name is not a valid patient id
(issue 16 point 5), against the running gateway."""

from __future__ import annotations

from urllib.parse import quote

from tests.conftest import Gateway
from tests.integration.test_consent import audit

PATIENT = "9434765919"


def test_mkcol_of_an_invalid_patient_folder_is_refused_and_audited(gateway: Gateway) -> None:
    s = gateway.session()
    clinical = f"{gateway.url}/clinical"
    for name, reason in (("9434765918", "mistyped"), ("John Smith", "10 digits")):
        refused = s.request("MKCOL", f"{clinical}/{quote(name)}/")
        assert refused.status_code == 422, refused.text
        assert refused.headers["X-Clindav-Error"] == "invalid-patient-id"
        assert reason in refused.text
        # Nothing was made: a second try is refused the same way, not 405.
        assert s.request("MKCOL", f"{clinical}/{quote(name)}/").status_code == 422
    listing = s.request("PROPFIND", f"{clinical}/", headers={"Depth": "1"}).text
    assert "9434765918" not in listing and "John" not in listing
    events = [e for e in audit(gateway.instance) if e.code == "invalid-patient-id"]
    assert [(e.action, e.status, e.logical_path) for e in events] == [
        ("MKCOL", 422, "/9434765918/"),
        ("MKCOL", 422, "/9434765918/"),
        ("MKCOL", 422, "/John Smith/"),
        ("MKCOL", 422, "/John Smith/"),
    ]
    assert "mistyped" in events[0].reason


def test_valid_folders_and_shares_without_patients_are_unchanged(gateway: Gateway) -> None:
    s = gateway.session()
    assert s.request("MKCOL", f"{gateway.url}/clinical/{PATIENT}/").status_code == 201
    # Below the patient folder, names are free; shares without patients take any name.
    assert s.request("MKCOL", f"{gateway.url}/clinical/{PATIENT}/wound care").status_code == 201
    assert s.request("MKCOL", f"{gateway.url}/documents/John Smith").status_code == 201


def test_a_patient_folder_cannot_be_renamed_to_an_invalid_id(gateway: Gateway) -> None:
    s = gateway.session("root-admin")
    clinical = f"{gateway.url}/clinical"
    assert s.request("MKCOL", f"{clinical}/{PATIENT}/").status_code == 201
    moved = s.request(
        "MOVE", f"{clinical}/{PATIENT}/", headers={"Destination": "/clinical/John%20Smith/"}
    )
    assert moved.status_code == 422 and moved.headers["X-Clindav-Error"] == "invalid-patient-id"
    copied = s.request(
        "COPY", f"{clinical}/{PATIENT}/", headers={"Destination": "/clinical/9434765918/"}
    )
    assert copied.status_code == 422 and copied.headers["X-Clindav-Error"] == "invalid-patient-id"
    assert (
        s.request("PROPFIND", f"{clinical}/{PATIENT}/", headers={"Depth": "0"}).status_code == 207
    )
