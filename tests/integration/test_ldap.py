"""LDAP accounts against a real OpenLDAP slapd (tests/ldap_server.py) on loopback.

The gateway runs with ``auth.backend: ldap`` over LDAPS, verifying the test
CA; its server list starts with a dead port, so every login also exercises
failover.  Directory groups reach the policy through ``group_map`` (by DN and
by CN), nested ones included.  Some checks run the authenticator in-process
against the same slapd where a gateway would only add time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy
import yaml

from gateway.auth.base import LoginThrottled
from gateway.auth.ldap import LdapAuthenticator
from gateway.db import AuditEvent
from gateway.errors import ServiceUnavailable
from gateway.settings import LdapSettings, load_settings
from tests.conftest import Gateway, Instance, make_instance, run_cli, start_gateway
from tests.integration.test_dav_methods import small_jpeg
from tests.ldap_server import (
    PASSWORDS,
    SERVICE_PASSWORD,
    Slapd,
    free_port,
    group,
    ldap_settings,
    person,
    running_slapd,
    write_certificates,
)

CACHE_TTL = 1.5
INJECTIONS = [
    "*",
    "*)(uid=*",
    "admin)(|(uid=*",
    "alice*",
    "\\2a",
    "(uid=*)",
    "alice)(uid=*",
    "*)(objectClass=*",
    "al*ce",
    "alice\x00",
    "alice\x00)(uid=*",
    "a" * 300,
]


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def ldap_instance(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Instance:
    inst = make_instance(tmp_path_factory.mktemp("ldap-gw"))
    data = inst.settings()
    dead = f"ldaps://127.0.0.1:{free_port()}"
    conf = ldap_settings(
        slapd,
        inst.folder / "ldap-bind.secret",
        servers=[dead, slapd.url("ldaps")],
        cache_ttl=CACHE_TTL,
        # Every test request comes from 127.0.0.1: the address limit is tested in-process.
        throttle={"max_failures_per_user": 10, "max_failures_per_address": 1000, "window": 300},
    )
    data["auth"] = {"backend": "ldap", "ldap": conf}
    inst.write_settings(data)
    return inst


@pytest.fixture(scope="module")
def ldap_gateway(ldap_instance: Instance) -> Iterator[Gateway]:
    gw = start_gateway(ldap_instance)
    yield gw
    gw.stop()


def authenticator(slapd: Slapd, tmp: Path, **overrides: object) -> LdapAuthenticator:
    conf = LdapSettings.model_validate(ldap_settings(slapd, tmp / "bind.secret", **overrides))
    auth = LdapAuthenticator(conf)
    auth.failure_delay = 0.0
    return auth


def status(gw: Gateway, user: str, password: str, path: str = "/documents/") -> int:
    with requests.Session() as s:
        s.auth = (user, password)
        return s.get(gw.url + path, timeout=30).status_code


# --- 1. logins and refusals --------------------------------------------------


def test_directory_user_logs_in_and_bad_logins_get_401(ldap_gateway: Gateway, slapd: Slapd) -> None:
    alice = ldap_gateway.session("alice", PASSWORDS["alice"])
    put = alice.put(f"{ldap_gateway.url}/documents/alice.txt", data=b"from the directory")
    assert put.status_code == 201, put.text
    assert alice.get(f"{ldap_gateway.url}/documents/alice.txt").content == b"from the directory"
    refused = [
        ("alice", "not her password"),
        ("nobody", "whatever-pw"),
        ("alice", ""),
        ("", PASSWORDS["alice"]),
        ("dave", PASSWORDS["dave"]),  # disabled: the right password does not help
    ]
    with ThreadPoolExecutor(len(refused)) as pool:
        codes = list(pool.map(lambda c: status(ldap_gateway, *c), refused))
    assert codes == [401] * len(refused)


def test_empty_password_never_reaches_the_directory(ldap_gateway: Gateway, slapd: Slapd) -> None:
    binds, searches = slapd.binds(person("erin")), slapd.searches("erin")
    assert status(ldap_gateway, "erin", "") == 401
    assert status(ldap_gateway, "", "") == 401
    assert (slapd.binds(person("erin")), slapd.searches("erin")) == (binds, searches)


def test_filter_metacharacters_never_log_anyone_in(ldap_gateway: Gateway, slapd: Slapd) -> None:
    attempts = [(n, p) for n in INJECTIONS for p in (PASSWORDS["alice"], "*", "x")]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda c: status(ldap_gateway, *c), attempts))
    assert set(codes) == {401}, dict(zip(attempts, codes, strict=True))
    # What slapd was asked: every metacharacter arrived escaped, as a plain value.
    prefix = "(&(objectClass=inetOrgPerson)(uid="
    filters = [f for f in slapd.search_filters() if f.startswith(prefix)]
    assert len(filters) >= 3 * (len(INJECTIONS) - 3)
    # NUL and over-long names are refused before the directory sees them.
    assert not [f for f in filters if "\\00" in f or "a" * 300 in f]
    assert not [f for f in filters if "=*" in f or "(|" in f or f.count("(") != 3], filters
    assert f"{prefix}alice\\2A))" in filters  # the star arrived as a literal character


def test_unknown_user_costs_what_a_wrong_password_costs(slapd: Slapd, tmp_path: Path) -> None:
    auth = authenticator(slapd, tmp_path)
    auth.throttle = None
    absent_binds = slapd.log().count("cn=clindav-absent-")

    def timed(user: str, password: str) -> float:
        start = time.perf_counter()
        assert auth.login(user, password) is None
        return time.perf_counter() - start

    rounds = 25
    # Interleaved, so a burst of load on the machine falls on both paths alike.
    pairs = [
        (timed("erin", f"wrong-{i}"), timed(f"nobody-{i}", f"wrong-{i}")) for i in range(rounds)
    ]
    known, unknown = [k for k, _ in pairs], [u for _, u in pairs]
    # Structure: an unknown name also costs a bind (as a DN that does not exist).
    assert slapd.log().count("cn=clindav-absent-") - absent_binds >= rounds
    # Timing, on each path's floor (load only ever adds time): without that
    # bind the unknown path's floor is about half the known path's.
    assert min(unknown) > 0.7 * min(known), (known, unknown)


# --- 2. groups -------------------------------------------------------------


def test_direct_nested_and_no_group(ldap_gateway: Gateway) -> None:
    url = ldap_gateway.url
    alice = ldap_gateway.session("alice", PASSWORDS["alice"])
    assert alice.request("MKCOL", f"{url}/clinical/9434765919").status_code in (201, 405)
    bob = ldap_gateway.session("bob", PASSWORDS["bob"])  # in nurses, nurses in clinicians
    assert bob.put(f"{url}/documents/bob.txt", data=b"b").status_code == 201
    put = bob.put(f"{url}/clinical/9434765919/x.jpg", data=small_jpeg())
    assert put.status_code == 201, put.text
    gina = ldap_gateway.session("gina", PASSWORDS["gina"])  # two levels through a cycle
    assert gina.put(f"{url}/documents/gina.txt", data=b"g").status_code == 201
    erin = ldap_gateway.session("erin", PASSWORDS["erin"])  # admins, mapped by CN
    assert erin.put(f"{url}/documents/erin.txt", data=b"e").status_code == 201
    carol = ldap_gateway.session("carol", PASSWORDS["carol"])  # reception: mapped to nothing
    refused = carol.put(f"{url}/clinical/9434765919/y.jpg", data=small_jpeg())
    assert refused.status_code == 403
    assert refused.headers["X-Clindav-Error"] == "policy-denied"
    assert carol.get(f"{url}/documents/alice.txt").status_code == 403


def test_removal_from_the_group_takes_effect_after_the_cache_ttl(
    ldap_gateway: Gateway, slapd: Slapd
) -> None:
    frank = ldap_gateway.session("frank", PASSWORDS["frank"])
    assert frank.put(f"{ldap_gateway.url}/documents/frank.txt", data=b"1").status_code == 201
    slapd.ldap(
        "ldapmodify",
        f"dn: {group('clinicians')}\nchangetype: modify\ndelete: member\n"
        f"member: {person('frank')}\n",
    )
    time.sleep(CACHE_TTL + 1.0)
    assert frank.put(f"{ldap_gateway.url}/documents/frank.txt", data=b"2").status_code == 403


def test_group_search_and_posix_groups(slapd: Slapd, tmp_path: Path) -> None:
    members = authenticator(slapd, tmp_path, group_source="search")
    bob = members.login("bob", PASSWORDS["bob"])
    assert bob is not None and bob.groups == {"clinicians"}
    shallow = authenticator(slapd, tmp_path, nested_depth=1)
    gina = shallow.login("gina", PASSWORDS["gina"])  # clinicians is two levels up
    assert gina is not None and gina.groups == frozenset()
    posix = authenticator(
        slapd,
        tmp_path,
        group_source="search",
        group_filter="(objectClass=posixGroup)",
        member_attribute="memberUid",
        group_map={"clinicians": ["Radiology"]},
    )
    alice = posix.login("alice", PASSWORDS["alice"])
    assert alice is not None and alice.groups == {"clinicians"}


# --- 3. outage ---------------------------------------------------------------


def test_directory_outage_answers_503_and_recovers(ldap_gateway: Gateway, slapd: Slapd) -> None:
    time.sleep(CACHE_TTL)  # nothing cached from earlier tests
    slapd.stop()
    try:
        with requests.Session() as s:
            s.auth = ("alice", PASSWORDS["alice"])
            r = s.get(f"{ldap_gateway.url}/documents/alice.txt")
        assert r.status_code == 503
        assert r.headers["X-Clindav-Error"] == "service-unavailable"
        assert status(ldap_gateway, "alice", "a wrong one") == 503  # not 401: we cannot know
        assert ldap_gateway.process.poll() is None
    finally:
        slapd.start()
    assert status(ldap_gateway, "alice", PASSWORDS["alice"], "/documents/alice.txt") == 200


@pytest.mark.parametrize("continue_cached", [True, False])
def test_cached_logins_during_an_outage_follow_the_setting(
    slapd: Slapd, tmp_path: Path, continue_cached: bool
) -> None:
    auth = authenticator(slapd, tmp_path, cache_ttl=60, cached_logins_during_outage=continue_cached)
    auth.probe_interval = 0.0
    assert auth.login("erin", PASSWORDS["erin"]) is not None
    slapd.stop()
    try:
        with pytest.raises(ServiceUnavailable):
            auth.login("alice", PASSWORDS["alice"])  # a new login
        if continue_cached:
            assert auth.login("erin", PASSWORDS["erin"]) is not None
        else:
            with pytest.raises(ServiceUnavailable):
                auth.login("erin", PASSWORDS["erin"])
    finally:
        slapd.start()
    assert auth.login("erin", PASSWORDS["erin"]) is not None


# --- 4. throttling and the audit trail ---------------------------------------


def audit_rows(instance: Instance) -> list[AuditEvent]:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return list(conn.execute(sqlalchemy.select(AuditEvent).order_by(AuditEvent.seq)))
    finally:
        engine.dispose()


def test_wrong_passwords_are_throttled_and_audited_without_passwords(
    ldap_gateway: Gateway, slapd: Slapd
) -> None:
    binds = slapd.binds(person("carol"))
    wrong = [f"wrong-{i}-Qx7" for i in range(50)]
    codes = [status(ldap_gateway, "carol", pw) for pw in wrong]
    assert codes == [401] * 10 + [429] * 40
    assert status(ldap_gateway, "carol", PASSWORDS["carol"]) == 429  # even the right one
    assert slapd.binds(person("carol")) - binds == 10  # throttled: the directory never asked
    rows = [r for r in audit_rows(ldap_gateway.instance) if "carol" in (r.reason or "")]
    failed = [r for r in rows if r.action == "LOGIN"]
    throttled = [r for r in rows if r.code == "login-throttled"]
    assert len(failed) == 10 and len(throttled) == 41
    assert all(r.status == 401 and r.client == "127.0.0.1" for r in failed)
    assert all(r.status == 429 and r.client == "127.0.0.1" for r in throttled)
    everything = repr(audit_rows(ldap_gateway.instance)) + ldap_gateway.log()
    for secret in [*wrong, *PASSWORDS.values(), SERVICE_PASSWORD]:
        assert secret not in everything


def test_failures_are_throttled_per_client_address(slapd: Slapd, tmp_path: Path) -> None:
    auth = authenticator(
        slapd,
        tmp_path,
        throttle={"max_failures_per_user": 0, "max_failures_per_address": 3, "window": 60},
    )
    for i in range(3):
        assert auth.login(f"guess-{i}", "pw", client="10.9.9.9") is None
    with pytest.raises(LoginThrottled):
        auth.login("alice", PASSWORDS["alice"], client="10.9.9.9")
    assert auth.login("alice", PASSWORDS["alice"], client="10.9.9.10") is not None


# --- 5. clindav ldap test -------------------------------------------------------


def ldap_cli(config: Path, user: str, password: str) -> tuple[int, str, str]:
    proc = run_cli(
        "ldap", "test", user, "--password-stdin", config=config, stdin=password + "\n", check=False
    )
    return proc.returncode, proc.stdout, proc.stderr


def with_ldap(instance: Instance, tmp_path: Path, **overrides: object) -> Path:
    """A copy of the instance's settings with ``auth.ldap`` keys replaced."""
    data = instance.settings()
    data["auth"]["ldap"].update(overrides)
    path = instance.folder / f"variant-{len(list(instance.folder.glob('variant-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_ldap_test_prints_dn_groups_and_policy_groups(ldap_instance: Instance) -> None:
    code, out, err = ldap_cli(ldap_instance.config, "bob", PASSWORDS["bob"])
    assert code == 0, err
    assert f"dn: {person('bob')}" in out
    direct = out.split("groups (direct):", 1)[1].split("groups (nested):", 1)[0]
    nested = out.split("groups (nested):", 1)[1]
    assert group("nurses") in direct and group("clinicians") in nested
    assert "policy groups: clinicians" in out and "disabled: no" in out
    assert PASSWORDS["bob"] not in out + err


