"""Legal holds that let clinical work go on, restores that respect today's consent, and a
sweeper that does not purge on a clock that jumped (issue 16 points 1 and 2, issue 15
point 16), against the running gateway."""

from __future__ import annotations

import json
import time

import sqlalchemy

from gateway.db import AuditEvent, DataKey, TrashItem
from tests.conftest import Gateway, Instance, InstanceClock, run_cli, start_in_process
from tests.integration.test_consent import OTHER, PATIENT, consent, written_consent
from tests.integration.test_dav_methods import small_jpeg
from tests.integration.test_trash import engine_for, set_policy, set_sweep, trash_list


def _jpeg(seed: int) -> bytes:
    """A small JPEG that differs from the others (scrubbing keeps the pixels)."""
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (16, 16), (seed * 40 % 256, 90, 160)).save(out, "JPEG")
    return out.getvalue()


def hold(instance: Instance, *args: str, check: bool = True):
    return run_cli("hold", *args, config=instance.config, check=check)


def test_a_hold_stops_only_what_removes_content(gateway: Gateway) -> None:
    inst, s = gateway.instance, gateway.session()
    consent(inst, "--scope", "record")
    consent(inst, "--scope", "record", patient=OTHER)
    folder, other = f"{gateway.url}/clinical/{PATIENT}", f"{gateway.url}/clinical/{OTHER}"
    assert s.request("MKCOL", folder).status_code == 201
    assert s.request("MKCOL", other).status_code == 201
    first = _jpeg(1)
    assert s.put(f"{folder}/a.jpg", data=first).status_code == 201
    stored_first = s.get(f"{folder}/a.jpg").content
    hold(inst, "add", f"/clinical/{PATIENT}", "--reason", "complaint 2026-031")

    # Clinical work goes on: a new photo, a replacing PUT, COPY, PROPPATCH, MOVE inside.
    assert s.put(f"{folder}/b.jpg", data=_jpeg(2)).status_code == 201
    replaced = s.put(f"{folder}/a.jpg", data=_jpeg(3))
    assert replaced.status_code == 204, replaced.text
    assert s.get(f"{folder}/a.jpg").content != stored_first
    copy = s.request("COPY", f"{folder}/b.jpg", headers={"Destination": f"{folder}/c.jpg"})
    assert copy.status_code == 201
    onto = s.request(
        "COPY", f"{folder}/a.jpg", headers={"Destination": f"{folder}/c.jpg", "Overwrite": "T"}
    )
    assert onto.status_code == 204
    proppatch = s.request(
        "PROPPATCH",
        f"{folder}/a.jpg",
        data=(
            '<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:x="urn:x">'
            "<d:set><d:prop><x:note>reviewed</x:note></d:prop></d:set></d:propertyupdate>"
        ),
        headers={"Content-Type": "application/xml"},
    )
    assert proppatch.status_code == 207
    renamed = s.request("MOVE", f"{folder}/b.jpg", headers={"Destination": f"{folder}/d.jpg"})
    assert renamed.status_code == 201

    # What would remove content is refused.
    out = s.request("MOVE", f"{folder}/d.jpg", headers={"Destination": f"{other}/d.jpg"})
    assert out.status_code == 403 and out.headers["X-Clindav-Error"] == "legal-hold"
    deleted = s.delete(f"{folder}/a.jpg")
    assert deleted.status_code == 403 and deleted.headers["X-Clindav-Error"] == "legal-hold"
    assert s.get(f"{folder}/d.jpg").status_code == 200

    # The replaced versions are in the trash with their keys, and stay there.
    kept = {i["path"]: i for i in trash_list(inst)}
    assert set(kept) == {f"/{PATIENT}/a.jpg", f"/{PATIENT}/c.jpg"}
    assert kept[f"/{PATIENT}/a.jpg"]["reason"] == "replaced under a legal hold"
    refused = run_cli(
        "trash", "purge", kept[f"/{PATIENT}/a.jpg"]["id"], config=inst.config, check=False
    )
    assert refused.returncode == 1 and "legal hold" in refused.stderr
    run_cli(
        "trash",
        "restore",
        kept[f"/{PATIENT}/a.jpg"]["id"],
        "--to",
        f"/{PATIENT}/a-before.jpg",
        config=inst.config,
    )
    assert s.get(f"{folder}/a-before.jpg").content == stored_first
    assert run_cli("fsck", config=inst.config, check=False).returncode == 0


def test_overwrite_of_an_unheld_file_still_destroys_the_old_key(gateway: Gateway) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/n.txt", data=b"one").status_code == 201
    assert s.put(f"{gateway.url}/documents/n.txt", data=b"two").status_code == 204
    engine = engine_for(gateway.instance)
    with engine.connect() as conn:
        keys = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(DataKey))
        assert keys.scalar_one() == 1
    engine.dispose()
    assert trash_list(gateway.instance) == []


