"""Issue 7: clindav with ``auth.backend: ldap`` against a real slapd, beside local auth.

slapd is the test suite's fixture (``tests/ldap_server.py``: back-mdb with the
memberOf overlay, LDAPS with a generated CA, the example directory of
``deploy/slapd-seed.ldif`` and the test users' passwords).  Two fresh clindav
instances run the same load, interleaved:

* ``clindav-local``: local users (scrypt), user ``bench``;
* ``clindav-ldap``: ``auth.backend: ldap`` over LDAPS to that slapd, the
  fixture's settings (service account, memberOf groups with nesting, the
  ``disabled_filter``), user ``alice`` (clinicians), login cache on
  (``auth.ldap.cache_ttl: 60``, the default).

Phase 1 (cache on): PUT and GET of the 4 MB photo at C=1 and C=8, and
PROPFIND Depth 0 of a share root (a request that costs little besides its
login).  Phase 2: the LDAP instance restarted with ``auth.ldap.cache_ttl: 0``,
so every request is a full directory login (search, bind as the user on a
new LDAPS connection, disabled check, group search); PROPFIND Depth 0 at C=1
and C=8 (one user, like Explorer's several connections), and at C=8 spread
over five directory users.  slapd's stats log gives the binds per request.
"""

from __future__ import annotations

import base64
import importlib.util
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import compare, loads, peers, report
from bench.client import DavClient
from bench.loads import PhaseSpec, Scale

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "ldap_server.py"
SHARE_ROOT = "/documents/"
LDAP_USER = "alice"
# Directory users who may read /documents/ (clinicians, nested clinicians, admins).
SPREAD_USERS = ("alice", "bob", "frank", "gina", "erin")
LOCAL, LDAP, NOCACHE = "clindav-local", "clindav-ldap", "clindav-ldap-nocache"
RATIO_TARGET = 0.90
SLAPD_HINT = "slapd is not installed; to include it run: sudo apt-get install slapd ldap-utils"


class Unavailable(Exception):
    """slapd (or the fixture's other needs) is missing here; the message says what."""