def test_ldap_test_fails_clearly(ldap_instance: Instance, slapd: Slapd, tmp_path: Path) -> None:
    code, _out, err = ldap_cli(ldap_instance.config, "bob", "not bobs password")
    assert code == 1 and f"password refused for {person('bob')}" in err
    code, out, err = ldap_cli(ldap_instance.config, "dave", PASSWORDS["dave"])
    assert code == 1 and "disabled: yes" in out and "is disabled" in err
    down = with_ldap(ldap_instance, tmp_path, servers=[f"ldaps://127.0.0.1:{free_port()}"])
    code, _out, err = ldap_cli(down, "bob", PASSWORDS["bob"])
    assert code == 1 and "directory unreachable" in err
    write_certificates(tmp_path, prefix="other-")
    stranger = with_ldap(ldap_instance, tmp_path, ca_file=str(tmp_path / "other-ca.pem"))
    code, _out, err = ldap_cli(stranger, "bob", PASSWORDS["bob"])
    assert code == 1 and "certificate verify failed" in err
    misnamed = with_ldap(ldap_instance, tmp_path, servers=[f"ldaps://127.0.0.2:{slapd.ldaps_port}"])
    code, _out, err = ldap_cli(misnamed, "bob", PASSWORDS["bob"])
    assert code == 1 and "IP address mismatch" in err, err


def test_ldap_test_over_starttls(ldap_instance: Instance, tmp_path: Path, slapd: Slapd) -> None:
    starttls = with_ldap(ldap_instance, tmp_path, tls="starttls", servers=[slapd.url("ldap")])
    code, out, err = ldap_cli(starttls, "alice", PASSWORDS["alice"])
    assert code == 0, err
    assert "policy groups: clinicians" in out


# --- 6. settings ----------------------------------------------------------------


def test_check_config_refuses_plain_ldap_off_loopback(
    ldap_instance: Instance, tmp_path: Path
) -> None:
    remote = with_ldap(
        ldap_instance,
        tmp_path,
        tls="none",
        allow_plain_on_loopback=True,
        servers=["ldap://dc1.example.org"],
        ca_file=None,
    )
    proc = run_cli("check-config", config=remote, check=False)
    assert proc.returncode == 2
    assert f"{remote}: auth.ldap.tls:" in proc.stderr and "not loopback" in proc.stderr
