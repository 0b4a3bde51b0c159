"""Consent and patient identity against the running gateway (issue: consent)."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy
import yaml

from gateway.db import AuditEvent
from gateway.settings import load_settings
from tests.conftest import Gateway, Instance, InstanceClock, run_cli, start_in_process
from tests.integration.test_dav_methods import small_jpeg

PATIENT, OTHER = "9434765919", "4010232137"


def consent(instance: Instance, *extra: str, patient: str = PATIENT) -> dict:
    args = [
        "consent",
        "add",
        "--patient",
        patient,
        "--given-by",
        "patient",
        "--recorded-by",
        "dr-a",
        "--json",
    ]
    if "--method" not in extra:
        args += ["--method", "verbal"]
    out = run_cli(*args, *extra, config=instance.config).stdout
    return json.loads(out)


def written_consent(instance: Instance, *scopes: str, form: str, patient: str = PATIENT) -> dict:
    """Written consent on the form ``form`` (teaching needs one) for ``scopes``."""
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    return consent(instance, *scope_args, "--method", "written", "--form", form, patient=patient)


def set_consent_stage(instance: Instance, share: str, **options: object) -> None:
    path = instance.folder / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    for stage in policy["shares"][share]["stages"]:
        if "consent" in stage:
            stage["consent"].update(options)
    path.write_text(yaml.safe_dump(policy))


def audit(instance: Instance) -> list:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    with engine.connect() as conn:
        rows = list(conn.execute(sqlalchemy.select(AuditEvent).order_by(AuditEvent.seq)))
    engine.dispose()
    return rows


def test_reject_policy_then_consent_then_put(instance: Instance) -> None:
    set_consent_stage(instance, "clinical", missing="reject")
    gw = start_in_process(instance)
    try:
        s = gw.session()
        folder = f"{gw.url}/clinical/{PATIENT}"
        assert s.request("MKCOL", folder).status_code == 201
        refused = s.put(f"{folder}/rash.jpg", data=small_jpeg())
        assert refused.status_code == 403
        assert refused.headers["X-Clindav-Error"] == "consent-missing"
        assert "No recorded 'record' consent for patient 9434765919" in refused.text
        assert s.get(f"{folder}/rash.jpg").status_code == 404
        consent(instance, "--scope", "record")
        assert s.put(f"{folder}/rash.jpg", data=small_jpeg()).status_code == 201
        # One digit off: refused with the reason, at the folder already.
        typo = s.request("MKCOL", f"{gw.url}/clinical/9434765918")
        assert typo.status_code == 422 and typo.headers["X-Clindav-Error"] == "invalid-patient-id"
        assert "mistyped" in typo.text
        loose = s.put(f"{gw.url}/clinical/rash.jpg", data=small_jpeg())
        assert (
            loose.status_code == 409 and loose.headers["X-Clindav-Error"] == "not-in-patient-folder"
        )
    finally:
        gw.stop()
    codes = {e.code for e in audit(instance) if e.status >= 400}
    assert {"consent-missing", "invalid-patient-id", "not-in-patient-folder"} <= codes
    reasons = [e.reason for e in audit(instance) if e.code == "consent-missing"]
    assert reasons and "9434765919" in reasons[0]


def test_hold_policy_hides_then_releases(gateway: Gateway) -> None:
    alice, ivy, admin = (
        gateway.session("alice"),
        gateway.session("ivy"),
        gateway.session("root-admin"),
    )
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert alice.request("MKCOL", folder).status_code == 201
    held = alice.put(f"{folder}/mole.jpg", data=small_jpeg())
    assert held.status_code == 201
    assert alice.get(f"{folder}/mole.jpg").status_code == 200
    assert admin.get(f"{folder}/mole.jpg").status_code == 200
    assert ivy.get(f"{folder}/mole.jpg").status_code == 404
    assert "mole.jpg" not in ivy.request("PROPFIND", folder, headers={"Depth": "1"}).text
    pending = json.loads(
        run_cli("consent", "pending", "--json", config=gateway.instance.config).stdout
    )
    assert [(p["path"], p["patient"], p["uploader"]) for p in pending] == [
        (f"/{PATIENT}/mole.jpg", PATIENT, "alice")
    ]
    consent(gateway.instance, "--scope", "record")
    assert ivy.get(f"{folder}/mole.jpg").status_code == 200
    assert "mole.jpg" in ivy.request("PROPFIND", folder, headers={"Depth": "1"}).text
    assert (
        json.loads(run_cli("consent", "pending", "--json", config=gateway.instance.config).stdout)
        == []
    )


def test_sharing_and_teaching_copies(gateway: Gateway) -> None:
    s = gateway.session()
    clinical = f"{gateway.url}/clinical/{PATIENT}"
    record = consent(gateway.instance, "--scope", "record")
    assert s.request("MKCOL", clinical).status_code == 201
    assert s.put(f"{clinical}/wound.jpg", data=small_jpeg()).status_code == 201

    def copy(dest: str):
        return s.request("COPY", f"{clinical}/wound.jpg", headers={"Destination": dest})

    no_share = copy(f"{gateway.url}/referrals/wound-{PATIENT}.jpg")
    assert no_share.status_code == 403 and no_share.headers["X-Clindav-Error"] == "consent-missing"
    assert (
        copy(f"{gateway.url}/teaching/case-1.jpg").headers["X-Clindav-Error"] == "consent-missing"
    )
    run_cli(
        "consent",
        "withdraw",
        str(record["id"]),
        "--scope",
        "record",
        "--by",
        "dr-a",
        config=gateway.instance.config,
    )
    written_consent(gateway.instance, "record", "share", "teaching", form="forms/2026/77.pdf")
    assert copy(f"{gateway.url}/referrals/wound-{PATIENT}.jpg").status_code == 201
    named = copy(f"{gateway.url}/teaching/{PATIENT}-wound.jpg")
    assert named.status_code == 403 and named.headers["X-Clindav-Error"] == "patient-id-in-path"
    assert "case label" in named.text
    assert copy(f"{gateway.url}/teaching/case-2026-014.jpg").status_code == 201
    assert s.get(f"{gateway.url}/teaching/case-2026-014.jpg").content[:3] == b"\xff\xd8\xff"
    latest = json.loads(
        run_cli(
            "consent", "list", "--patient", PATIENT, "--json", config=gateway.instance.config
        ).stdout
    )[-1]
    withdrawn = run_cli(
        "consent",
        "withdraw",
        str(latest["id"]),
        "--scope",
        "teaching",
        "--by",
        "dr-a",
        config=gateway.instance.config,
    )
    assert "sent to the trash: teaching:/case-2026-014.jpg" in withdrawn.stdout
    assert s.get(f"{gateway.url}/teaching/case-2026-014.jpg").status_code == 404
    assert s.get(f"{clinical}/wound.jpg").status_code == 200  # record images stay
    assert s.get(f"{gateway.url}/referrals/wound-{PATIENT}.jpg").status_code == 200
    assert (
        copy(f"{gateway.url}/teaching/case-2.jpg").headers["X-Clindav-Error"] == "consent-missing"
    )


def test_intimate_images(instance: Instance) -> None:
    set_consent_stage(instance, "clinical", missing="reject", intimate_min_age=18)
    gw = start_in_process(instance)
    try:
        ivy, alice = gw.session("ivy"), gw.session("alice")
        folder = f"{gw.url}/clinical/{PATIENT}"
        assert ivy.request("MKCOL", folder).status_code == 201
        assert ivy.request("MKCOL", f"{folder}/intimate").status_code == 201
        consent(instance, "--scope", "record")
        no_intimate = ivy.put(f"{folder}/intimate/a.jpg", data=small_jpeg())
        assert (
            no_intimate.status_code == 403
            and no_intimate.headers["X-Clindav-Error"] == "consent-missing"
        )
        consent(instance, "--scope", "record", "--intimate", "--dob", "1980-05-05")
        assert ivy.put(f"{folder}/intimate/a.jpg", data=small_jpeg()).status_code == 201
        outsider = alice.put(f"{folder}/intimate/b.jpg", data=small_jpeg())
        assert outsider.status_code == 403
        assert "intimate" not in alice.request("PROPFIND", folder, headers={"Depth": "1"}).text
        assert alice.get(f"{folder}/intimate/a.jpg").status_code == 403
        # A child: refused outright by this policy.
        assert ivy.request("MKCOL", f"{gw.url}/clinical/{OTHER}").status_code == 201
        assert ivy.request("MKCOL", f"{gw.url}/clinical/{OTHER}/intimate").status_code == 201
        consent(
            instance,
            "--scope",
            "record",
            "--intimate",
            "--dob",
            "2015-01-01",
            "--given-by",
            "parental-responsibility",
            "--given-by-name",
            "Parent Name",
            patient=OTHER,
        )
        minor = ivy.put(f"{gw.url}/clinical/{OTHER}/intimate/c.jpg", data=small_jpeg())
        assert (
            minor.status_code == 403
            and minor.headers["X-Clindav-Error"] == "intimate-minor-refused"
        )
    finally:
        gw.stop()


def test_held_image_expires_and_is_purged(instance: Instance, clock: InstanceClock) -> None:
    set_consent_stage(instance, "clinical", hold_window="2h")
    settings = instance.settings()
    settings["trash"] = {"sweep_interval": 1}
    instance.write_settings(settings)
    gw = start_in_process(instance)
    try:
        s = gw.session()
        folder = f"{gw.url}/clinical/{PATIENT}"
        assert s.request("MKCOL", folder).status_code == 201
        assert s.put(f"{folder}/never.jpg", data=small_jpeg()).status_code == 201
        assert s.get(f"{folder}/never.jpg").status_code == 200  # held, not yet due
        clock.advance("3h")  # past the hold window, within trash.max_clock_jump
        # The sweeper runs every second: the wait is for its thread, not a time margin.
        deadline = time.monotonic() + 60
        while s.get(f"{folder}/never.jpg").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert s.get(f"{folder}/never.jpg").status_code == 404
    finally:
        gw.stop()
    events = [(e.action, e.code) for e in audit(instance)]
    assert ("PURGE", "purged") in events
    assert any(
        e.reason.startswith("consent never recorded")
        for e in audit(instance)
        if e.action == "PURGE"
    )


def test_ehr_manifest_records_consent(gateway: Gateway) -> None:
    s = gateway.session()
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    manifest = {
        "patient": "943 476 5919",
        "source_system": "EHR-X",
        "consent": {
            "scopes": ["record", "share"],
            "given_by": "patient",
            "method": "written",
            "form": "EHR-X/doc/881",
            "recorded_by": "dr.smith",
        },
    }
    r = s.put(f"{folder}/clindav-consent.json", data=json.dumps(manifest))
    assert r.status_code == 201 and r.json()["active_scopes"] == ["record", "share"]
    assert s.get(f"{folder}/clindav-consent.json").status_code == 404  # never stored
    wrong = dict(manifest, patient=OTHER)
    bad = s.put(f"{folder}/clindav-consent.json", data=json.dumps(wrong))
    assert bad.status_code == 400 and bad.headers["X-Clindav-Error"] == "invalid-consent"
    garbage = s.put(f"{folder}/clindav-consent.json", data=b"{not json")
    assert garbage.status_code == 400
    listed = json.loads(run_cli("consent", "list", "--json", config=gateway.instance.config).stdout)
    assert [(c["source"], c["form"]) for c in listed] == [("EHR-X", "EHR-X/doc/881")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "everything", "--method", "verbal"], "invalid choice"),
        (
            ["--scope", "record", "--scope", "teaching", "--method", "verbal"],
            "teaching needs written consent",
        ),
        (["--scope", "record", "--method", "verbal", "--patient", "9434765918"], "mistyped"),
        (["--scope", "share", "--method", "verbal"], "record scope"),
        (
            ["--scope", "record", "--method", "verbal", "--given-by", "best-interests"],
            "given-by-name",
        ),
    ],
)
def test_consent_cli_rejects_bad_input(instance: Instance, args: list[str], message: str) -> None:
    base = ["consent", "add", "--given-by", "patient", "--recorded-by", "dr-a"]
    if "--patient" not in args:
        base += ["--patient", PATIENT]
    if "--given-by" in args:
        base = [a for a in base if a not in ("--given-by", "patient")]
    result = run_cli(*base, *args, config=instance.config, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_copy_of_a_held_image_stays_held(gateway: Gateway) -> None:
    alice, ivy = gateway.session("alice"), gateway.session("ivy")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert alice.request("MKCOL", folder).status_code == 201
    assert alice.put(f"{folder}/held.jpg", data=small_jpeg()).status_code == 201
    copied = alice.request(
        "COPY", f"{folder}/held.jpg", headers={"Destination": f"{folder}/copy.jpg"}
    )
    assert copied.status_code == 201
    assert ivy.get(f"{folder}/copy.jpg").status_code == 404
    assert alice.get(f"{folder}/copy.jpg").status_code == 200


def test_plain_consent_does_not_release_intimate_held_images(gateway: Gateway) -> None:
    ivy = gateway.session("ivy")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert ivy.request("MKCOL", folder).status_code == 201
    assert ivy.request("MKCOL", f"{folder}/intimate").status_code == 201
    assert ivy.put(f"{folder}/intimate/i.jpg", data=small_jpeg()).status_code == 201
    assert ivy.put(f"{folder}/arm.jpg", data=small_jpeg()).status_code == 201
    consent(gateway.instance, "--scope", "record")
    pending = json.loads(
        run_cli("consent", "pending", "--json", config=gateway.instance.config).stdout
    )
    assert [p["path"] for p in pending] == [f"/{PATIENT}/intimate/i.jpg"]
    consent(gateway.instance, "--scope", "record", "--intimate")
    assert (
        json.loads(run_cli("consent", "pending", "--json", config=gateway.instance.config).stdout)
        == []
    )
