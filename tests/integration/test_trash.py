"""Deletion, trash, retention and purge against the running gateway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy
import yaml

from gateway.db import AuditEvent, DataKey, StoredObject, TrashItem
from gateway.settings import load_settings
from tests.conftest import (
    CLINDAV,
    Gateway,
    Instance,
    InstanceClock,
    _env,
    run_cli,
    start_in_process,
)
from tests.integration.test_dav_methods import small_jpeg

PATIENT = "9434765919"


def engine_for(instance: Instance) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())


def set_policy(instance: Instance, share: str, **values: object) -> None:
    path = instance.folder / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["shares"][share].update(values)
    path.write_text(yaml.safe_dump(policy))


def set_sweep(instance: Instance, seconds: int) -> None:
    settings = instance.settings()
    settings["trash"] = {"sweep_interval": seconds}
    instance.write_settings(settings)


def trash_list(instance: Instance) -> list[dict]:
    return json.loads(run_cli("trash", "list", "--json", config=instance.config).stdout)


def test_delete_restore_round_trip(gateway: Gateway) -> None:
    s = gateway.session()
    base = f"{gateway.url}/documents"
    body = os.urandom(70_000)
    assert s.request("MKCOL", f"{base}/folder").status_code == 201
    assert s.put(f"{base}/folder/inner.bin", data=body).status_code == 201
    assert s.put(f"{base}/single.txt", data=b"single file").status_code == 201
    assert s.delete(f"{base}/single.txt").status_code == 204
    assert s.delete(f"{base}/folder").status_code == 204
    listing = s.request("PROPFIND", base, headers={"Depth": "1"}).text
    assert "single.txt" not in listing and "folder" not in listing
    assert s.get(f"{base}/single.txt").status_code == 404
    assert s.get(f"{base}/folder/inner.bin").status_code == 404
    items = {i["path"]: i for i in trash_list(gateway.instance)}
    assert set(items) == {"/single.txt", "/folder"}
    assert items["/folder"]["files"] == 1 and items["/folder"]["trashed_by"] == "alice"
    # A new file may take the deleted one's name while the old one waits in the trash.
    assert s.put(f"{base}/single.txt", data=b"newer").status_code == 201
    refused = run_cli(
        "trash", "restore", items["/single.txt"]["id"], config=gateway.instance.config, check=False
    )
    assert refused.returncode == 1 and "already exists" in refused.stderr
    run_cli(
        "trash",
        "restore",
        items["/single.txt"]["id"],
        "--to",
        "/older.txt",
        config=gateway.instance.config,
    )
    run_cli("trash", "restore", items["/folder"]["id"], config=gateway.instance.config)
    assert s.get(f"{base}/older.txt").content == b"single file"
    assert s.get(f"{base}/single.txt").content == b"newer"
    assert s.get(f"{base}/folder/inner.bin").content == body
    assert trash_list(gateway.instance) == []
    assert run_cli("fsck", config=gateway.instance.config, check=False).returncode == 0


def test_scheduler_purges_due_items_for_good(
    instance: Instance, tmp_path: Path, clock: InstanceClock
) -> None:
    set_policy(instance, "documents", trash_window="1h")
    set_sweep(instance, 1)
    gw = start_in_process(instance)
    try:
        s = gw.session()
        assert (
            s.put(f"{gw.url}/documents/wound.txt", data=b"wound photo notes" * 100).status_code
            == 201
        )
        engine = engine_for(instance)
        with engine.connect() as conn:
            wrapped = conn.execute(sqlalchemy.select(DataKey.wrapped)).scalars().all()
        backup = tmp_path / "share-backup"
        shutil.copytree(instance.share_dir("documents"), backup)
        assert s.delete(f"{gw.url}/documents/wound.txt").status_code == 204
        clock.advance("2h")  # the window is over: the next sweep (every second) purges it
        deadline = time.monotonic() + 60  # how long the sweeper may take, not when it is due
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                state = conn.execute(sqlalchemy.select(TrashItem.state)).scalar_one()
            if state == "purged":
                break
            time.sleep(0.3)
        assert state == "purged"
        with engine.connect() as conn:
            assert (
                conn.execute(
                    sqlalchemy.select(sqlalchemy.func.count()).select_from(DataKey)
                ).scalar_one()
                == 0
            )
            assert (
                conn.execute(
                    sqlalchemy.select(sqlalchemy.func.count()).select_from(StoredObject)
                ).scalar_one()
                == 0
            )
        engine.dispose()
        assert not any(
            p.is_file() for p in (instance.share_dir("documents") / ".clindav-trash").rglob("*")
        )
        # The backup taken before the purge, put back, cannot be read any more.
        shutil.rmtree(instance.share_dir("documents"))
        shutil.copytree(backup, instance.share_dir("documents"))
        r = s.get(f"{gw.url}/documents/wound.txt")
        assert r.status_code == 410 and b"wound photo" not in r.content
    finally:
        gw.stop()
    fsck = run_cli("fsck", config=instance.config, check=False)
    assert "key-purged\tdocuments:/wound.txt" in fsck.stdout
    database = (instance.folder / "clindav.db").read_bytes()
    wal = instance.folder / "clindav.db-wal"
    database += wal.read_bytes() if wal.exists() else b""
    assert all(w not in database for w in wrapped)


def test_retained_images_need_an_admin_and_a_reason(
    instance: Instance, clock: InstanceClock
) -> None:
    set_policy(instance, "clinical", retention={"keep_for": "30d"}, trash_window="1d")
    gw = start_in_process(instance)
    try:
        alice, admin = gw.session("alice"), gw.session("root-admin")
        folder = f"{gw.url}/clinical/{PATIENT}"
        assert alice.request("MKCOL", folder).status_code == 201
        assert alice.put(f"{folder}/lesion.jpg", data=small_jpeg()).status_code == 201
        refused = alice.delete(f"{folder}/lesion.jpg")
        assert refused.status_code == 403
        assert refused.headers["X-Clindav-Error"] == "retention-protected"
        assert "retained until 20" in refused.text
        assert admin.delete(f"{folder}/lesion.jpg").status_code == 400  # no reason given
        deleted = admin.delete(
            f"{folder}/lesion.jpg", headers={"X-Clindav-Reason": "duplicate upload"}
        )
        assert deleted.status_code == 204
        item = trash_list(instance)[0]
        assert item["reason"] == "duplicate upload" and item["retained_until"]
        early = run_cli("trash", "purge", item["id"], config=instance.config, check=False)
        assert early.returncode == 1 and "Retained until" in early.stderr
        clock.advance("2d")  # window (1d) over, retention (30d from upload) not yet
        run_cli("trash", "purge", "--due", config=instance.config)
        assert [i["id"] for i in trash_list(instance)] == [item["id"]]
        clock.advance("31d")
        run_cli("trash", "purge", "--due", config=instance.config)
        assert trash_list(instance) == []
    finally:
        gw.stop()


def test_legal_hold_blocks_delete_and_purge(gateway: Gateway) -> None:
    s = gateway.session("root-admin")
    assert s.put(f"{gateway.url}/documents/evidence.txt", data=b"keep").status_code == 201
    run_cli(
        "hold",
        "add",
        "/documents/evidence.txt",
        "--reason",
        "complaint 42",
        config=gateway.instance.config,
    )
    r = s.delete(f"{gateway.url}/documents/evidence.txt", headers={"X-Clindav-Reason": "x"})
    assert r.status_code == 403 and r.headers["X-Clindav-Error"] == "legal-hold"
    moved = s.request(
        "MOVE",
        f"{gateway.url}/documents/evidence.txt",
        headers={"Destination": f"{gateway.url}/documents/elsewhere.txt"},
    )
    assert moved.status_code == 403
    assert s.get(f"{gateway.url}/documents/evidence.txt").content == b"keep"
    run_cli(
        "hold",
        "remove",
        "/documents/evidence.txt",
        "--reason",
        "closed",
        config=gateway.instance.config,
    )
    assert s.delete(f"{gateway.url}/documents/evidence.txt").status_code == 204


def test_interrupted_purge_is_completed_and_leaves_nothing_readable(instance: Instance) -> None:
    gw = start_in_process(instance)
    s = gw.session()
    for i in range(20):
        assert (
            s.put(f"{gw.url}/documents/t{i}.txt", data=f"trial {i}".encode() * 50).status_code
            == 201
        )
        assert s.delete(f"{gw.url}/documents/t{i}.txt").status_code == 204
    gw.stop()
    items = trash_list(instance)
    assert len(items) == 20
    engine = engine_for(instance)
    for done, item in enumerate(items, start=1):
        killed = subprocess.run(
            [*CLINDAV, "trash", "purge", item["id"], "--config", str(instance.config)],
            env={**_env(), "CLINDAV_CRASH_AT": "purge-after-commit"},
            capture_output=True,
            timeout=60,
        )
        assert killed.returncode == -9
        # Killed after the commit: the ciphertext is still there, its key is not.
        assert (instance.share_dir("documents") / ".clindav-trash" / item["id"]).exists()
        with engine.connect() as conn:
            keys = conn.execute(
                sqlalchemy.select(sqlalchemy.func.count()).select_from(DataKey)
            ).scalar_one()
        assert keys == 20 - done
    engine.dispose()
    fsck = json.loads(run_cli("fsck", "--json", config=instance.config, check=False).stdout)
    assert [f["kind"] for f in fsck] == ["key-purged"] * 20  # nothing readable is left
    run_cli("trash", "purge", "--due", config=instance.config)  # completes the interrupted ones
    assert not any((instance.share_dir("documents") / ".clindav-trash").iterdir())
    assert run_cli("fsck", config=instance.config, check=False).returncode == 0


def test_every_delete_restore_and_purge_is_audited(gateway: Gateway) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/a.txt", data=b"a").status_code == 201
    assert (
        s.delete(f"{gateway.url}/documents/a.txt", headers={"X-Clindav-Reason": "typo"}).status_code
        == 204
    )
    item = trash_list(gateway.instance)[0]["id"]
    run_cli("trash", "restore", item, "--as", "dr-admin", config=gateway.instance.config)
    assert s.delete(f"{gateway.url}/documents/a.txt").status_code == 204
    item = trash_list(gateway.instance)[0]["id"]
    run_cli(
        "trash",
        "purge",
        item,
        "--as",
        "dr-admin",
        "--reason",
        "patient request",
        config=gateway.instance.config,
    )
    engine = engine_for(gateway.instance)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.select(
                AuditEvent.action, AuditEvent.actor, AuditEvent.code, AuditEvent.reason
            )
            .where(AuditEvent.action.in_(["DELETE", "RESTORE", "PURGE"]))
            .order_by(AuditEvent.seq)
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("DELETE", "alice", "trashed", "typo"),
        ("RESTORE", "dr-admin", "restored", ""),
        ("DELETE", "alice", "trashed", ""),
        ("PURGE", "dr-admin", "purged", "patient request"),
    ]


@pytest.mark.parametrize("args", [["--all"], []])
def test_purge_needs_targets_and_confirmation(gateway: Gateway, args: list[str]) -> None:
    result = run_cli("trash", "purge", *args, config=gateway.instance.config, check=False)
    assert result.returncode == 1
    assert "--yes" in result.stderr or "Name items" in result.stderr
