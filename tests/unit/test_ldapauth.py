"""The LDAP pieces that need no directory: filters, group mapping, the throttle
and the ``auth.ldap`` settings (the rest runs against slapd in
tests/integration/test_ldap.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.auth.base import LoginThrottle, LoginThrottled
from gateway.auth.ldap import (
    GroupMap,
    chain_filter,
    member_filter,
    plausible_name,
    user_filter,
)
from gateway.errors import ConfigError
from gateway.settings import LdapSettings, load_settings

CONF = LdapSettings(servers=["ldaps://dc1.example.org"], base_dn="dc=example,dc=org")
NAMES = [
    "*",
    "*)(uid=*",
    "admin)(|(uid=*",
    "alice*",
    "\\2a",
    "(uid=*)",
    "a\\",
    "x)(&",
    "ålice",
    "o'brien",
]


def _unescape(value: str) -> str:
    return re.sub(r"\\([0-9a-fA-F]{2})", lambda m: chr(int(m[1], 16)), value)


@pytest.mark.parametrize("name", NAMES)
def test_a_name_is_one_escaped_equality_value(name: str) -> None:
    text = user_filter(CONF, name)
    prefix = "(&(objectClass=person)(uid="
    assert text.startswith(prefix) and text.endswith("))")
    value = text[len(prefix) : -2]
    assert not re.search(r"[()*\0]", value)
    assert not re.search(r"\\(?![0-9a-fA-F]{2})", value)  # every backslash starts an escape
    assert _unescape(value) == name


def test_group_filters() -> None:
    dn = "cn=Smith\\, J (GP),ou=people,dc=example,dc=org"
    assert member_filter("(objectClass=groupOfNames)", "member", [dn, "cn=x"]) == (
        "(&(objectClass=groupOfNames)(|(member=cn=Smith\\5c, J \\28GP\\29,ou=people,"
        "dc=example,dc=org)(member=cn=x)))"
    )
    assert chain_filter("(objectClass=group)", "cn=a*b,dc=x") == (
        "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:=cn=a\\2ab,dc=x))"
    )


@pytest.mark.parametrize(
    ("name", "ok"),
    [("alice", True), ("ålice", True), ("a" * 256, True), ("a" * 257, False), ("", False)]
    + [(f"al{c}ice", False) for c in "\0\n\r\t\x7f"],
)
def test_plausible_names(name: str, ok: bool) -> None:
    assert plausible_name(name) is ok


def test_group_map_by_dn_and_by_cn() -> None:
    mapping = GroupMap(
        {
            "clinicians": ["CN=GP, OU=Groups, DC=example, DC=org", "Nurses"],
            "admins": ["practice-admins"],
            "auditors": ["cn=auditors,ou=other,dc=example,dc=org"],
        }
    )
    assert mapping.policy_groups(["cn=gp,ou=groups,dc=example,dc=org"]) == {"clinicians"}
    assert mapping.policy_groups(["cn=NURSES,ou=site-b,dc=example,dc=org"]) == {"clinicians"}
    assert mapping.policy_groups(["CN=Practice-Admins,OU=x,DC=y"]) == {"admins"}
    # A DN names one group: the same CN elsewhere does not count.
    assert mapping.policy_groups(["cn=gp,ou=elsewhere,dc=example,dc=org"]) == frozenset()
    assert mapping.policy_groups(["cn=auditors,ou=groups,dc=example,dc=org"]) == frozenset()
    # A CN entry matches only a group's own CN, not an OU or a deeper RDN.
    assert mapping.policy_groups(["ou=nurses,dc=example,dc=org"]) == frozenset()
    assert mapping.policy_groups(["cn=x,cn=nurses,dc=example,dc=org"]) == frozenset()
    # Unmapped groups grant nothing, even when named like a policy group.
    assert mapping.policy_groups(["cn=clinicians,ou=groups,dc=example,dc=org"]) == frozenset()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_per_user_and_per_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_user=3, per_address=5, window=60, clock=clock)
    for _ in range(3):
        throttle.check("Alice", "10.0.0.1")
        throttle.failed("Alice", "10.0.0.1")
    with pytest.raises(LoginThrottled):
        throttle.check(" alice", "10.0.0.2")  # names compare case-insensitively
    throttle.check("bob", "10.0.0.2")
    for user in ("bob", "carol"):
        throttle.failed(user, "10.0.0.1")
    with pytest.raises(LoginThrottled):
        throttle.check("dave", "10.0.0.1")  # the address is over its 5
    clock.now += 61
    throttle.check("alice", "10.0.0.1")  # the window passed


def test_success_clears_the_user_not_the_address() -> None:
    throttle = LoginThrottle(per_user=2, per_address=3, window=60, clock=Clock())
    throttle.failed("alice", "10.0.0.1")
    throttle.failed("alice", "10.0.0.1")
    throttle.succeeded("alice")
    throttle.check("alice", "10.0.0.2")
    throttle.failed("mallory", "10.0.0.1")
    with pytest.raises(LoginThrottled):
        throttle.check("alice", "10.0.0.1")


def test_throttle_limit_zero_is_off_and_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_user=0, per_address=0, window=60, clock=clock)
    for _ in range(50):
        throttle.failed("alice", "10.0.0.1")
    throttle.check("alice", "10.0.0.1")
    bounded = LoginThrottle(per_user=5, per_address=0, window=60, clock=clock)
    bounded.max_keys = 100
    for i in range(1000):
        bounded.failed(f"user-{i}", "10.0.0.1")
    assert len(bounded._failures) <= 100


MINIMAL = {"shares": {"documents": {"url": "/documents", "path": "shares/documents"}}}
LDAP = {"servers": ["ldaps://dc1.example.org"], "base_dn": "dc=example,dc=org"}


def problems(tmp_path: Path, auth: dict[str, object]) -> list[tuple[str, str, str]]:
    path = tmp_path / "clindav.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "auth": auth}))
    try:
        load_settings(path)
    except ConfigError as exc:
        return [(p.file, p.key, p.problem) for p in exc.problems]
    return []


@pytest.mark.parametrize(
    ("ldap", "key", "text"),
    [
        ({"tls": "none", "servers": ["ldap://dc1.example.org"]}, "auth.ldap.tls", "clear"),
        (
            {"tls": "none", "servers": ["ldap://10.1.2.3"], "allow_plain_on_loopback": True},
            "auth.ldap.tls",
            "'ldap://10.1.2.3' is not loopback",
        ),
        ({"tls": "none", "servers": ["ldap://127.0.0.1"]}, "auth.ldap.tls", "allow_plain"),
        ({"tls": "ldaps", "servers": ["ldap://dc1.example.org"]}, "auth.ldap.tls", "ldaps://"),
        ({"tls": "starttls"}, "auth.ldap.tls", "ldap://"),
        ({"servers": ["http://dc1"]}, "auth.ldap.servers", "ldaps://host"),
        ({"servers": []}, "auth.ldap.servers", "at least 1"),
        ({"user_filter": "(objectClass=person"}, "auth.ldap.user_filter", "RFC 4515"),
        ({"user_attribute": "uid)(x"}, "auth.ldap.user_attribute", "attribute name"),
        ({"group_map": {"admins": ["cn=a,,dc=x"]}}, "auth.ldap.group_map", "not a DN"),
        ({"bind_dn": "cn=svc,dc=example,dc=org"}, "auth.ldap.bind_password_env", "exactly one"),
        ({"bind_password_env": "X"}, "auth.ldap.bind_password_env", "without bind_dn"),
        ({"group_source": "magic"}, "auth.ldap.group_source", "memberof"),
    ],
)
def test_ldap_settings_errors_name_file_and_key(
    tmp_path: Path, ldap: dict[str, object], key: str, text: str
) -> None:
    found = problems(tmp_path, {"backend": "ldap", "ldap": {**LDAP, **ldap}})
    assert [(f, k) for f, k, _ in found] == [(str(tmp_path / "clindav.yaml"), key)], found
    assert text in found[0][2]


def test_ldap_backend_needs_its_section_and_plain_loopback_is_allowed(tmp_path: Path) -> None:
    assert [k for _, k, _ in problems(tmp_path, {"backend": "ldap"})] == ["auth.ldap"]
    plain = {**LDAP, "tls": "none", "servers": ["ldap://127.0.0.1:3389", "ldap://localhost"]}
    assert (
        problems(tmp_path, {"backend": "ldap", "ldap": {**plain, "allow_plain_on_loopback": True}})
        == []
    )
