"""The gateway serves only its own instance: its master key, its mounted shares, its database.

Real gateway on loopback, real SQLite database, real folders: a key file
swapped under a running gateway, a share whose mount point is an empty
folder, a deleted database file.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import requests

from gateway.db import migrate
from gateway.settings import load_settings
from tests.conftest import (
    CLINDAV,
    Gateway,
    Instance,
    _env,
    make_instance,
    run_cli,
    start_in_process,
)


def key_file(instance: Instance) -> Path:
    return instance.folder / "keys" / "master.key"


def write_key(path: Path, text: str) -> None:
    """Replace the key file as an operator's copy would (a new file, mode 0600)."""
    temp = path.with_name(path.name + ".new")
    temp.write_text(text, encoding="ascii")
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def stored_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def serve_refused(instance: Instance) -> subprocess.CompletedProcess[str]:
    """``clindav serve`` that must refuse to start (it would print its URL otherwise)."""
    cmd = [*CLINDAV, "serve", "--config", str(instance.config), "--port", "0", "--no-tls"]
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, env=_env(), cwd=instance.folder
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"serve did not refuse: {exc.stdout!r}") from None
    assert result.returncode != 0
    assert "clindav serving" not in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result


def audit_codes(instance: Instance) -> list[str]:
    export = run_cli("audit", "export", config=instance.config).stdout
    return [json.loads(line)["code"] for line in export.splitlines() if line.strip()]


