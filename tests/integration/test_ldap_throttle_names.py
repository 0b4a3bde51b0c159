"""The LDAP login throttle counts an account once, however its name is spelt.

The directory matches ``alice``, ``ALICE`` and their fullwidth forms to one
entry (its matching rules fold case and compatibility forms, and some
characters beyond what NFKC folds, such as ``İ``).  The throttle counted the
name as typed, so each spelling got fresh tries: 18 binds with a limit of 3,
enough to push an account past the directory's own lockout.  It now counts
the normalised name (NFKC, case-folded), refused before any directory
traffic, and the resolved DN, refused before the bind.  Runs against a real
slapd (tests/ldap_server.py) whose log counts the searches and binds it saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.conftest import Gateway, Instance, make_instance, start_in_process
from tests.ldap_server import PASSWORDS, Slapd, ldap_settings, person, running_slapd

LIMIT = 3


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def ldap_gateway(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    inst: Instance = make_instance(tmp_path_factory.mktemp("ldap-throttle"))
    data = inst.settings()
    conf = ldap_settings(
        slapd,
        inst.folder / "ldap-bind.secret",
        # Every request comes from 127.0.0.1: only the per-user limit may bite.
        throttle={"max_failures_per_user": LIMIT, "max_failures_per_address": 1000, "window": 300},
    )
    data["auth"] = {"backend": "ldap", "ldap": conf}
    inst.write_settings(data)
    gw = start_in_process(inst)
    yield gw
    gw.stop()


def status(gw: Gateway, user: str, password: str) -> int:
    with requests.Session() as s:
        s.trust_env = False
        # Basic credentials are UTF-8 (requests would encode str as Latin-1).
        s.auth = (user.encode(), password.encode())
        return s.get(gw.url + "/documents/", timeout=30).status_code


def test_case_and_fullwidth_spellings_share_one_count(ldap_gateway: Gateway, slapd: Slapd) -> None:
    spellings = ["alice", "ALICE", "Alice", "ａｌｉｃｅ", "ＡＬＩＣＥ", "aLiCe "]  # noqa: RUF001
    binds, searches = slapd.binds(person("alice")), slapd.searches("(uid=")
    codes = [status(ldap_gateway, name, f"wrong-{i}") for name in spellings for i in range(LIMIT)]
    assert codes == [401] * LIMIT + [429] * (len(spellings) - 1) * LIMIT
    assert slapd.binds(person("alice")) - binds == LIMIT
    # Refused by the normalised name: the directory was not even searched.
    assert slapd.searches("(uid=") - searches == LIMIT
    assert status(ldap_gateway, "ａｌｉｃｅ", PASSWORDS["alice"]) == 429  # noqa: RUF001


def test_a_spelling_only_the_directory_folds_is_throttled_by_its_dn(
    ldap_gateway: Gateway, slapd: Slapd
) -> None:
    # slapd matches "erİn" (capital I with dot) to uid=erin; NFKC with case
    # folding does not make it "erin", so only the resolved DN connects them.
    # Logged in (403: erin is in no group the policy knows), not 401.
    assert status(ldap_gateway, "erİn", PASSWORDS["erin"]) == 403
    binds = slapd.binds(person("erin"))
    assert [status(ldap_gateway, "erin", f"wrong-{i}") for i in range(LIMIT)] == [401] * LIMIT
    assert status(ldap_gateway, "erİn", "wrong-again") == 429
    assert status(ldap_gateway, "ERİN", PASSWORDS["erin"]) == 429
    assert slapd.binds(person("erin")) - binds == LIMIT
