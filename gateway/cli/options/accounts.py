"""Options of the commands for accounts and keys: ``user``, ``keys`` and ``ldap``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.spec import Command, Group, Needs, actor_arg, password_arg

_NEW_PASSWORD = (
    "read the password from the first line of standard input "
    "(default: prompt twice on the terminal)"
)


def _name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")


def _groups(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        required=True,
        help="policy group, e.g. clinicians (repeat for several)",
    )


def _user_add(parser: argparse.ArgumentParser) -> None:
    _name(parser)
    _groups(parser)
    password_arg(parser, _NEW_PASSWORD)


def _user_passwd(parser: argparse.ArgumentParser) -> None:
    _name(parser)
    password_arg(parser, _NEW_PASSWORD)


def _user_set_groups(parser: argparse.ArgumentParser) -> None:
    _name(parser)
    _groups(parser)


def _user_app_password(parser: argparse.ArgumentParser) -> None:
    _name(parser)
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--device", default="set up by hand", help="what the device is, e.g. 'ward phone 3'"
    )
    what.add_argument(
        "--list",
        action="store_true",
        help="list the user's app passwords, one a line: number, connected, device, "
        "last used (UTC, or never), tab-separated",
    )
    what.add_argument("--revoke", type=int, metavar="ID", help="revoke app password ID")
    actor_arg(parser)


USER = Group(
    "user",
    "manage the local user store",
    (
        Command(
            "add",
            "add a user (password prompted on a terminal, or --password-stdin)",
            run="add",
            needs=Needs.DATABASE,
            arguments=_user_add,
        ),
        Command(
            "list",
            "list users, their groups and disabled accounts",
            run="list_users",
            needs=Needs.DATABASE,
        ),
        Command("remove", "remove a user", run="remove", needs=Needs.DATABASE, arguments=_name),
        Command(
            "passwd",
            "set a user's password",
            run="passwd",
            needs=Needs.DATABASE,
            arguments=_user_passwd,
        ),
        Command(
            "set-groups",
            "replace a user's groups",
            run="set_groups",
            needs=Needs.DATABASE,
            arguments=_user_set_groups,
        ),
        Command(
            "app-password",
            "make a device's app password for the Nextcloud apps (or --list, --revoke ID)",
            run="app_password",
            needs=Needs.SERVICES,
            arguments=_user_app_password,
            description="Prints the new app password once; the device signs in with the "
            "user's name and it (docs/NEXTCLOUD-APPS.md). Works for local and LDAP accounts; "
            "issuing and revoking are audited with the acting user (--as).",
        ),
        *(
            Command(
                action,
                text,
                run="toggle",
                needs=Needs.DATABASE,
                arguments=_name,
                defaults={"disabled": disabled},
            )
            for action, text, disabled in (
                ("disable", "the user cannot log in (account and history kept)", True),
                ("enable", "let a disabled user log in again", False),
            )
        ),
    ),
)


def _export_audit_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="new file to write")


KEYS = Group(
    "keys",
    "master keys: status and rotation",
    (
        Command(
            "status",
            "which master key ids are loaded and in use",
            run="status",
            needs=Needs.DATABASE,
        ),
        Command(
            "rotate",
            "add a new master key and re-wrap every key row (no file is rewritten)",
            run="rotate",
            needs=Needs.DATABASE,
            description="Resumable: run it again after an interruption and it finishes the "
            "re-wrapping. Running gateways notice the new key file on their next write. "
            "Old keys stay in the file until `clindav keys retire`.",
        ),
        Command(
            "retire",
            "drop master keys that no key row uses from the key file",
            run="retire",
            needs=Needs.DATABASE,
        ),
        Command(
            "export-audit-key",
            "write the audit chain key alone to a new file (mode 0600) for an auditor",
            run="export_audit_key",
            needs=Needs.DATABASE,
            arguments=_export_audit_key,
            description="The file lets `clindav audit verify --audit-key FILE` check the chain "
            "without the master key; it decrypts nothing (docs/AUDIT.md).",
        ),
    ),
)


def _ldap_test(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", help="the name a user types into their WebDAV client")
    password_arg(parser, "read the password from the first line of standard input (else: prompt)")


LDAP = Group(
    "ldap",
    "check the LDAP / Active Directory settings",
    (
        Command(
            "test",
            "bind, search and resolve groups for one user, without serving",
            run="test",
            needs=Needs.SETTINGS,
            arguments=_ldap_test,
            description="Run the steps of a directory login for USER and print the DN, the "
            "groups (nested ones included), the policy groups and the disabled state.",
        ),
    ),
)
