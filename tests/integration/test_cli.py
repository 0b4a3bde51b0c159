"""Acceptance: the command line.

``clindav check-config`` rejects a misspelt key, an unknown stage and an
invalid option with a message naming file and key; ``serve`` refuses to start
with a missing or world-readable key file, or an unwritable backing folder,
with a clear message and non-zero exit.  Also: ``init``, the user commands,
``--no-tls`` off loopback, and the README's own run command end to end over
verified HTTPS.
"""

from __future__ import annotations

import os
import re
import selectors
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import PASSWORD, REPO, Instance, ProcessGateway, run_cli, start_in_process

# --- check-config ----------------------------------------------------------------


def test_check_config_accepts_a_fresh_instance(instance: Instance) -> None:
    result = run_cli("check-config", config=instance.config, check=False, process=True)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.__setitem__("sever", d.pop("server")), "sever"),
        (lambda d: d["server"].__setitem__("prot", 1), "server.prot"),
        (
            lambda d: d["shares"]["documents"].__setitem__("pth", "shares/documents"),
            "shares.documents.pth",
        ),
        (lambda d: d["server"].__setitem__("port", "https"), "server.port"),
    ],
    ids=["misspelt-top-level", "misspelt-nested", "misspelt-share-key", "invalid-value"],
)
def test_check_config_names_file_and_key_of_a_bad_setting(
    instance: Instance, edit: Callable[[dict[str, Any]], None], key: str
) -> None:
    data = instance.settings()
    edit(data)
    instance.write_settings(data)
    result = run_cli("check-config", config=instance.config, check=False, process=True)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert str(instance.config) in result.stderr, result.stderr
    assert re.search(rf"(^|\s){re.escape(key)}:", result.stderr, re.M), result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_refuses_a_share_path_that_is_no_folder(instance: Instance) -> None:
    """A mistyped backing folder is found by check-config, not first by `clindav serve`."""
    data = instance.settings()
    missing = instance.folder / "practice-share" / "clinical"
    data["shares"]["clinical"]["path"] = str(missing)
    instance.write_settings(data)
    result = run_cli("check-config", config=instance.config, check=False)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert f"shares.clinical.path: {missing} is not a folder" in result.stderr, result.stderr
    assert "valid" not in result.stdout


def _edit_policy(instance: Instance, stages: list[Any]) -> Path:
    path = instance.folder / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["shares"]["clinical"]["stages"] = stages
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("stages", "key", "word"),
    [
        ([{"frobnicate": None}], "shares.clinical.stages.0.frobnicate", "unknown stage"),
        ([{"filetype": {"allow": ["bmp"]}}], "shares.clinical.stages.0.filetype.allow", ""),
        (
            [{"filetype": {"allow": "any", "colour": "blue"}}],
            "shares.clinical.stages.0.filetype.colour",
            "unknown option",
        ),
        (
            [{"filetype": {"allow": "any"}}, "frobnicate"],
            "shares.clinical.stages.1.frobnicate",
            "unknown stage",
        ),
    ],
    ids=["unknown-stage", "invalid-option-value", "unknown-option", "unknown-stage-by-name"],
)
def test_check_config_names_file_and_key_of_a_bad_stage(
    instance: Instance,
    stages: list[Any],
    key: str,
    word: str,
) -> None:
    policy = _edit_policy(instance, stages)
    result = run_cli("check-config", config=instance.config, check=False)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert str(policy) in result.stderr, result.stderr
    assert key in result.stderr, result.stderr
    assert word in result.stderr
    assert "Traceback" not in result.stderr
    if "frobnicate" in key:
        # serve refuses the same policy before listening.
        served = _serve_refused(instance)
        assert served.returncode == 2 and key in served.stderr, served.stderr


# --- serve refuses to start unsafely ------------------------------------------------


