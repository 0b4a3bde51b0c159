"""Upgrade in place: an instance made and filled by the previous release, brought forward.

The previous release is this repository's tree just before the first
numbered migration after 0001 was added (``git archive``): its own
``clindav init``, ``user add``, ``consent add`` and gateway write the
database at schema 0001 and the shares.  Then this version's ``clindav
upgrade`` brings it forward, and this version's gateway serves the same
files to the same users with the audit chain intact.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import secrets
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests
from PIL import Image
from sqlalchemy import Engine, insert, inspect, text

from gateway.auth.apppasswords import new_secret, secret_hash
from gateway.db import AppPassword, _alembic_config, make_engine, schema_state
from gateway.settings import load_settings
from tests.conftest import (
    CLINDAV,
    PASSWORD,
    REPO,
    Instance,
    ProcessGateway,
    _read_url,
    run_cli,
    start_gateway,
    start_in_process,
)
from tests.integration.test_dav_methods import small_jpeg
from tests.integration.test_instance_integrity import serve_refused

PATIENT = "9434765919"


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout


def previous_release(into: Path) -> Path:
    """The source tree of the newest commit whose only migration is 0001."""
    versions = "gateway/migrations/versions/"
    release = "HEAD"  # (before the next migration is committed)
    for commit in git("log", "--format=%H", "--", versions).split():
        tree = git("ls-tree", "--name-only", f"{commit}^", versions).split()
        if tree == [versions + "0001_initial_schema.py"]:
            release = f"{commit}^"
            break
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "archive",
            "--format=tar",
            release,
            "gateway",
            "plugins",
            "policies",
        ],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    assert [p.name for p in (into / versions).glob("0*.py")] == ["0001_initial_schema.py"]
    return into


def old_env(old: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(old)}


def old_cli(old: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CLINDAV, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=old,
        env=old_env(old),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def start_old_gateway(old: Path, instance: Instance) -> ProcessGateway:
    log_path = instance.folder.parent / "old-gateway.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*CLINDAV, "serve", "--config", str(instance.config), "--port", "0", "--no-tls"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=old,
            env=old_env(old),
        )
    return ProcessGateway(instance, _read_url(process, log_path), log_path, process=process)


def test_an_instance_of_the_previous_release_is_upgraded_in_place(tmp_path: Path) -> None:
    old = previous_release(tmp_path / "previous-release")
    folder = tmp_path / "instance"
    config = folder / "clindav.yaml"
    old_cli(old, "init", str(folder))
    instance = Instance(folder, config, "sqlite")
    for user, group in (("alice", "clinicians"), ("root-admin", "admins")):
        old_cli(
            old,
            "user",
            "add",
            user,
            "--group",
            group,
            "--password-stdin",
            "--config",
            str(config),
            stdin=PASSWORD + "\n",
        )
    old_cli(
        old,
        "consent",
        "add",
        "--patient",
        PATIENT,
        "--given-by",
        "patient",
        "--recorded-by",
        "dr-a",
        "--method",
        "verbal",
        "--scope",
        "record",
        "--config",
        str(config),
    )

    gw = start_old_gateway(old, instance)
    s = gw.session()
    assert s.request("MKCOL", f"{gw.url}/clinical/{PATIENT}").status_code == 201
    assert s.put(f"{gw.url}/clinical/{PATIENT}/wound.jpg", data=small_jpeg()).status_code == 201
    assert s.put(f"{gw.url}/documents/letter.txt", data=b"referral letter").status_code == 201
    assert s.put(f"{gw.url}/documents/old.txt", data=b"to the trash").status_code == 201
    assert s.delete(f"{gw.url}/documents/old.txt").status_code == 204
    served = {
        path: s.get(f"{gw.url}{path}").content
        for path in (f"/clinical/{PATIENT}/wound.jpg", "/documents/letter.txt")
    }
    gw.stop()
    url = load_settings(config).sqlalchemy_url()
    assert schema_state(url).current == "0001"

    # This version refuses the old schema, and says what to do.
    refused = serve_refused(instance)
    assert "schema 0001" in refused.stderr and "clindav upgrade" in refused.stderr
    # Without a terminal to confirm on, an upgrade needs --yes; nothing changes.
    unconfirmed = run_cli("upgrade", config=config, check=False)
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    assert "0002" in unconfirmed.stdout  # it said what it would do
    assert schema_state(url).current == "0001"

    # A wrong key file (the instance's key id, other bytes) is refused before any change.
    key_file = folder / "keys" / "master.key"
    right = key_file.read_text()
    key_file.write_text(f"{right.split()[-2]} {secrets.token_hex(32)}\n")
    wrong = run_cli("upgrade", "--yes", config=config, check=False)
    assert wrong.returncode == 2 and str(key_file) in wrong.stderr and "is wrong" in wrong.stderr
    assert schema_state(url).current == "0001"
    key_file.write_text(right)

    upgraded = run_cli("upgrade", "--yes", config=config)
    assert "upgraded" in upgraded.stdout
    assert schema_state(url).pending == [] and schema_state(url).current == schema_state(url).head
    for share in ("clinical", "referrals", "teaching", "documents"):
        (marker,) = instance.share_dir(share).glob(".clindav-share.*")
        assert marker.is_dir()
    assert "nothing to upgrade" in run_cli("upgrade", config=config).stdout
    assert "match this instance" in run_cli("check-config", config=config).stdout

    gw = start_gateway(instance)
    try:
        s = gw.session()
        for path, body in served.items():
            answer = s.get(f"{gw.url}{path}")
            assert answer.status_code == 200 and answer.content == body
        Image.open(io.BytesIO(served[f"/clinical/{PATIENT}/wound.jpg"])).verify()
        assert s.put(f"{gw.url}/documents/new.txt", data=b"after the upgrade").status_code == 201
        wrong = requests.get(f"{gw.url}/documents/letter.txt", auth=("alice", "wrong password!"))
        assert wrong.status_code == 401
    finally:
        gw.stop()
    consent = run_cli("consent", "list", "--patient", PATIENT, config=config).stdout
    assert PATIENT in consent
    trash = run_cli("trash", "list", config=config).stdout
    assert "/old.txt" in trash
    verify = run_cli("audit", "verify", config=config)
    assert "audit chain intact" in verify.stdout
    export = run_cli("audit", "export", config=config).stdout
    assert '"code": "upgraded"' in export and "schema 0001 -> " in export


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_an_instance_at_0005_gets_its_devices_last_use(instance: Instance) -> None:
    """0006: the app passwords of devices connected before gain a last-used time, unset
    until their next request; the instance is taken back to 0005 by the migration's own
    downgrade, as its previous release left it."""
    from alembic import command

    url = load_settings(instance.config).sqlalchemy_url()
    command.downgrade(_alembic_config(url), "0005")
    assert schema_state(url).current == "0005"
    secret = new_secret()
    engine = make_engine(url)
    try:
        assert "last_used_at" not in app_password_columns(engine)
        with engine.begin() as conn:
            conn.execute(  # only the columns 0005 has
                insert(AppPassword.__table__).values(
                    uid="alice",
                    label="ward phone 3",
                    secret_hash=secret_hash(secret),
                    created_at=dt.datetime.now(dt.UTC),
                )
            )

        upgraded = run_cli("upgrade", "--yes", config=instance.config)
        assert "0006 when each app password was last used" in upgraded.stdout
        assert schema_state(url).current == "0006" == schema_state(url).head
        assert "last_used_at" in app_password_columns(engine)
        assert last_use(engine) == [("ward phone 3", None)]

        gw = start_in_process(instance)
        try:
            phone = gw.session("alice", secret)
            answer = phone.request("PROPFIND", f"{gw.url}/clinical/", headers={"Depth": "0"})
            assert answer.status_code == 207
        finally:
            gw.stop()
        [(label, used)] = last_use(engine)
        assert label == "ward phone 3" and used is not None
    finally:
        engine.dispose()


def app_password_columns(engine: Engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("app_password")}


def last_use(engine: Engine) -> list[tuple[str, dt.datetime | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT label, last_used_at FROM app_password"))
        return [(label, used) for label, used in rows]
