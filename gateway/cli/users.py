"""``clindav user``: the local user store (add, list, remove, passwd, set-groups,
disable, enable) and the app passwords of any account's devices (app-password)."""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway.app import load_checked_policy
from gateway.auth.apppasswords import DevicePassword
from gateway.auth.users import UserStore, policy_groups
from gateway.cli.actor import cli_request
from gateway.cli.context import CommandContext
from gateway.errors import ConfigError
from gateway.nextcloud import devices


def add(ctx: CommandContext, args: argparse.Namespace) -> int:
    password = _new_password(args)
    if password is None:
        return 2
    UserStore(ctx.sessions).add(args.name, password, args.group)
    print(f"added user {args.name} (groups: {', '.join(args.group)})")
    _warn_about_groups(ctx, args.group)
    return 0


def _new_password(args: argparse.Namespace) -> str | None:
    """From --password-stdin, else asked twice (no echo) on a terminal; None: error printed."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("clindav: error: no password on standard input", file=sys.stderr)
            return None
        return password
    if not sys.stdin.isatty():
        print(
            "clindav: error: no terminal to ask for the password on: use --password-stdin",
            file=sys.stderr,
        )
        return None
    password = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("The same password again: ") != password:
        print("clindav: error: the passwords differ; nothing was changed", file=sys.stderr)
        return None
    return password


def _warn_about_groups(ctx: CommandContext, groups: list[str]) -> None:
    """Groups that give nothing: not named by the policy, or local accounts under LDAP."""
    settings = ctx.settings
    try:
        named = policy_groups(load_checked_policy(settings))
    except ConfigError:
        named = set(groups)  # an invalid policy is check-config's to report, not ours
    if settings.auth.backend == "ldap":
        print(
            "warning: auth.backend is ldap: local accounts cannot log in until it is "
            "set back to local",
            file=sys.stderr,
        )
    unused = sorted(set(groups) - named)
    if unused:
        print(
            f"warning: the policy ({settings.policy}) names no group {', '.join(unused)}: "
            f"it gives this user nothing; its groups: {', '.join(sorted(named))}",
            file=sys.stderr,
        )


def list_users(ctx: CommandContext, args: argparse.Namespace) -> int:
    for name, groups, disabled in UserStore(ctx.sessions).list():
        print(f"{name}\t{','.join(groups)}" + ("\tdisabled" if disabled else ""))
    return 0


def passwd(ctx: CommandContext, args: argparse.Namespace) -> int:
    password = _new_password(args)
    if password is None:
        return 2
    UserStore(ctx.sessions).set_password(args.name, password)
    print(f"password of {args.name} changed")
    return 0


def set_groups(ctx: CommandContext, args: argparse.Namespace) -> int:
    UserStore(ctx.sessions).set_groups(args.name, args.group)
    print(f"groups of {args.name}: {', '.join(args.group)}")
    _warn_about_groups(ctx, args.group)
    return 0


def toggle(ctx: CommandContext, args: argparse.Namespace) -> int:
    """``user disable`` and ``user enable`` (``args.disabled`` says which)."""
    UserStore(ctx.sessions).set_disabled(args.name, args.disabled)
    print(f"{'disabled' if args.disabled else 'enabled'} user {args.name}")
    return 0


def remove(ctx: CommandContext, args: argparse.Namespace) -> int:
    UserStore(ctx.sessions).remove(args.name)
    print(f"removed user {args.name}")
    return 0


def app_password(ctx: CommandContext, args: argparse.Namespace) -> int:
    """``user app-password NAME``: issue one (printed once), ``--list`` or ``--revoke ID``."""
    services = ctx.services
    if args.list:
        for device in services.app_passwords.list(args.name):
            print("\t".join(_device_columns(device)))
        return 0
    request = cli_request("APP-PASSWORD", args.actor)
    if args.revoke is not None:
        devices.revoke(services, request, args.name, args.revoke)
        print(f"revoked app password {args.revoke} of {args.name}")
        return 0
    secret = devices.issue(services, request, args.name, args.device)
    print(f"app password for {args.name} ({args.device}): {secret}")
    print("It is shown only now. Sign the device in with the user name and this password.")
    return 0


def _device_columns(device: DevicePassword) -> tuple[str, ...]:
    """One line of ``--list``: number, connected, name, last used (UTC, or ``never``).

    Tab-separated, in this order for scripts: the last-used column came later,
    so it is appended after the name (a name holds no tab: it is printable).
    """
    used = "never" if device.last_used_at is None else f"{device.last_used_at:%Y-%m-%d %H:%M}"
    return (str(device.id), f"{device.created_at:%Y-%m-%d %H:%M}", device.label, used)
