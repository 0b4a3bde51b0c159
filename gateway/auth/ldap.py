"""LDAP and Active Directory accounts (``auth.backend: ldap``, docs/LDAP.md).

Contract: :class:`LdapAuthenticator` is an :class:`~gateway.auth.base.Authenticator`
(the template refuses empty credentials, caches successes for
``auth.ldap.cache_ttl``, throttles failures and delays them).  Its
:meth:`~LdapAuthenticator._login`:

1. refuses names with control characters (NUL included) or over 256
   characters without contacting the directory;
2. searches with the service account on a pooled connection:
   ``(&<user_filter>(<user_attribute>=<name>))`` under ``base_dn``, the name
   escaped per RFC 4515, so no name can widen the search;
3. binds as the entry's DN on its own short-lived connection to check the
   password; when no single entry matched it binds as a DN that does not
   exist, so an unknown name costs the same round trips as a wrong password;
4. only after a successful bind: refuses disabled accounts (AD
   ``userAccountControl`` ACCOUNTDISABLE, or ``disabled_filter``);
5. resolves groups, nested ones included, and maps them onto policy groups
   with ``group_map`` (by DN or by CN; unmapped groups grant nothing).

Errors: a wrong password, an unknown, ambiguous or disabled account return
``None`` (401) and are logged at info level with the DN and the reason, never
the password.  Anything else (no server answers, TLS or certificate failure,
timeout, the service account refused, an unexpected result code, more groups
than :data:`MAX_GROUPS`) raises :class:`~gateway.errors.ServiceUnavailable`
(503): clindav never falls back to anything weaker.  A later request tries
again, so service comes back without a restart.

Cached logins: the template's cache serves them without the directory.
With ``cached_logins_during_outage: false`` a cache hit also needs the
directory to have answered within :attr:`LdapAuthenticator.probe_interval`
seconds (a probe search otherwise), else ServiceUnavailable.

Threads: nothing about one user is kept on these objects between calls (the
Radicale mistake); each call works on locals.  Connections, failover, TLS and
the service-account pool are gateway/auth/ldapconn.py.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ldap3 import BASE, SUBTREE, Connection
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from gateway.auth.base import Authenticator, LoginThrottle, Principal
from gateway.auth.ldapconn import LdapConnections, close
from gateway.errors import ServiceUnavailable
from gateway.settings import LdapSettings

log = logging.getLogger("clindav.ldap")

T = TypeVar("T")
IN_CHAIN = "1.2.840.113556.1.4.1941"  # AD's LDAP_MATCHING_RULE_IN_CHAIN
ACCOUNTDISABLE = 0x2
MAX_GROUPS = 1000
MAX_NAME = 256
# Bind results that mean "these credentials do not log in" rather than "the
# directory is broken": inappropriateAuthentication, invalidCredentials,
# insufficientAccessRights, unwillingToPerform.
_REFUSED = {48, 49, 50, 53}


# --- filters and names ------------------------------------------------------


def user_filter(conf: LdapSettings, name: str) -> str:
    return f"(&{conf.user_filter}({conf.user_attribute}={escape_filter_chars(name)}))"


def member_filter(group_filter: str, attribute: str, values: Iterable[str]) -> str:
    """Groups (matching ``group_filter``) that list any of ``values`` in ``attribute``."""
    terms = "".join(f"({attribute}={escape_filter_chars(v)})" for v in values)
    return f"(&{group_filter}(|{terms}))"


def chain_filter(group_filter: str, dn: str) -> str:
    """AD: every group ``dn`` is in, directly or through nesting (server-side)."""
    return f"(&{group_filter}(member:{IN_CHAIN}:={escape_filter_chars(dn)}))"


def plausible_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and not any(ord(c) < 0x20 or c == "\x7f" for c in name)


def normalize_dn(dn: str) -> str:
    """A DN compared case-insensitively, spaces around separators ignored."""
    return ",".join(f"{a.lower()}={v.lower()}" for a, v, _ in parse_dn(dn, strip=True))


def common_name(dn: str) -> str | None:
    """The value of the DN's first RDN when that RDN is a CN."""
    attr, value, _ = parse_dn(dn, strip=True)[0]
    return value.casefold() if attr.lower() == "cn" else None


