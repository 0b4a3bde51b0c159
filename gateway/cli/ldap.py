"""``clindav ldap test USER``: check the LDAP settings without starting the server.

It runs the same steps as a login (gateway/auth/ldap.py) and prints each
result: the service bind and search, the user's DN, the password check, the
disabled state, the directory groups (direct and nested) and the policy
groups they map to.  Exit status: 0 when USER could log in, 1 when the login
would be refused or the directory cannot be reached (a ``clindav: error:``
line says which), 2 for invalid settings.  The password is read from the
first line of standard input (``--password-stdin``) or asked for; it is
never printed.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway.auth.ldap import LdapDirectory, plausible_name, user_filter
from gateway.cli.context import CommandContext
from gateway.errors import ConfigError, ServiceUnavailable


def test(ctx: CommandContext, args: argparse.Namespace) -> int:
    settings = ctx.settings
    conf = settings.auth.ldap
    if conf is None:
        raise ConfigError.single(str(args.config or "clindav.yaml"), "auth.ldap", "not set")
    password = _read_password(args)
    if not password:
        print("clindav: error: no password given", file=sys.stderr)
        return 2
    print(f"servers: {', '.join(conf.servers)} (tls: {conf.tls})")
    try:
        return _report(LdapDirectory(conf, settings.resolve), args.user, password)
    except ServiceUnavailable as exc:
        print(f"clindav: error: directory unreachable or failing: {exc.detail}", file=sys.stderr)
        return 1


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass(f"password for {args.user}: ")


def _fail(message: str) -> int:
    print(f"clindav: error: {message}", file=sys.stderr)
    return 1


def _report(directory: LdapDirectory, name: str, password: str) -> int:
    conf = directory.conf
    if not plausible_name(name):
        return _fail(f"{name[:64]!r} is not a plausible user name (control characters or too long)")
    user, why = directory.run(lambda conn: directory.find_user(conn, name))
    print(f"service bind: ok ({conf.bind_dn or 'anonymous'})")
    print(f"search: {user_filter(conf, name)} under {conf.base_dn}")
    if user is None:
        return _fail(f"{name!r}: {why}")
    print(f"dn: {user.dn}")
    print(f"name: {user.name}")
    if not directory.check_password(user.dn, password):
        return _fail(f"password refused for {user.dn}")
    print("password: ok")
    disabled, groups = directory.run(
        lambda conn: (directory.disabled(conn, user), directory.groups(conn, user))
    )
    print(f"disabled: {'yes (' + disabled + ')' if disabled else 'no'}")
    print("groups (direct):")
    for dn in sorted(groups.direct, key=str.lower):
        print(f"  {dn}")
    print("groups (nested):")
    for dn in sorted(groups.nested, key=str.lower):
        print(f"  {dn}")
    policy = sorted(directory.policy_groups(groups))
    print(f"policy groups: {', '.join(policy) if policy else '(none: every share answers 403)'}")
    if disabled:
        return _fail(f"{user.dn} is disabled: the gateway refuses it")
    return 0