def load_fixture() -> ModuleType:
    """``tests/ldap_server.py`` as a module (tests/ is not a package)."""
    if not (shutil.which("slapd") or Path("/usr/sbin/slapd").exists()):
        raise Unavailable(SLAPD_HINT)
    if not (shutil.which("ldapadd") or Path("/usr/bin/ldapadd").exists()):
        raise Unavailable(SLAPD_HINT)
    spec = importlib.util.spec_from_file_location("clindav_bench_ldap_server", FIXTURE)
    if spec is None or spec.loader is None:
        raise Unavailable(f"cannot load {FIXTURE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:  # it imports pytest: a dev dependency
        del sys.modules[spec.name]
        raise Unavailable(f"{FIXTURE.name} needs {exc.name}: pip install -e '.[dev]'") from None
    return module


def propfind_root(c: DavClient, _k: int, _i: int) -> Any:
    """PROPFIND Depth 0 (allprop) of a share root: little work besides the login."""
    return c.request(
        "PROPFIND",
        SHARE_ROOT,
        body=loads.ALLPROP,
        headers={**loads.PROPFIND_HEADERS, "Depth": "0"},
    )


def as_users(credentials: list[tuple[str, str]], fn: loads.RequestFn) -> loads.RequestFn:
    """``fn`` with client k logging in as ``credentials[k % n]`` (several users at once)."""
    tokens = [
        "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        for user, password in credentials
    ]

    def wrapped(c: DavClient, k: int, i: int) -> Any:
        c.headers["Authorization"] = tokens[k % len(tokens)]
        return fn(c, k, i)

    return wrapped


def transfer_specs(scale: Scale, photo: bytes, rep: int) -> list[PhaseSpec]:
    """PUT and GET of the photo at C=1 and C=8, as in the main loads."""
    return [*loads.put_specs(scale, photo, 2000 + rep), *loads.get_specs(scale)]


def login_specs(scale: Scale) -> list[PhaseSpec]:
    return [
        PhaseSpec("propfind_d0_c1", 1, scale.login_c1, propfind_root, (207,)),
        PhaseSpec("propfind_d0_c8", 8, scale.login_c8, propfind_root, (207,)),
    ]


def ldap_comparison(work: Path, photo: bytes, scale: Scale, reps: int) -> dict[str, Any]:
    """The whole issue-7 comparison; ``{"unavailable": why}`` when slapd cannot run."""
    try:
        fixture = load_fixture()
    except Unavailable as exc:
        print(f"[bench] skipping LDAP comparison: {exc}", flush=True)
        return {"unavailable": str(exc)}
    started = time.monotonic()
    try:
        slapd = fixture.start_slapd(work / "slapd")
    except BaseException as exc:  # the fixture fails with AssertionError or pytest's Failed
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        print(f"[bench] skipping LDAP comparison: slapd did not start: {exc}", flush=True)
        return {"unavailable": f"slapd did not start: {type(exc).__name__}: {exc}"[:2000]}
    running: list[peers.Peer] = []
    try:
        return _compare(fixture, slapd, work, photo, scale, reps, running, started)
    finally:
        for peer in running:
            peer.stop()
        slapd.stop()


def _compare(
    fixture: ModuleType,
    slapd: Any,
    work: Path,
    photo: bytes,
    scale: Scale,
    reps: int,
    running: list[peers.Peer],
    started: float,
) -> dict[str, Any]:
    local_config = peers.new_instance(work, LOCAL)
    ldap_config = peers.new_instance(work, LDAP)
    conf = fixture.ldap_settings(slapd, ldap_config.parent / "ldap-bind.secret", cache_ttl=60)
    peers.update_settings(ldap_config, {"auth": {"backend": "ldap", "ldap": conf}})
    credentials = {u: fixture.PASSWORDS[u] for u in SPREAD_USERS}
    local, ldap = peers.start_many(
        [
            (local_config, LOCAL, (peers.USER, peers.PASSWORD)),
            (ldap_config, LDAP, (LDAP_USER, credentials[LDAP_USER])),
        ]
    )
    running += [local, ldap]
    for peer in (local, ldap):
        loads.prepare_photos(peer, photo, loads.MAX_CLIENTS)
        loads.warm_up(peer, photo)
    print("[bench] LDAP comparison, login cache on", flush=True)
    raw = compare.interleaved(
        [local, ldap],
        lambda rep: transfer_specs(scale, photo, rep) + login_specs(scale),
        reps,
    )

    # Phase 2: no login cache, every request is a full directory login.
    ldap.stop()
    running.remove(ldap)
    peers.update_settings(ldap_config, {"auth": {"ldap": {"cache_ttl": 0}}})
    nocache = peers.start_clindav(ldap_config, tag="-ldap-nocache", name=NOCACHE, auth=ldap.auth)
    running.append(nocache)
    warm = DavClient(nocache.url, nocache.auth)
    propfind_root(warm, 0, 0)  # warm-up (connection pool, imports)
    warm.close()
    print("[bench] LDAP comparison, auth.ldap.cache_ttl: 0", flush=True)
    user_dns = {u: fixture.person(u) for u in SPREAD_USERS}
    binds_before = {u: slapd.binds(dn) for u, dn in user_dns.items()}
    raw_nocache = compare.interleaved([local, nocache], lambda _rep: login_specs(scale), reps)
    alice_binds = slapd.binds(user_dns[LDAP_USER]) - binds_before[LDAP_USER]
    spread = PhaseSpec(
        "propfind_d0_c8_5users",
        8,
        scale.login_c8,
        as_users(list(credentials.items()), propfind_root),
        (207,),
    )
    runs_spread = []
    for rep in range(reps):
        run = loads.run_record(loads.measure(nocache, spread), rep)
        runs_spread.append(run)
        compare.progress(rep, spread.name, nocache.name, run)
    raw_nocache[spread.name] = {NOCACHE: runs_spread}
    all_binds = sum(slapd.binds(dn) - binds_before[u] for u, dn in user_dns.items())
    return _summarise(raw, raw_nocache, conf, alice_binds, all_binds, time.monotonic() - started)


def _requests(raw: compare.Raw, peer: str, names: tuple[str, ...]) -> int:
    return sum(r["requests"] for n in names for r in raw.get(n, {}).get(peer, []))


def _summarise(
    raw: compare.Raw,
    raw_nocache: compare.Raw,
    conf: dict[str, Any],
    alice_binds: int,
    all_binds: int,
    seconds: float,
) -> dict[str, Any]:
    ratios = {
        load: compare.ratio_summary(raw, load, LDAP, LOCAL, report.HEADLINE.get(load, "req_s"))
        for load in raw
    }
    ratios_nocache = {
        load: compare.ratio_summary(raw_nocache, load, NOCACHE, LOCAL, "req_s")
        for load in ("propfind_d0_c1", "propfind_d0_c8")
    }
    summary_nocache = report.summarise_loads(raw_nocache)
    logins = {}
    for load, by_peer in summary_nocache.items():
        fig = by_peer.get(NOCACHE, {})
        logins[load] = {"logins_s": fig.get("req_s"), "p50_ms": fig.get("p50_ms")}
    one_user = _requests(raw_nocache, NOCACHE, ("propfind_d0_c1", "propfind_d0_c8"))
    spread_requests = _requests(raw_nocache, NOCACHE, ("propfind_d0_c8_5users",))
    targets = [
        report.target_row(
            f"issue 7: {load} MB/s, LDAP / local auth (login cache on)",
            ratios[load]["median"],
            f">= {RATIO_TARGET}",
            ratios[load]["median"] is not None and ratios[load]["median"] >= RATIO_TARGET,
            _spread_note(ratios[load]),
        )
        for load in ("put_4mb_c1", "put_4mb_c8", "get_4mb_c1", "get_4mb_c8")
    ]
    shown = {k: v for k, v in conf.items() if "password" not in k}
    return {
        "users": {LOCAL: peers.USER, LDAP: LDAP_USER, "spread": list(SPREAD_USERS)},
        "settings": shown,
        "raw": raw,
        "summary": report.summarise_loads(raw),
        "ratios": ratios,
        "raw_nocache": raw_nocache,
        "summary_nocache": summary_nocache,
        "ratios_nocache": ratios_nocache,
        "logins": logins,
        "binds": {
            "one_user_requests": one_user,
            "one_user_binds": alice_binds,
            "binds_per_request": alice_binds / one_user if one_user else None,
            "all_requests": one_user + spread_requests,
            "all_binds": all_binds,
        },
        "targets": targets,
        "errors": compare.errors_in(raw) + compare.errors_in(raw_nocache),
        "duration_s": seconds,
    }


def _spread_note(ratio: dict[str, Any]) -> str:
    low, high = ratio.get("min"), ratio.get("max")
    if low is None or high is None:
        return ""
    return f"per-repetition {low:.2f}-{high:.2f}"


def login_cost_ms(result: dict[str, Any]) -> float | None:
    """Median latency added by a full directory login: p50 without cache minus with (C=1)."""
    with_cache = result.get("summary", {}).get("propfind_d0_c1", {}).get(LDAP, {}).get("p50_ms")
    without = result.get("logins", {}).get("propfind_d0_c1", {}).get("p50_ms")
    if with_cache is None or without is None:
        return None
    return without - with_cache