class GroupMap:
    """``group_map``: policy group -> directory groups named by DN or by CN.

    An entry containing ``=`` is a DN and matches that one group; any other
    entry is a CN and matches every group whose first RDN is ``cn=<entry>``,
    wherever it lives.  Both compare case-insensitively.
    """

    def __init__(self, mapping: dict[str, list[str]]) -> None:
        self._dns = {g: {normalize_dn(e) for e in es if "=" in e} for g, es in mapping.items()}
        self._cns = {
            g: {e.strip().casefold() for e in es if "=" not in e} for g, es in mapping.items()
        }

    def policy_groups(self, group_dns: Iterable[str]) -> frozenset[str]:
        dns = {normalize_dn(dn) for dn in group_dns}
        cns = {cn for dn in group_dns if (cn := common_name(dn)) is not None}
        return frozenset(g for g in self._dns if self._dns[g] & dns or self._cns[g] & cns)


def group_map_warnings(mapping: dict[str, list[str]], policy_groups: frozenset[str]) -> list[str]:
    """Entries that are valid but almost surely not meant (check-config, start-up).

    A DN inside a YAML flow list (``[cn=a,ou=groups,dc=example]``) is split at
    its commas into names that are each a valid DN (``ou=groups``), so the
    settings load and directory users silently get no rights.  A group's DN
    names its ``cn``; an entry with no ``cn=`` is such a piece.
    """
    warnings = []
    for group, entries in mapping.items():
        if group not in policy_groups:
            warnings.append(
                f"auth.ldap.group_map.{group}: the policy never names the group {group!r}, "
                "so mapping onto it grants nothing"
            )
        warnings.extend(
            f"auth.ldap.group_map.{group}: {entry!r} names no cn=, so it is no group's DN: "
            "was a DN split at its commas by a YAML [...] list? Quote each DN or put one per line"
            for entry in entries
            if "=" in entry and not any(a.lower() == "cn" for a, _v, _s in parse_dn(entry))
        )
    return warnings


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    name: str  # the directory's own spelling of user_attribute
    attributes: dict[str, list[str]]

    def values(self, attribute: str) -> list[str]:
        return _values(self.attributes, attribute)


def _values(attributes: dict[str, Any], attribute: str) -> list[str]:
    """An attribute's values as strings; names compare case-insensitively."""
    for key, value in attributes.items():
        if key.lower() == attribute.lower():
            return [value] if isinstance(value, str) else [str(v) for v in value]
    return []


@dataclass(frozen=True)
class GroupTree:
    direct: frozenset[str]
    nested: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.direct | self.nested


# --- the login steps -----------------------------------------------------