def wait_for_status(session: requests.Session, method: str, url: str, status: int) -> None:
    """The marker is re-checked at most once a second: poll until the answer changes."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        headers = {"Depth": "1"} if method == "PROPFIND" else {}
        answer = session.request(method, url, headers=headers)
        if answer.status_code == status:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{method} {url} never answered {status}: {answer.status_code} {answer.text}"
    )


def test_a_master_key_changed_under_the_gateway_is_refused(gateway: Gateway) -> None:
    instance = gateway.instance
    s = gateway.session()
    url = f"{gateway.url}/documents"
    assert s.put(f"{url}/before.txt", data=b"stored under the right key").status_code == 201
    right = key_file(instance).read_text()
    key_id = right.strip().splitlines()[-1].split()[0]
    write_key(key_file(instance), f"{key_id} {secrets.token_hex(32)}\n")  # same id, other bytes
    on_share = stored_files(instance.share_dir("documents"))

    refused = s.put(f"{url}/after.txt", data=b"must not be stored under a wrong key")
    assert refused.status_code == 503, refused.text
    assert refused.headers["X-Clindav-Error"] == "master-key-mismatch"
    assert stored_files(instance.share_dir("documents")) == on_share
    log = gateway.log()
    assert str(key_file(instance)) in log and "is wrong" in log, log

    write_key(key_file(instance), right)  # the right key back: stores again
    assert "master-key-mismatch" in audit_codes(instance)
    assert s.put(f"{url}/after.txt", data=b"stored again").status_code == 201
    assert s.get(f"{url}/after.txt").content == b"stored again"
    assert s.get(f"{url}/before.txt").content == b"stored under the right key"


def test_a_wrong_master_key_fails_check_config_and_start(instance: Instance) -> None:
    gw = start_in_process(instance)
    assert gw.session().put(f"{gw.url}/documents/a.txt", data=b"x" * 100).status_code == 201
    gw.stop()
    right = key_file(instance).read_text()
    key_id = right.strip().splitlines()[-1].split()[0]
    write_key(key_file(instance), f"{key_id} {secrets.token_hex(32)}\n")

    check = run_cli("check-config", config=instance.config, check=False)
    assert check.returncode == 2, check.stdout + check.stderr
    assert str(key_file(instance)) in check.stderr
    assert "is wrong" in check.stderr and "does not match this instance" in check.stderr

    refused = serve_refused(instance)
    assert str(key_file(instance)) in refused.stderr, refused.stderr
    assert "does not match this instance" in refused.stderr
    assert "could not be unlocked" not in refused.stderr

    write_key(key_file(instance), right)
    assert run_cli("check-config", config=instance.config).returncode == 0
    gw = start_in_process(instance)
    assert gw.session().get(f"{gw.url}/documents/a.txt").content == b"x" * 100
    gw.stop()


def test_an_unmounted_share_answers_503_and_stores_nothing(gateway: Gateway) -> None:
    instance = gateway.instance
    s = gateway.session()
    url = f"{gateway.url}/documents"
    assert s.put(f"{url}/letter.txt", data=b"on the mounted share").status_code == 201
    share = instance.share_dir("documents")
    mounted = share.with_name("documents-mounted")
    share.rename(mounted)  # the share goes away; its mount point is an empty local folder
    share.mkdir(mode=0o700)

    wait_for_status(s, "PROPFIND", f"{url}/", 503)
    listing = s.request("PROPFIND", f"{url}/", headers={"Depth": "1"})
    assert listing.headers["X-Clindav-Error"] == "share-unavailable"
    put = s.put(f"{url}/new.txt", data=b"must not land on the local disk")
    assert put.status_code == 503 and put.headers["X-Clindav-Error"] == "share-unavailable"
    assert list(share.iterdir()) == []
    assert s.get(f"{gateway.url}/clinical/").status_code != 503  # other shares still serve
    assert "share-unavailable" in audit_codes(instance)

    share.rmdir()
    mounted.rename(share)  # mounted again
    wait_for_status(s, "GET", f"{url}/letter.txt", 200)
    assert s.get(f"{url}/letter.txt").content == b"on the mounted share"

    gateway.stop()
    share.rename(mounted)
    share.mkdir(mode=0o700)
    refused = serve_refused(instance)
    assert "shares.documents.path" in refused.stderr and ".clindav-share.* marker" in refused.stderr
    assert "not mounted" in refused.stderr


def test_a_deleted_database_is_not_replaced_by_a_new_one(instance: Instance) -> None:
    gw = start_in_process(instance)
    assert gw.session().put(f"{gw.url}/documents/a.txt", data=b"x" * 100).status_code == 201
    gw.stop()
    for name in ("clindav.db", "clindav.db-wal", "clindav.db-shm"):
        (instance.folder / name).unlink(missing_ok=True)

    refused = serve_refused(instance)
    assert "shares.documents.path" in refused.stderr, refused.stderr
    assert "stored files this database does not know" in refused.stderr
    assert "shares.clinical.path" not in refused.stderr  # (empty shares are no reason)
    # Still refused the next time: the refusal left no instance behind it.
    assert "does not know" in serve_refused(instance).stderr


def test_a_new_database_takes_over_empty_marked_shares(instance: Instance) -> None:
    """The conftest PostgreSQL path: `clindav init`, then a new database_url."""
    data = instance.settings()
    data["database_url"] = "sqlite:///other.db"
    instance.write_settings(data)
    migrate(load_settings(instance.config).sqlalchemy_url())
    instance.add_user("carol", "clinicians")
    gw = start_in_process(instance)
    assert gw.session("carol").put(f"{gw.url}/documents/a.txt", data=b"y").status_code == 201
    gw.stop()


def test_another_instances_database_is_refused(instance: Instance, tmp_path: Path) -> None:
    other = make_instance(tmp_path / "other")
    gw = start_in_process(other)
    assert gw.session().put(f"{gw.url}/documents/b.txt", data=b"b").status_code == 201
    gw.stop()
    data = instance.settings()
    data["database_url"] = other.settings()["database_url"].replace(
        "sqlite:///clindav.db", f"sqlite:///{other.folder / 'clindav.db'}"
    )
    data["keys"]["file"] = str(other.folder / "keys" / "master.key")
    instance.write_settings(data)
    refused = serve_refused(instance)
    assert "shares.documents.path" in refused.stderr
    assert "a share of another clindav instance" in refused.stderr, refused.stderr
