"""COPY and MOVE pass the checks a PUT to their destination would (issue 15,
points 2, 3, 5 and 10), against the running gateway.

- within one share: the policy, the patient folder, consent scope and
  intimate consent, the intimate group, for a file and every file under a
  folder; intimate images stay where only the intimate group may see them;
- between shares: an intimate image is judged as intimate at the destination;
- another user's held image or placeholder holds its name (409
  ``name-occupied``) against PUT, LOCK, COPY and MOVE;
- a COPY/MOVE event names source and destination, and a target it replaces
  gets its own ``trashed`` event.
"""

from __future__ import annotations

import json
from typing import Any

import requests
import sqlalchemy
import yaml

from gateway.db import AuditEvent, StoredObject
from gateway.settings import load_settings
from tests.conftest import Gateway, Instance, run_cli, start_in_process
from tests.integration.test_consent import consent
from tests.integration.test_dav_methods import LOCK_BODY, small_jpeg

PATIENT, OTHER = "9434765919", "4010232137"


def relocate(
    session: requests.Session, gateway: Gateway, method: str, source: str, destination: str
) -> requests.Response:
    return session.request(
        method,
        f"{gateway.url}{source}",
        headers={"Destination": f"{gateway.url}{destination}", "Overwrite": "T"},
    )


def refused(response: requests.Response, status: int, code: str) -> None:
    assert (response.status_code, response.headers.get("X-Clindav-Error")) == (status, code), (
        response.status_code,
        response.text,
    )


def query(instance: Instance, statement: Any) -> list[Any]:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement))
    finally:
        engine.dispose()


def registry(instance: Instance, share: str, path: str) -> Any:
    rows = query(
        instance,
        sqlalchemy.select(StoredObject).where(
            StoredObject.share == share, StoredObject.logical_path == path
        ),
    )
    return rows[0] if rows else None


def events(instance: Instance, request_id: str) -> list[Any]:
    return query(
        instance,
        sqlalchemy.select(AuditEvent)
        .where(AuditEvent.request_id == request_id)
        .order_by(AuditEvent.seq),
    )


def mkcols(session: requests.Session, gateway: Gateway, *paths: str) -> None:
    for path in paths:
        assert session.request("MKCOL", f"{gateway.url}{path}").status_code == 201, path


def test_copy_and_move_within_a_share_pass_the_destinations_checks(gateway: Gateway) -> None:
    consent(gateway.instance, "--scope", "record")
    consent(gateway.instance, "--scope", "record", patient=OTHER)
    ivy = gateway.session("ivy")  # clinicians and intimate-access: the policy lets her do all
    p, o = f"/clinical/{PATIENT}", f"/clinical/{OTHER}"
    mkcols(ivy, gateway, p, o, f"{p}/intimate", f"{p}/batch")
    assert ivy.put(f"{gateway.url}{p}/a.jpg", data=small_jpeg()).status_code == 201
    assert ivy.put(f"{gateway.url}{p}/batch/b.jpg", data=small_jpeg()).status_code == 201
    for method in ("COPY", "MOVE"):
        # A file, and a folder with a file in it, into another patient's folder.
        refused(
            relocate(ivy, gateway, method, f"{p}/a.jpg", f"{o}/a.jpg"), 409, "wrong-patient-folder"
        )
        refused(
            relocate(ivy, gateway, method, f"{p}/batch", f"{o}/batch"), 409, "wrong-patient-folder"
        )
        # To the share root, out of every patient folder.
        refused(
            relocate(ivy, gateway, method, f"{p}/a.jpg", "/clinical/a.jpg"),
            409,
            "not-in-patient-folder",
        )
        # Into the intimate folder: the consent does not allow intimate images.
        refused(
            relocate(ivy, gateway, method, f"{p}/a.jpg", f"{p}/intimate/a.jpg"),
            403,
            "consent-missing",
        )
        refused(
            relocate(ivy, gateway, method, f"{p}/batch", f"{p}/intimate/batch"),
            403,
            "consent-missing",
        )
    # Nothing moved, nothing was copied.
    for path in (f"{p}/a.jpg", f"{p}/batch/b.jpg"):
        assert ivy.get(f"{gateway.url}{path}").status_code == 200, path
    for path in (f"{o}/a.jpg", f"{o}/batch", "/clinical/a.jpg", f"{p}/intimate/a.jpg"):
        assert ivy.get(f"{gateway.url}{path}").status_code == 404, path
    # Within the patient's own folder both still work.
    assert relocate(ivy, gateway, "COPY", f"{p}/a.jpg", f"{p}/batch/c.jpg").status_code == 201
    assert relocate(ivy, gateway, "MOVE", f"{p}/batch", f"{p}/2026").status_code == 201
    assert registry(gateway.instance, "clinical", f"/{PATIENT}/2026/c.jpg").patient_id == PATIENT