def test_restore_refuses_what_todays_consent_does_not_cover(gateway: Gateway) -> None:
    inst, s = gateway.instance, gateway.session()
    record = written_consent(inst, "record", "share", "teaching", form="forms/2026/77.pdf")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    assert s.put(f"{folder}/wound.jpg", data=small_jpeg()).status_code == 201
    for dest in ("teaching/case-2026-014.jpg", "referrals/case-2026-014.jpg"):
        copied = s.request(
            "COPY", f"{folder}/wound.jpg", headers={"Destination": f"{gateway.url}/{dest}"}
        )
        assert copied.status_code == 201
    run_cli(
        "consent",
        "withdraw",
        str(record["id"]),
        "--scope",
        "teaching",
        "--by",
        "dr-a",
        config=inst.config,
    )
    teaching = next(i for i in trash_list(inst) if i["share"] == "teaching")
    refused = run_cli("trash", "restore", teaching["id"], config=inst.config, check=False)
    assert refused.returncode == 1
    assert "Cannot restore teaching:/case-2026-014.jpg" in refused.stderr
    assert "No recorded 'teaching' consent" in refused.stderr
    assert s.get(f"{gateway.url}/teaching/case-2026-014.jpg").status_code == 404
    assert [i["id"] for i in trash_list(inst) if i["share"] == "teaching"] == [teaching["id"]]
    engine = engine_for(inst)
    with engine.connect() as conn:
        event = conn.execute(
            sqlalchemy.select(AuditEvent).where(AuditEvent.code == "restore-refused")
        ).one()
    engine.dispose()
    assert event.details["refused_by"] == "consent-missing" and event.patient_id == PATIENT

    # A referral copy whose consent still stands comes back; so does a clinical image.
    assert s.delete(f"{gateway.url}/referrals/case-2026-014.jpg").status_code == 204
    assert s.delete(f"{folder}/wound.jpg").status_code == 204
    for item in trash_list(inst):
        if item["share"] != "teaching":
            run_cli("trash", "restore", item["id"], config=inst.config)
    assert s.get(f"{gateway.url}/referrals/case-2026-014.jpg").status_code == 200
    assert s.get(f"{folder}/wound.jpg").status_code == 200

    # Once teaching consent is recorded again, the teaching copy may come back.
    written_consent(inst, "record", "teaching", form="forms/2026/90.pdf")
    run_cli("trash", "restore", teaching["id"], config=inst.config)
    assert s.get(f"{gateway.url}/teaching/case-2026-014.jpg").status_code == 200


def _sweep_events(instance: Instance) -> list[tuple[str, int]]:
    engine = engine_for(instance)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.select(AuditEvent.code, AuditEvent.status)
            .where(AuditEvent.action == "SWEEP")
            .order_by(AuditEvent.seq)
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def _trash_states(instance: Instance) -> dict[str, str]:
    engine = engine_for(instance)
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.select(TrashItem.logical_path, TrashItem.state)).all()
    engine.dispose()
    return dict(rows)


def _wait_for(condition, what: str, seconds: float = 60) -> None:
    """How long the sweeper (every second) may take to act: a bound, not a deadline to race."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_clock_jump_stops_the_sweeper_until_an_admin_confirms(
    instance: Instance,
    clock: InstanceClock,
) -> None:
    set_policy(instance, "documents", trash_window="1h")
    set_sweep(instance, 1)
    gw = start_in_process(instance)
    try:
        s = gw.session()
        assert s.put(f"{gw.url}/documents/old.txt", data=b"old").status_code == 201
        assert s.delete(f"{gw.url}/documents/old.txt").status_code == 204
        _wait_for(lambda: ("swept", 200) in _sweep_events(instance), "the first sweep")
        clock.advance("365d")  # a mistyped year: everything would be due at once
        _wait_for(lambda: ("clock-jump", 409) in _sweep_events(instance), "the refusal")
        assert _trash_states(instance) == {"/old.txt": "trashed"}
        assert "trash sweep refused: the clock moved forward by 365 days" in gw.log()
        time.sleep(3)  # further sweeps keep refusing, audited once
        assert _sweep_events(instance).count(("clock-jump", 409)) == 1
        assert _trash_states(instance) == {"/old.txt": "trashed"}

        confirmed = run_cli("trash", "purge", "--due", config=instance.config)
        assert "the clock moved forward by 365 days" in confirmed.stdout
        assert "purged 1 items" in confirmed.stdout
        # From the confirmed time on the sweeper works again.
        assert s.put(f"{gw.url}/documents/new.txt", data=b"new").status_code == 201
        assert s.delete(f"{gw.url}/documents/new.txt").status_code == 204
        clock.advance("8762h")  # 365 days and 2 hours: past the new item's 1h window
        _wait_for(lambda: _trash_states(instance).get("/new.txt") == "purged", "the purge")
    finally:
        gw.stop()
    events = run_cli("audit", "export", config=instance.config).stdout.splitlines()
    refusal = next(e for e in map(json.loads, events) if e["code"] == "clock-jump")
    assert "clindav trash purge --due" in refusal["reason"]
