"""The admin commands a running gateway needs (issue 16 points 4, 8 and 17): patient ids read
as `consent add` reads them, clear hold errors, `audit tail --no-follow`, trash ids by
prefix with their reasons, withdrawal for all of a patient's records."""

from __future__ import annotations

import json
from collections import Counter

import sqlalchemy

from gateway.db import AuditEvent
from tests.conftest import Gateway, Instance, run_cli
from tests.integration.test_consent import PATIENT, consent
from tests.integration.test_dav_methods import small_jpeg
from tests.integration.test_trash import engine_for, trash_list


def cli(instance: Instance, *args: str, check: bool = True):
    return run_cli(*args, config=instance.config, check=check)


def test_consent_list_reads_the_patient_id_as_consent_add_does(instance: Instance) -> None:
    consent(instance, "--scope", "record", patient="943 476 5919")
    for written in ("943 476 5919", "943-476-5919", PATIENT):
        listed = cli(instance, "consent", "list", "--patient", written)
        assert listed.stdout.strip().endswith("1 records"), written
    mistyped = cli(instance, "consent", "list", "--patient", "9434765918", check=False)
    assert mistyped.returncode == 1 and "check digit" in mistyped.stderr
    assert "records" not in mistyped.stdout


def test_hold_commands_say_what_is_wrong(gateway: Gateway) -> None:
    inst, s = gateway.instance, gateway.session()
    missing = cli(inst, "hold", "add", "/documents/nothing.txt", "--reason", "x", check=False)
    assert missing.returncode == 1
    assert "Nothing exists at /documents/nothing.txt" in missing.stderr
    assert s.put(f"{gateway.url}/documents/evidence.txt", data=b"keep").status_code == 201
    cli(inst, "hold", "add", "/documents/evidence.txt", "--reason", "complaint 42")
    again = cli(inst, "hold", "add", "/documents/evidence.txt", "--reason", "again", check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "already under a legal hold" in again.stderr and "complaint 42" in again.stderr
    cli(inst, "hold", "remove", "/documents/evidence.txt", "--reason", "closed")
    twice = cli(inst, "hold", "remove", "/documents/evidence.txt", "--reason", "x", check=False)
    assert twice.returncode == 1 and "no legal hold on /documents/evidence.txt" in twice.stderr
    assert "released" not in twice.stdout
    # What is only in the trash can be held: that stops its purge.
    assert s.delete(f"{gateway.url}/documents/evidence.txt").status_code == 204
    cli(inst, "hold", "add", "/documents/evidence.txt", "--reason", "complaint 43")
    item = trash_list(inst)[0]["id"]
    refused = cli(inst, "trash", "purge", item, check=False)
    assert refused.returncode == 1 and "legal hold" in refused.stderr
    engine = engine_for(inst)
    with engine.connect() as conn:
        actions = conn.execute(
            sqlalchemy.select(AuditEvent.action)
            .where(AuditEvent.action.in_(["HOLD", "RELEASE"]))
            .order_by(AuditEvent.seq)
        ).scalars()
        assert list(actions) == ["HOLD", "RELEASE", "HOLD"]
    engine.dispose()


def test_audit_tail_no_follow_prints_and_stops(gateway: Gateway) -> None:
    s = gateway.session()
    for i in range(3):
        assert s.put(f"{gateway.url}/documents/t{i}.txt", data=b"x").status_code == 201
    tail = run_cli(
        "audit", "tail", "--no-follow", "--count", "2", config=gateway.instance.config, timeout=60
    )
    lines = tail.stdout.splitlines()
    assert len(lines) == 2 and all("PUT documents:/t" in line for line in lines)


def test_trash_ids_by_unique_prefix_and_the_reason_column(gateway: Gateway) -> None:
    inst, s = gateway.instance, gateway.session()
    # 17 items: at least two share their first hex digit.
    for i in range(17):
        assert s.put(f"{gateway.url}/documents/f{i}.txt", data=b"x").status_code == 201
        deleted = s.delete(
            f"{gateway.url}/documents/f{i}.txt", headers={"X-Clindav-Reason": f"typo {i}"}
        )
        assert deleted.status_code == 204
    listing = cli(inst, "trash", "list").stdout
    assert "reason: typo 16" in listing
    ids = [i["id"] for i in trash_list(inst)]
    shared = next(c for c, n in Counter(i[0] for i in ids).items() if n > 1)
    ambiguous = cli(inst, "trash", "restore", shared, check=False)
    assert ambiguous.returncode == 1 and "More than one item" in ambiguous.stderr
    target = ids[0]
    prefix = next(
        target[:n] for n in range(1, 33) if sum(i.startswith(target[:n]) for i in ids) == 1
    )
    restored = cli(inst, "trash", "restore", prefix)
    assert f"restored {target}" in restored.stdout
    other = ids[1]
    unique = next(other[:n] for n in range(1, 33) if sum(i.startswith(other[:n]) for i in ids) == 1)
    assert f"purged {other}" in cli(inst, "trash", "purge", unique).stdout
    unknown = cli(inst, "trash", "restore", "zz", check=False)
    assert unknown.returncode == 1 and "No such item" in unknown.stderr


def test_consent_withdraw_for_all_of_a_patients_records(gateway: Gateway) -> None:
    inst, s = gateway.instance, gateway.session()
    first = consent(inst, "--scope", "record", "--scope", "share")
    second = consent(inst, "--scope", "record", "--scope", "share")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    assert s.put(f"{folder}/wound.jpg", data=small_jpeg()).status_code == 201
    referral = f"{gateway.url}/referrals/wound-{PATIENT}.jpg"
    copied = s.request("COPY", f"{folder}/wound.jpg", headers={"Destination": referral})
    assert copied.status_code == 201
    neither = cli(inst, "consent", "withdraw", "--scope", "share", "--by", "dr-a", check=False)
    assert neither.returncode == 1 and "--patient" in neither.stderr
    withdrawn = cli(
        inst,
        "consent",
        "withdraw",
        "--patient",
        "943 476 5919",
        "--scope",
        "share",
        "--by",
        "dr-a",
        "--json",
    )
    data = json.loads(withdrawn.stdout)
    assert data["ids"] == [first["id"], second["id"]]
    assert data["trashed"] == [["referrals", f"/wound-{PATIENT}.jpg"]]
    assert s.get(referral).status_code == 404
    listed = json.loads(cli(inst, "consent", "list", "--patient", PATIENT, "--json").stdout)
    assert [r["active_scopes"] for r in listed] == [["record"], ["record"]]
    nothing = cli(
        inst,
        "consent",
        "withdraw",
        "--patient",
        PATIENT,
        "--scope",
        "share",
        "--by",
        "dr-a",
        check=False,
    )
    assert nothing.returncode == 1 and "nothing was withdrawn" in nothing.stderr