def test_intimate_images_go_only_where_intimate_images_may_be(gateway: Gateway) -> None:
    """Into an intimate folder: the destination's intimate rules.  Out of one:
    the image stays intimate, and a folder everyone may read cannot take it."""
    consent(gateway.instance, "--scope", "record")
    ivy, alice = gateway.session("ivy"), gateway.session("alice")
    p = f"/clinical/{PATIENT}"
    mkcols(ivy, gateway, p, f"{p}/intimate")
    assert ivy.put(f"{gateway.url}{p}/a.jpg", data=small_jpeg()).status_code == 201
    refused(
        relocate(ivy, gateway, "MOVE", f"{p}/a.jpg", f"{p}/intimate/a.jpg"), 403, "consent-missing"
    )
    intimate = consent(gateway.instance, "--scope", "record", "--intimate")
    assert relocate(ivy, gateway, "MOVE", f"{p}/a.jpg", f"{p}/intimate/a.jpg").status_code == 201
    # Recorded as a PUT there would be: under the record that allows intimate images.
    assert (
        registry(gateway.instance, "clinical", f"/{PATIENT}/intimate/a.jpg").consent_id
        == intimate["id"]
    )
    assert alice.get(f"{gateway.url}{p}/intimate/a.jpg").status_code == 403
    # Out of the intimate folder, where every clinician could read it: refused.
    for method in ("COPY", "MOVE"):
        refused(
            relocate(ivy, gateway, method, f"{p}/intimate/a.jpg", f"{p}/a.jpg"),
            403,
            "intimate-destination-not-restricted",
        )
        refused(
            relocate(ivy, gateway, method, f"{p}/intimate", f"{p}/open"),
            403,
            "intimate-destination-not-restricted",
        )
    assert ivy.get(f"{gateway.url}{p}/intimate/a.jpg").status_code == 200
    for path in (f"{p}/a.jpg", f"{p}/open"):
        assert alice.get(f"{gateway.url}{path}").status_code == 404, path
    # Within intimate folders it moves freely.
    mkcols(ivy, gateway, f"{p}/intimate/2026")
    assert (
        relocate(
            ivy, gateway, "MOVE", f"{p}/intimate/a.jpg", f"{p}/intimate/2026/a.jpg"
        ).status_code
        == 201
    )


def test_a_held_image_moved_in_its_folder_stays_held(gateway: Gateway) -> None:
    alice, ivy = gateway.session("alice"), gateway.session("ivy")
    p = f"/clinical/{PATIENT}"
    mkcols(alice, gateway, p)
    assert alice.put(f"{gateway.url}{p}/mole.jpg", data=small_jpeg()).status_code == 201
    held = registry(gateway.instance, "clinical", f"/{PATIENT}/mole.jpg").held_until
    assert relocate(alice, gateway, "MOVE", f"{p}/mole.jpg", f"{p}/mole-2.jpg").status_code == 201
    assert relocate(alice, gateway, "COPY", f"{p}/mole-2.jpg", f"{p}/mole-3.jpg").status_code == 201
    for name in ("mole-2.jpg", "mole-3.jpg"):
        row = registry(gateway.instance, "clinical", f"/{PATIENT}/{name}")
        assert row.held_until == held, name  # the window does not start again
        assert alice.get(f"{gateway.url}{p}/{name}").status_code == 200
        assert ivy.get(f"{gateway.url}{p}/{name}").status_code == 404


