"""An auditor without the master key: export and tail read with database access
alone; verify needs only the audit chain key exported to its own file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from tests.conftest import CLINDAV, REPO, Instance, _env, run_cli, start_in_process


def fill(instance: Instance) -> None:
    gw = start_in_process(instance)
    try:
        s = gw.session()
        assert s.put(f"{gw.url}/documents/a.txt", data=b"one").status_code == 201
        assert s.get(f"{gw.url}/documents/a.txt").status_code == 200
        assert s.get(f"{gw.url}/documents/missing.txt").status_code == 404
    finally:
        gw.stop()


def tail_lines(instance: Instance, wanted: int) -> list[str]:
    """The first ``wanted`` lines `audit tail` prints (it follows until stopped)."""
    proc = subprocess.Popen(
        [*CLINDAV, "audit", "tail", "--count", "3", "--config", str(instance.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    assert proc.stdout is not None
    lines = []
    try:
        while len(lines) < wanted:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.kill()
        _out, err = proc.communicate(timeout=30)
    assert len(lines) == wanted, err
    return lines


def test_auditor_reads_and_verifies_without_the_master_key(
    instance: Instance, tmp_path: Path
) -> None:
    fill(instance)
    key_file = tmp_path / "audit.key"
    exported = run_cli("keys", "export-audit-key", "--out", str(key_file), config=instance.config)
    assert str(key_file) in exported.stdout
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    master = instance.folder / "keys" / "master.key"
    assert master.read_text().split()[-1] not in key_file.read_text()  # not the master key

    # The auditor's machine: the same database, no master key anywhere.
    master.rename(tmp_path / "master.key.elsewhere")

    events = [
        json.loads(line)
        for line in run_cli("audit", "export", config=instance.config).stdout.splitlines()
    ]
    assert [e["code"] for e in events if e["action"] == "PUT"] == ["stored"]
    assert any(e["status"] == 404 for e in events)
    tailed = tail_lines(instance, 3)
    assert "documents:/missing.txt -> 404" in tailed[-1]

    verified = run_cli("audit", "verify", "--audit-key", str(key_file), config=instance.config)
    assert f"audit chain intact: {len(events)} events" in verified.stdout

    # Without a key verify names what it needs; it never falls back to trusting the chain.
    keyless = run_cli("audit", "verify", config=instance.config, check=False)
    assert keyless.returncode == 2
    assert "master.key" in keyless.stderr and "key file not found" in keyless.stderr


def test_audit_key_file_is_private_and_never_overwritten(
    instance: Instance, tmp_path: Path
) -> None:
    fill(instance)
    key_file = tmp_path / "audit.key"
    run_cli("keys", "export-audit-key", "--out", str(key_file), config=instance.config)
    again = run_cli(
        "keys", "export-audit-key", "--out", str(key_file), config=instance.config, check=False
    )
    assert again.returncode == 2 and "exists" in again.stderr

    os.chmod(key_file, 0o640)
    shared = run_cli(
        "audit", "verify", "--audit-key", str(key_file), config=instance.config, check=False
    )
    assert shared.returncode == 2 and "readable by others" in shared.stderr

    # A wrong chain key finds every event's MAC wrong: verification really uses it.
    os.chmod(key_file, 0o600)
    key_file.write_text("audit-chain " + "ab" * 32 + "\n")
    wrong = run_cli(
        "audit", "verify", "--audit-key", str(key_file), config=instance.config, check=False
    )
    assert wrong.returncode == 1 and "BROKEN" in wrong.stdout