class LdapDirectory:
    """The steps of a directory login, shared by the authenticator and `clindav ldap test`."""

    def __init__(self, conf: LdapSettings, resolve: Callable[[Path], Path] = Path) -> None:
        self.conf = conf
        self.connections = LdapConnections(conf, resolve)
        self._groups = GroupMap(conf.group_map)
        # Bound when nobody matched: costs what a real wrong-password bind costs.
        self._absent_dn = f"cn=clindav-absent-{secrets.token_hex(8)},{conf.base_dn}"

    def run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` on a pooled service connection."""
        return self.connections.run(operation)

    def find_user(self, conn: Connection, name: str) -> tuple[DirectoryUser | None, str]:
        """The one entry for ``name``, or None and why."""
        attributes = [self.conf.user_attribute]
        if self.conf.group_source == "memberof" or self.conf.directory == "ad":
            attributes.append("memberOf")
        if self.conf.directory == "ad":
            attributes.append("userAccountControl")
        conn.search(
            self.conf.base_dn,
            user_filter(self.conf, name),
            SUBTREE,
            attributes=attributes,
            size_limit=2,
            time_limit=self.conf.timeout,
        )
        entries = _entries(conn, ok=(0, 4))
        if not entries:
            return None, "no such user"
        if len(entries) > 1:
            return None, "the name matches several entries (check user_filter)"
        dn, attrs = entries[0]
        canonical = _values(attrs, self.conf.user_attribute)
        return DirectoryUser(dn, canonical[0] if canonical else name, attrs), ""

    def check_password(self, dn: str | None, password: str) -> bool:
        """Bind as ``dn`` (or as a DN that does not exist) on a connection of its own."""
        if not password:
            return False  # an empty password is an anonymous bind that succeeds
        conn = self.connections.open(dn or self._absent_dn, password)
        try:
            bound = conn.bind(read_server_info=False)
            code = conn.result.get("result")
            description = conn.result.get("description")
        except LDAPException as exc:
            raise ServiceUnavailable(f"ldap: bind: {exc}") from None
        finally:
            close(conn)
        if bound:
            return dn is not None
        if code in _REFUSED:
            return False
        raise ServiceUnavailable(f"ldap: bind for {dn} answered {code} {description}")

    def disabled(self, conn: Connection, user: DirectoryUser) -> str | None:
        """Why the account is disabled, or None.  Unreadable state counts as disabled."""
        if self.conf.directory == "ad":
            flags = user.values("userAccountControl")
            if not flags or not flags[0].isdigit():
                return "userAccountControl unreadable"
            if int(flags[0]) & ACCOUNTDISABLE:
                return "userAccountControl ACCOUNTDISABLE"
        if self.conf.disabled_filter:
            # Asked as "is the account certainly NOT disabled?": if the service
            # account cannot read the attribute, the filter is Undefined and the
            # entry is not returned, so an ACL mistake refuses rather than admits.
            conn.search(user.dn, f"(!{self.conf.disabled_filter})", BASE, attributes=["1.1"])
            if not _entries(conn, ok=(0, 32)):
                return "matches disabled_filter"
        return None

    def groups(self, conn: Connection, user: DirectoryUser) -> GroupTree:
        conf = self.conf
        direct = set(user.values("memberOf")) if conf.group_source == "memberof" else set()
        if conf.group_source == "search":
            value = user.name if conf.member_attribute == "memberUid" else user.dn
            direct = self._search_groups(conn, [value], conf.member_attribute)
        if conf.directory == "ad" and conf.nested_depth > 0:
            every = self._group_dns(conn, chain_filter(conf.group_filter, user.dn))
            return GroupTree(frozenset(direct), frozenset(every - direct))
        if conf.member_attribute == "memberUid":
            return GroupTree(frozenset(direct), frozenset())  # posixGroups do not nest
        return GroupTree(frozenset(direct), frozenset(self._nested(conn, direct)))

    def _nested(self, conn: Connection, direct: set[str]) -> set[str]:
        """Groups containing ``direct`` groups, level by level, at most nested_depth deep."""
        seen = {normalize_dn(dn) for dn in direct}
        frontier, found = list(direct), set()
        for _level in range(self.conf.nested_depth):
            if not frontier:
                break
            parents = self._search_groups(conn, frontier, self.conf.member_attribute)
            frontier = [dn for dn in parents if normalize_dn(dn) not in seen]  # cycle guard
            seen.update(normalize_dn(dn) for dn in frontier)
            found.update(frontier)
            if len(seen) > MAX_GROUPS:
                raise ServiceUnavailable(f"ldap: more than {MAX_GROUPS} groups")
        return found

    def _search_groups(self, conn: Connection, values: list[str], attribute: str) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(values), 50):  # keeps each filter a sane size
            chunk = values[start : start + 50]
            found |= self._group_dns(conn, member_filter(self.conf.group_filter, attribute, chunk))
        return found

    def _group_dns(self, conn: Connection, search_filter: str) -> set[str]:
        conn.search(
            self.conf.group_base_dn or self.conf.base_dn,
            search_filter,
            SUBTREE,
            attributes=["1.1"],
            size_limit=MAX_GROUPS,
            time_limit=self.conf.timeout,
        )
        # A truncated list could drop a group a deny rule names: refuse instead.
        return {dn for dn, _attrs in _entries(conn, ok=(0,))}

    def policy_groups(self, groups: GroupTree) -> frozenset[str]:
        return self._groups.policy_groups(groups.all)

    def authenticate(
        self, name: str, password: str, throttle: LoginThrottle | None = None
    ) -> Principal | None:
        """Steps 2 to 5 of the module contract.

        With a ``throttle``, failures also count per entry found (its DN):
        every spelling the directory matches to one entry (case, fullwidth,
        characters its matching rules ignore) shares that entry's count, and
        an entry over the limit is refused (LoginThrottled) before its bind.
        """
        user, why = self.run(lambda conn: self.find_user(conn, name))
        dn = user.dn if user else None
        account = normalize_dn(dn) if dn else None
        if throttle is not None and account is not None:
            throttle.check_account(account)
        if not self.check_password(dn, password):
            log.info(
                "ldap: login refused for %r (%s): %s", name, dn or "-", why or "wrong password"
            )
            if throttle is not None and account is not None:
                throttle.failed_account(account)
            return None
        assert user is not None and account is not None  # the absent DN never binds
        if throttle is not None:
            throttle.succeeded_account(account)
        login = self.run(lambda conn: self._after_bind(conn, user))
        if login is None:
            return None
        log.debug("ldap: %s logged in as %s with groups %s", user.dn, user.name, sorted(login))
        return Principal(uid=user.name, groups=login)

    def account(self, name: str) -> Principal | None:
        """The enabled entry ``name`` with its groups, without a bind (an app password's)."""
        user, why = self.run(lambda conn: self.find_user(conn, name))
        if user is None:
            log.info("ldap: app password of %r refused: %s", name, why)
            return None
        groups = self.run(lambda conn: self._after_bind(conn, user))
        return None if groups is None else Principal(uid=user.name, groups=groups)

    def _after_bind(self, conn: Connection, user: DirectoryUser) -> frozenset[str] | None:
        reason = self.disabled(conn, user)
        if reason:
            log.info("ldap: login refused for %s: account disabled (%s)", user.dn, reason)
            return None
        return self.policy_groups(self.groups(conn, user))

    def reachable(self) -> bool:
        """Whether the service account can read ``base_dn`` right now."""

        def probe(conn: Connection) -> None:
            conn.search(self.conf.base_dn, "(objectClass=*)", BASE, attributes=["1.1"])
            _entries(conn, ok=(0,))

        try:
            self.run(probe)
        except ServiceUnavailable:
            return False
        return True


def _entries(conn: Connection, ok: tuple[int, ...]) -> list[tuple[str, dict[str, Any]]]:
    """The entries of the last search; a result code outside ``ok`` is a 503."""
    code = conn.result.get("result") if conn.result else None
    if code not in ok:
        raise ServiceUnavailable(f"ldap: search answered {code} {conn.result}")
    return [
        (r["dn"], dict(r.get("attributes") or {}))
        for r in conn.response or []
        if r.get("type") == "searchResEntry"
    ]


class LdapAuthenticator(Authenticator):
    """Directory accounts behind the Authenticator template (module contract)."""

    probe_interval = 5.0  # seconds between reachability probes for cached logins

    def __init__(self, conf: LdapSettings, resolve: Callable[[Path], Path] = Path) -> None:
        super().__init__()
        self.directory = LdapDirectory(conf, resolve)
        self.cache_ttl = conf.cache_ttl
        self.throttle = LoginThrottle.configured(conf.throttle)
        self._cached_during_outage = conf.cached_logins_during_outage
        self._health_lock = threading.Lock()
        self._health: tuple[float, bool] = (float("-inf"), True)

    def _login(self, user: str, password: str) -> Principal | None:
        if not plausible_name(user):
            log.info("ldap: login refused for %r: not a plausible user name", user[:64])
            return None
        return self._asked(
            "login", user, lambda: self.directory.authenticate(user, password, self.throttle)
        )

    def _principal_of(self, uid: str) -> Principal | None:
        """An app password's account: found with the service account, enabled, its groups."""
        if not plausible_name(uid):
            return None
        return self._asked("app password login", uid, lambda: self.directory.account(uid))

    def _asked(self, what: str, user: str, ask: Callable[[], Principal | None]) -> Principal | None:
        """The directory's answer to ``ask``; whether it could be reached is noted either way."""
        try:
            principal = ask()
        except ServiceUnavailable as exc:
            log.warning("ldap: %s for %r failed: %s", what, user, exc.detail)
            self._note_health(False)
            raise
        self._note_health(True)
        return principal

    def _on_cache_hit(self, principal: Principal) -> None:
        if self._cached_during_outage:
            return
        with self._health_lock:
            checked, up = self._health
            if time.monotonic() - checked >= self.probe_interval:
                up = self.directory.reachable()
                self._health = (time.monotonic(), up)
        if not up:
            raise ServiceUnavailable(
                "ldap: directory unreachable; cached logins refused "
                "(auth.ldap.cached_logins_during_outage: false)"
            )

    def _note_health(self, up: bool) -> None:
        with self._health_lock:
            self._health = (time.monotonic(), up)
