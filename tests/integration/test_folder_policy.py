"""Rules that guard a sub-folder guard the folder itself, its listing entry, and
every operation on a parent that would reach it."""

from __future__ import annotations

from tests.conftest import Gateway
from tests.integration.test_consent import consent
from tests.integration.test_dav_methods import small_jpeg

PATIENT = "9434765919"


def test_intimate_folder_is_guarded_at_every_level(gateway: Gateway) -> None:
    consent(gateway.instance, "--scope", "record", "--intimate", patient=PATIENT)
    ivy, alice = gateway.session("ivy"), gateway.session("alice")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert ivy.request("MKCOL", folder).status_code == 201
    assert ivy.request("MKCOL", f"{folder}/intimate").status_code == 201
    assert ivy.put(f"{folder}/intimate/a.jpg", data=small_jpeg()).status_code == 201
    assert ivy.put(f"{folder}/arm.jpg", data=small_jpeg()).status_code == 201

    listing = alice.request("PROPFIND", folder, headers={"Depth": "1"})
    assert listing.status_code == 207
    assert "arm.jpg" in listing.text and "intimate" not in listing.text
    assert "intimate" in ivy.request("PROPFIND", folder, headers={"Depth": "1"}).text

    for method in ("PROPFIND", "DELETE"):
        r = alice.request(method, f"{folder}/intimate", headers={"Depth": "0"})
        assert r.status_code == 403, method
    moved = alice.request(
        "MOVE", f"{folder}/intimate", headers={"Destination": f"{folder}/elsewhere"}
    )
    assert moved.status_code == 403
    # Deleting, moving or copying the parent would reach the intimate images.
    assert alice.delete(folder).status_code == 403
    copy = alice.request(
        "COPY", folder, headers={"Destination": f"{gateway.url}/clinical/4010232137"}
    )
    assert copy.status_code == 403
    assert ivy.get(f"{folder}/intimate/a.jpg").status_code == 200
    # The member of the group may do all of it.
    assert ivy.delete(folder).status_code == 204
