"""The local user store's lifecycle against the running gateway: passwd, set-groups,
disable and enable take effect on the next request; `user add` prompts on a
terminal and warns about groups that give nothing."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import termios
import time
from pathlib import Path

from tests.conftest import CLINDAV, PASSWORD, Gateway, Instance, _env, run_cli

NEW_PASSWORD = "a quite different passphrase"


def audit_events(instance: Instance) -> list[dict]:
    export = run_cli("audit", "export", config=instance.config).stdout
    return [json.loads(line) for line in export.splitlines() if line.strip()]


def test_disabled_user_cannot_log_in_until_enabled(gateway: Gateway) -> None:
    instance = gateway.instance
    alice = gateway.session("alice")
    url = f"{gateway.url}/documents/"
    assert alice.request("PROPFIND", url, headers={"Depth": "1"}).status_code == 207

    run_cli("user", "disable", "alice", config=instance.config)
    assert "alice\tclinicians\tdisabled" in run_cli("user", "list", config=instance.config).stdout
    refused = alice.request("PROPFIND", url, headers={"Depth": "1"})  # the login was cached
    assert refused.status_code == 401
    assert refused.headers["X-Clindav-Error"] == "authentication-required"
    logins = [e for e in audit_events(instance) if e["action"] == "LOGIN"]
    assert [(e["status"], "'alice'" in e["reason"]) for e in logins] == [(401, True)], logins

    run_cli("user", "enable", "alice", config=instance.config)
    assert alice.request("PROPFIND", url, headers={"Depth": "1"}).status_code == 207


def test_passwd_and_set_groups_take_effect_at_once(gateway: Gateway) -> None:
    instance = gateway.instance
    url = f"{gateway.url}/documents/"
    alice = gateway.session("alice")
    assert alice.put(f"{url}a.txt", data=b"a").status_code == 201

    run_cli(
        "user",
        "passwd",
        "alice",
        "--password-stdin",
        config=instance.config,
        stdin=NEW_PASSWORD + "\n",
    )
    assert alice.get(f"{url}a.txt").status_code == 401  # the old password, though cached
    assert gateway.session("alice", NEW_PASSWORD).get(f"{url}a.txt").status_code == 200

    result = run_cli(
        "user", "set-groups", "alice", "--group", "receptionists", config=instance.config
    )
    assert "names no group receptionists" in result.stderr  # the default policy gives it nothing
    assert gateway.session("alice", NEW_PASSWORD).get(f"{url}a.txt").status_code == 403
    run_cli("user", "set-groups", "alice", "--group", "clinicians", config=instance.config)
    assert gateway.session("alice", NEW_PASSWORD).get(f"{url}a.txt").status_code == 200

    missing = run_cli("user", "disable", "nobody", config=instance.config, check=False)
    assert missing.returncode == 1 and "No user 'nobody'" in missing.stderr


def test_user_add_warns_about_groups_and_ldap(instance: Instance) -> None:
    added = run_cli(
        "user",
        "add",
        "bob",
        "--group",
        "clinicans",
        "--password-stdin",
        config=instance.config,
        stdin=PASSWORD + "\n",
    )
    assert "names no group clinicans" in added.stderr
    # The groups the policy does name, so the typo is seen at once.
    named = added.stderr.split("its groups: ", 1)[1].split()
    assert "clinicians" in [group.rstrip(",") for group in named], added.stderr
    fine = run_cli(
        "user",
        "add",
        "carol",
        "--group",
        "intimate-access",
        "--password-stdin",
        config=instance.config,
        stdin=PASSWORD + "\n",
    )
    assert "warning" not in fine.stderr  # named by the consent stage's intimate_group
    data = instance.settings()
    data["auth"] = {
        "backend": "ldap",
        "ldap": {
            "servers": ["ldap://127.0.0.1:1"],
            "tls": "none",
            "allow_plain_on_loopback": True,
            "base_dn": "dc=example,dc=org",
        },
    }
    instance.write_settings(data)
    ldap = run_cli(
        "user",
        "add",
        "dave",
        "--group",
        "clinicians",
        "--password-stdin",
        config=instance.config,
        stdin=PASSWORD + "\n",
        check=False,
    )
    assert "auth.backend is ldap" in ldap.stderr, ldap.stdout + ldap.stderr
    no_tty = run_cli(
        "user", "add", "erin", "--group", "clinicians", config=instance.config, check=False
    )
    assert no_tty.returncode == 2 and "--password-stdin" in no_tty.stderr


def _on_terminal(args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run clindav with a pseudo-terminal as its controlling terminal; type ``answers``."""
    leader, follower = os.openpty()

    def take_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [*CLINDAV, *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=_env(),
        preexec_fn=take_terminal,
        cwd=Path(__file__).parent,
    )
    os.close(follower)
    output = b""
    for answer in answers:
        while b"assword" not in output.rsplit(b"\n", 1)[-1]:
            output += os.read(leader, 4096)
        os.write(leader, answer.encode() + b"\n")
        output += os.read(leader, 4096)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            output += os.read(leader, 4096)
        except OSError:
            break
    process.wait(60)
    os.close(leader)
    return process.returncode, output.decode(errors="replace")


def test_user_add_prompts_twice_without_echo_on_a_terminal(gateway: Gateway) -> None:
    config = str(gateway.instance.config)
    code, output = _on_terminal(
        ["user", "add", "frank", "--group", "clinicians", "--config", config],
        [NEW_PASSWORD, NEW_PASSWORD],
    )
    assert code == 0, output
    assert NEW_PASSWORD not in output  # never echoed
    assert (
        gateway.session("frank", NEW_PASSWORD)
        .request("PROPFIND", f"{gateway.url}/documents/")
        .status_code
        == 207
    )
    code, output = _on_terminal(
        ["user", "passwd", "frank", "--config", config], [PASSWORD, PASSWORD + "x"]
    )
    assert code == 2 and "differ" in output
    assert (
        gateway.session("frank", NEW_PASSWORD)
        .request("PROPFIND", f"{gateway.url}/documents/")
        .status_code
        == 207
    )
