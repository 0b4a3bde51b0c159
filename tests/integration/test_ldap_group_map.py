"""`group_map` mistakes that load fine but grant nothing: a DN split by a YAML
flow list, and a policy group the policy never names. check-config and the
gateway's start-up warn; docs/LDAP.md's examples give whole DNs."""

from __future__ import annotations

import re

import yaml

from gateway.auth.ldap import group_map_warnings
from gateway.settings import LdapSettings
from tests.conftest import REPO, Instance, run_cli, start_in_process
from tests.ldap_server import free_port

SPLIT_DN = "[cn=practice-admins,ou=groups,dc=example,dc=org]"


def with_group_map(instance: Instance, group_map_yaml: str) -> None:
    """An LDAP backend (a directory nobody needs to reach) with ``group_map`` as written."""
    text = instance.config.read_text()
    text += f"""
auth:
  backend: ldap
  ldap:
    servers: [ldap://127.0.0.1:{free_port()}]
    tls: none
    allow_plain_on_loopback: true
    base_dn: ou=people,dc=example,dc=org
    group_map:
{group_map_yaml}
"""
    instance.config.write_text(text)


def test_check_config_and_start_up_warn_about_a_split_dn_and_an_unused_group(
    instance: Instance,
) -> None:
    with_group_map(
        instance,
        f"      admins: {SPLIT_DN}\n"
        "      clinician: [GP-Clinicians]\n"  # a typo: the policy says clinicians
        '      intimate-access: ["cn=chaperoned,ou=groups,dc=example,dc=org"]\n',
    )
    checked = run_cli("check-config", config=instance.config)  # still valid: exit 0
    warnings = [line for line in checked.stderr.splitlines() if "warning:" in line]
    for piece in ("ou=groups", "dc=example", "dc=org"):
        assert any(f"group_map.admins: '{piece}' names no cn=" in w for w in warnings), warnings
    assert any("group_map.clinician: the policy never names" in w for w in warnings)
    assert len(warnings) == 4, warnings  # a quoted DN and a known group raise nothing

    gw = start_in_process(instance)
    try:
        logged = gw.log()
    finally:
        gw.stop()
    assert "WARNING clindav: settings: auth.ldap.group_map.admins: 'dc=org' names no cn=" in logged
    assert "auth.ldap.group_map.clinician: the policy never names" in logged


def test_the_group_maps_in_ldap_md_name_whole_groups() -> None:
    text = (REPO / "docs" / "LDAP.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    maps = []
    for block in blocks:
        doc = yaml.safe_load(block)
        ldap = doc.get("auth", {}).get("ldap") if "auth" in doc else None
        group_map = ldap["group_map"] if ldap else doc.get("group_map")
        if group_map is not None:
            conf = {"servers": ["ldaps://x"], "base_dn": "dc=x", "group_map": group_map}
            maps.append(LdapSettings.model_validate(conf))
    assert len(maps) == 3
    policy_groups = frozenset({"clinicians", "admins", "intimate-access"})  # the default policy's
    for settings in maps:
        assert group_map_warnings(settings.group_map, policy_groups) == []
        for entries in settings.group_map.values():
            assert all("," in e for e in entries if "=" in e), entries  # whole DNs


def test_a_flow_list_splits_a_dn_into_pieces_that_each_warn() -> None:
    # The old example, as written in LDAP.md before: four pieces, none a group.
    pieces = yaml.safe_load(f"admins: {SPLIT_DN}")["admins"]
    assert pieces == ["cn=practice-admins", "ou=groups", "dc=example", "dc=org"]
    assert len(group_map_warnings({"admins": pieces}, frozenset({"admins"}))) == 3