def _reserve_referrals_intimate_folder(instance: Instance) -> None:
    """A policy in which /referrals/intimate/ is for intimate-access only."""
    path = instance.folder / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["rules"][:0] = [
        {
            "name": "referred-intimate-images",
            "share": "referrals",
            "path": "intimate/**",
            "groups": ["intimate-access"],
            "methods": ["read", "write", "delete"],
        },
        {
            "name": "referred-intimate-images-hidden",
            "share": "referrals",
            "path": "intimate/**",
            "groups": ["*"],
            "methods": ["read", "write", "delete"],
            "effect": "deny",
        },
    ]
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


def test_an_intimate_image_copied_to_another_share_stays_intimate(instance: Instance) -> None:
    _reserve_referrals_intimate_folder(instance)
    consent(instance, "--scope", "record", "--intimate")
    gw = start_in_process(instance)
    try:
        ivy, alice = gw.session("ivy"), gw.session("alice")
        p = f"/clinical/{PATIENT}"
        mkcols(ivy, gw, p, f"{p}/intimate", "/referrals/intimate")
        assert ivy.put(f"{gw.url}{p}/intimate/a.jpg", data=small_jpeg()).status_code == 201
        source, reserved = f"{p}/intimate/a.jpg", "/referrals/intimate/case-1.jpg"
        # Sharing allowed, but not of intimate images: the copy is refused.
        consent(instance, "--scope", "record", "--scope", "share")
        refused(relocate(ivy, gw, "COPY", source, reserved), 403, "consent-missing")
        refused(relocate(ivy, gw, "MOVE", source, reserved), 403, "consent-missing")
        # Intimate sharing allowed: still only where only intimate-access can see it.
        consent(instance, "--scope", "record", "--scope", "share", "--intimate")
        refused(
            relocate(ivy, gw, "COPY", source, "/referrals/case-1.jpg"),
            403,
            "intimate-destination-not-restricted",
        )
        # A share with no consent stage cannot judge intimate images at all.
        refused(
            relocate(ivy, gw, "COPY", source, "/documents/case-1.jpg"),
            403,
            "intimate-destination-not-restricted",
        )
        for path in ("/referrals/case-1.jpg", "/documents/case-1.jpg"):
            assert alice.get(f"{gw.url}{path}").status_code == 404, path
        copied = relocate(ivy, gw, "COPY", source, reserved)
        assert copied.status_code == 201, copied.text
        assert ivy.get(f"{gw.url}{reserved}").status_code == 200
        assert alice.get(f"{gw.url}{reserved}").status_code == 403
        # The copy carries "intimate" on: it cannot be moved out of the reserved folder.
        refused(
            relocate(ivy, gw, "MOVE", reserved, "/referrals/case-1.jpg"),
            403,
            "intimate-destination-not-restricted",
        )
    finally:
        gw.stop()