def _serve_refused(instance: Instance, *extra: str) -> subprocess.CompletedProcess[str]:
    try:
        return run_cli(
            "serve",
            "--port",
            "0",
            "--no-tls",
            *extra,
            config=instance.config,
            check=False,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("clindav serve started (or hung) instead of refusing")


def test_serve_refuses_a_missing_key_file(instance: Instance) -> None:
    key = instance.folder / "keys" / "master.key"
    key.unlink()
    result = _serve_refused(instance)
    assert result.returncode != 0
    assert str(key) in result.stderr and "keys.file" in result.stderr, result.stderr
    assert "not found" in result.stderr
    assert "clindav serving" not in result.stdout
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_key_file_others_can_read(instance: Instance) -> None:
    key = instance.folder / "keys" / "master.key"
    os.chmod(key, 0o644)
    result = _serve_refused(instance)
    assert result.returncode != 0
    assert str(key) in result.stderr and "chmod 600" in result.stderr, result.stderr
    assert "clindav serving" not in result.stdout
    os.chmod(key, 0o600)
    check = run_cli("check-config", config=instance.config, check=False)
    assert check.returncode == 0, check.stderr


def _mount_read_only(folder: Path) -> bool:
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        return False
    remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
    if remount.returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
        return False
    return True


def test_serve_refuses_an_unwritable_backing_folder(instance: Instance) -> None:
    folder = instance.share_dir("documents")
    # We run as root, so file modes do not stop writes: a read-only bind mount does.
    mounted = _mount_read_only(folder)
    try:
        if mounted:
            # Variant that ran: read-only bind mount of shares/documents.
            with pytest.raises(OSError):
                (folder / "probe").write_bytes(b"x")
            expected = "not writable"
        else:
            # Fallback variant (mount not permitted here): the share path is a regular file.
            shutil.rmtree(folder)
            folder.write_bytes(b"not a folder")
            expected = "not a folder"
        result = _serve_refused(instance)
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
    assert result.returncode != 0
    assert "shares.documents.path" in result.stderr, result.stderr
    assert str(folder) in result.stderr and expected in result.stderr, result.stderr
    assert "clindav serving" not in result.stdout
    assert "Traceback" not in result.stderr
    if mounted:
        # Once writable again, the same instance serves.
        gw = start_in_process(instance)
        gw.stop()


def test_no_tls_is_refused_off_loopback(instance: Instance) -> None:
    result = _serve_refused(instance, "--host", "0.0.0.0")
    assert result.returncode != 0
    assert "loopback addresses, not 0.0.0.0" in result.stderr, result.stderr
    assert "drop --no-tls" in result.stderr and "docs/DEPLOY.md" in result.stderr
    assert "clindav serving" not in result.stdout


def test_serve_refuses_a_port_a_running_gateway_holds(instance: Instance) -> None:
    """A listener as a running gateway's workers hold one (``SO_REUSEPORT``): a second
    ``clindav serve`` on its port must refuse, not join it and take part of its connections."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _serve_refused(instance, "--port", str(port), "--workers", "2")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert f"127.0.0.1:{port}" in result.stderr and "server.port" in result.stderr, result.stderr
    assert "a clindav serve already running?" in result.stderr, result.stderr
    assert "clindav serving" not in result.stdout
    assert "Traceback" not in result.stderr


def test_a_command_outside_the_instance_folder_says_to_name_the_settings_file(
    tmp_path: Path,
) -> None:
    """Without --config, from a folder with no clindav-data/: where it looked and the way out."""
    result = run_cli("user", "list", cwd=tmp_path, check=False)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert f"not found in {tmp_path}" in result.stderr, result.stderr
    assert "--config FILE" in result.stderr, result.stderr


def test_config_naming_the_instance_folder_says_which_file(instance: Instance) -> None:
    result = run_cli("user", "list", config=instance.folder, check=False)
    assert result.returncode == 2, (result.returncode, result.stderr)
    expected = f"is a folder: name the settings file in it, --config {instance.config}"
    assert expected in result.stderr, result.stderr
    assert "YAML" not in result.stderr, result.stderr


def test_serve_names_the_staff_console(process_gateway: ProcessGateway) -> None:
    """What `clindav serve` prints leads to the console's sign-in page."""
    stdout = process_gateway.process.stdout
    assert stdout is not None
    shown = [stdout.readline() for _ in range(2)]  # the lines after "clindav serving"
    console = [line.split()[-1] for line in shown if line.startswith("staff console: ")]
    assert console == [f"{process_gateway.url}/app/"], shown
    page = requests.get(console[0], timeout=30)
    assert page.status_code == 200 and page.url.endswith("/app/sign-in"), page.url
    assert "Sign in" in page.text


# --- users -------------------------------------------------------------------------


def test_user_add_list_remove(instance: Instance) -> None:
    added = run_cli(
        "user",
        "add",
        "bob",
        "--group",
        "clinicians",
        "--group",
        "teaching-staff",
        "--password-stdin",
        config=instance.config,
        stdin=PASSWORD + "\n",
        check=False,
    )
    assert added.returncode == 0, added.stderr
    listing = run_cli("user", "list", config=instance.config).stdout.splitlines()
    assert "bob\tclinicians,teaching-staff" in listing, listing
    assert "alice\tclinicians" in listing

    # The account works against the gateway, and not once removed.  (A running
    # gateway caches successful logins for up to a minute, by design: the
    # removal is checked against a freshly started one.)
    assert _fresh_gateway_status(instance, "bob") == 207
    removed = run_cli("user", "remove", "bob", config=instance.config, check=False)
    assert removed.returncode == 0, removed.stderr
    assert "bob" not in run_cli("user", "list", config=instance.config).stdout
    assert _fresh_gateway_status(instance, "bob") == 401

    gone = run_cli("user", "remove", "bob", config=instance.config, check=False)
    assert gone.returncode == 1 and "bob" in gone.stderr, gone.stderr


def _fresh_gateway_status(instance: Instance, user: str) -> int:
    """What a freshly started gateway answers ``user``'s PROPFIND of a share (no login cache)."""
    gw = start_in_process(instance)
    try:
        answer = gw.session(user).request(
            "PROPFIND", f"{gw.url}/documents/", headers={"Depth": "0"}
        )
    finally:
        gw.stop()
    return answer.status_code


@pytest.mark.parametrize(
    ("stdin", "message"),
    [("short\n", "at least 12 characters"), ("", "no password"), ("\n", "no password")],
    ids=["short", "empty-stdin", "empty-line"],
)
def test_user_add_refuses_a_bad_password(instance: Instance, stdin: str, message: str) -> None:
    result = run_cli(
        "user",
        "add",
        "carl",
        "--group",
        "clinicians",
        "--password-stdin",
        config=instance.config,
        stdin=stdin,
        check=False,
        process=True,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "carl" not in run_cli("user", "list", config=instance.config).stdout


def test_user_add_refuses_a_duplicate(instance: Instance) -> None:
    result = run_cli(
        "user",
        "add",
        "alice",
        "--group",
        "admins",
        "--password-stdin",
        config=instance.config,
        stdin="another long password\n",
        check=False,
    )
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "alice" in result.stderr and "exists" in result.stderr
    assert (
        "alice\tclinicians" in run_cli("user", "list", config=instance.config).stdout.splitlines()
    )


# --- init --------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_complete_instance(tmp_path: Path) -> None:
    folder = tmp_path / "practice"
    result = run_cli("init", str(folder), check=False, process=True)
    assert result.returncode == 0, result.stderr
    assert (folder / "clindav.yaml").is_file()
    assert (folder / "policy.yaml").is_file()
    assert (folder / "clindav.db").is_file()
    assert _mode(folder / "keys" / "master.key") == 0o600
    assert (folder / "tls" / "cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert _mode(folder / "tls" / "key.pem") == 0o600
    for share in ("clinical", "referrals", "teaching", "documents", "inbox"):
        assert (folder / "shares" / share).is_dir(), share
    settings = yaml.safe_load((folder / "clindav.yaml").read_text())
    assert set(settings["shares"]) == {"clinical", "referrals", "teaching", "documents", "inbox"}
    # The Nextcloud apps' camera inbox works out of the box: a held share.
    assert settings["nextcloud"] == {"inbox_share": "inbox"}
    policy = yaml.safe_load((folder / "policy.yaml").read_text())
    assert {"hold": {"window": "7d"}} in policy["shares"]["inbox"]["stages"]
    # Relative paths in the settings: the instance works from any working directory.
    check = run_cli("check-config", config=folder / "clindav.yaml", cwd=tmp_path, check=False)
    assert check.returncode == 0, check.stderr

    key = (folder / "keys" / "master.key").read_bytes()
    again = run_cli("init", str(folder), check=False)
    assert again.returncode == 2, (again.returncode, again.stderr)
    serve_it = (
        f"holds an instance already: serve it with `clindav serve --config {folder}/clindav.yaml`"
    )
    assert serve_it in again.stderr, again.stderr
    assert (folder / "keys" / "master.key").read_bytes() == key  # nothing rewritten

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("someone's files")
    refused = run_cli("init", str(busy), check=False)
    assert refused.returncode == 2
    assert sorted(os.listdir(busy)) == ["notes.txt"]


# --- the README's run command ---------------------------------------------------


def _readme_run_command() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", section, re.S)
    assert block, "no fenced block under '## Run it'"
    lines = [
        line for line in block.group(1).splitlines() if line.startswith("./deploy/bootstrap serve")
    ]
    assert len(lines) == 1, block.group(1)
    argv = shlex.split(lines[0])
    argv[0] = str(REPO / argv[0])  # the README runs it from the repository
    return argv


def _read_serving_url(process: subprocess.Popen[str], limit: float) -> tuple[str, list[str]]:
    assert process.stdout is not None
    seen: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not selector.select(timeout=1):
            if process.poll() is not None:
                break
            continue
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("clindav serving https://"):
            return line.split()[-1].rstrip("/"), seen
    raise AssertionError(f"no 'clindav serving https://' line; stdout so far: {seen}")


def _venv_on_suite_packages(venv: Path) -> Path:
    """A new virtual environment that sees the suite's installed packages.

    The bootstrap installs this checkout into it, as into a fresh clone's
    ``.venv``, without downloading every dependency again and without
    touching the suite's own environment (which may belong to another checkout).
    """
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    packages = sysconfig.get_path("purelib")
    (venv / Path(packages).relative_to(sys.prefix) / "suite-packages.pth").write_text(packages)
    return venv


def test_readme_run_command_serves_verified_https(tmp_path: Path) -> None:
    argv = [*_readme_run_command(), "--port", "0"]
    env = dict(os.environ)
    if not (REPO / ".venv").exists():
        env["CLINDAV_VENV"] = str(_venv_on_suite_packages(tmp_path / "venv"))
    stderr_path = tmp_path / "bootstrap.stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        try:
            url, _lines = _read_serving_url(process, limit=300)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstderr:\n{stderr_path.read_text()[-3000:]}") from None
        data = tmp_path / "clindav-data"
        config = data / "clindav.yaml"
        assert config.is_file() and (data / "clindav.db").is_file()
        assert _mode(data / "keys" / "master.key") == 0o600
        for share in ("clinical", "referrals", "teaching", "documents"):
            assert (data / "shares" / share).is_dir()
        cert = data / "tls" / "cert.pem"
        assert url.startswith("https://127.0.0.1:"), url

        # verify= on every call: a Session's own verify loses to REQUESTS_CA_BUNDLE.
        ca = str(cert)  # real verification against the generated certificate
        r = requests.request("PROPFIND", f"{url}/documents/", headers={"Depth": "0"}, verify=ca)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic")

        added = run_cli(
            "user",
            "add",
            "reader",
            "--group",
            "clinicians",
            "--password-stdin",
            config=config,
            stdin=PASSWORD + "\n",
            cwd=tmp_path,
            check=False,
        )
        assert added.returncode == 0, added.stderr

        auth = ("reader", PASSWORD)
        assert (
            requests.request("MKCOL", f"{url}/documents/letters", auth=auth, verify=ca).status_code
            == 201
        )
        body = b"Dear colleague,\n" * 100
        put = requests.put(f"{url}/documents/letters/a.txt", data=body, auth=auth, verify=ca)
        assert put.status_code == 201
        got = requests.get(f"{url}/documents/letters/a.txt", auth=auth, verify=ca)
        assert got.status_code == 200 and got.content == body

        # Verification is real: against the system's CAs the same request fails.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/documents/", auth=auth, verify=True)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout:
            process.stdout.close()