def test_another_users_private_object_holds_its_name(instance: Instance) -> None:
    instance.add_user("bob", "clinicians")
    consent(instance, "--scope", "record", "--scope", "share", patient=OTHER)
    gw = start_in_process(instance)
    try:
        alice, bob = gw.session("alice"), gw.session("bob")
        p = f"/clinical/{PATIENT}"  # no consent: images here are held
        mkcols(alice, gw, p, f"/clinical/{OTHER}")
        assert alice.put(f"{gw.url}{p}/mole.jpg", data=small_jpeg()).status_code == 201
        original = alice.get(f"{gw.url}{p}/mole.jpg").content
        assert bob.get(f"{gw.url}{p}/mole.jpg").status_code == 404  # bob cannot see it
        refused(bob.put(f"{gw.url}{p}/mole.jpg", data=small_jpeg()), 409, "name-occupied")
        refused(bob.request("LOCK", f"{gw.url}{p}/mole.jpg", data=LOCK_BODY), 409, "name-occupied")
        assert bob.put(f"{gw.url}{p}/other.jpg", data=small_jpeg()).status_code == 201
        for method in ("COPY", "MOVE"):
            refused(
                relocate(bob, gw, method, f"{p}/other.jpg", f"{p}/mole.jpg"), 409, "name-occupied"
            )
        # An upload in progress (a LOCK's placeholder) holds its name too.
        assert alice.request("LOCK", f"{gw.url}{p}/new.jpg", data=LOCK_BODY).status_code in (
            200,
            201,
        )
        refused(bob.put(f"{gw.url}{p}/new.jpg", data=small_jpeg()), 409, "name-occupied")
        # ... and between shares.
        locked = alice.request("LOCK", f"{gw.url}/referrals/case.jpg", data=LOCK_BODY)
        assert locked.status_code in (200, 201)
        unlock = {"Lock-Token": locked.headers["Lock-Token"]}
        assert alice.request("UNLOCK", f"{gw.url}/referrals/case.jpg", headers=unlock).ok
        assert bob.put(f"{gw.url}/clinical/{OTHER}/x.jpg", data=small_jpeg()).status_code == 201
        refused(
            relocate(bob, gw, "COPY", f"/clinical/{OTHER}/x.jpg", "/referrals/case.jpg"),
            409,
            "name-occupied",
        )
        assert alice.get(f"{gw.url}{p}/mole.jpg").content == original
        assert alice.get(f"{gw.url}{p}/other.jpg").status_code == 404  # bob's stays his
        trashed = json.loads(run_cli("trash", "list", "--json", config=instance.config).stdout)
        assert trashed == []
    finally:
        gw.stop()
    codes = query(
        instance,
        sqlalchemy.select(AuditEvent.action).where(
            AuditEvent.code == "name-occupied", AuditEvent.actor == "bob"
        ),
    )
    assert sorted(c.action for c in codes) == ["COPY", "COPY", "LOCK", "MOVE", "PUT", "PUT"]


def test_copy_and_move_events_name_both_ends_and_the_replaced_target(gateway: Gateway) -> None:
    s = gateway.session()
    d = f"{gateway.url}/documents"
    for name in ("a.txt", "b.txt", "c.txt"):
        assert s.put(f"{d}/{name}", data=name.encode()).status_code == 201
    moved = relocate(s, gateway, "MOVE", "/documents/a.txt", "/documents/b.txt")
    copied = relocate(s, gateway, "COPY", "/documents/c.txt", "/documents/b.txt")
    consent(gateway.instance, "--scope", "record", "--scope", "share")
    p = f"/clinical/{PATIENT}"
    mkcols(s, gateway, p)
    assert s.put(f"{gateway.url}{p}/w.jpg", data=small_jpeg()).status_code == 201
    assert relocate(s, gateway, "COPY", f"{p}/w.jpg", "/referrals/w.jpg").status_code == 201
    across = relocate(s, gateway, "COPY", f"{p}/w.jpg", "/referrals/w.jpg")
    assert (moved.status_code, copied.status_code, across.status_code) == (204, 204, 204)
    assert s.get(f"{d}/b.txt").content == b"c.txt"
    trash = json.loads(run_cli("trash", "list", "--json", config=gateway.instance.config).stdout)
    assert sorted((t["share"], t["path"]) for t in trash) == [
        ("documents", "/b.txt"),
        ("documents", "/b.txt"),
        ("referrals", "/w.jpg"),
    ]
    expected = [
        (moved, "MOVE", "documents:/a.txt", "documents:/b.txt", "documents", "/b.txt"),
        (copied, "COPY", "documents:/c.txt", "documents:/b.txt", "documents", "/b.txt"),
        (across, "COPY", f"clinical:/{PATIENT}/w.jpg", "referrals:/w.jpg", "referrals", "/w.jpg"),
    ]
    for response, method, source, destination, share, target in expected:
        replaced, event = events(gateway.instance, response.headers["X-Request-Id"])
        assert (replaced.action, replaced.code, replaced.share, replaced.logical_path) == (
            "DELETE",
            "trashed",
            share,
            target,
        )
        assert replaced.details["replaced_by"] == method and replaced.details["trash_id"]
        assert (event.action, event.status) == (method, 204)
        assert (event.details["from"], event.details["to"]) == (source, destination), event.details
