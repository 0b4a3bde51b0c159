"""What a ``clindav`` command is to the parser: its name, help, arguments and needs.

Every run builds the whole parser from these specs (``--help`` lists every
command), so this module and the option modules that use it import nothing
beyond the standard library and :mod:`gateway`'s version: the module that does
a command's work is imported only when that command runs (gateway/cli/main.py).

A command's work is one function in its group's module,
``def NAME(ctx: CommandContext, args: argparse.Namespace) -> int`` (the exit
status); :class:`Needs` declares what of the instance the context may build
for it (gateway/cli/context.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import getpass
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.records.consent_terms import parse_day

DEFAULT_INSTANCE = Path("clindav-data")
DEFAULT_CONFIG = DEFAULT_INSTANCE / "clindav.yaml"

Arguments = Callable[[argparse.ArgumentParser], None]


class Needs(enum.IntEnum):
    """What a command may ask of the instance, each level including the ones below."""

    NOTHING = 0  # no settings file (init)
    SETTINGS = 1  # the settings file, validated
    DATABASE = 2  # the database, its schema checked; no master key, no shares
    SERVICES = 3  # the running services, as `clindav serve` builds them


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a command that takes nothing but ``--config``."""


@dataclass(frozen=True)
class Command:
    """A runnable command: ``clindav NAME``, or ``clindav GROUP NAME`` inside a :class:`Group`."""

    name: str
    help: str
    run: str  # the function that does the work, in the group's module
    needs: Needs
    arguments: Arguments = no_arguments
    description: str | None = None
    config: bool = True  # takes --config (every command but init)
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """``clindav NAME ACTION``: commands that share a subject and a module."""

    name: str
    help: str
    actions: tuple[Command, ...]


def config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"settings file (default: {DEFAULT_CONFIG})",
    )


def actor_arg(
    parser: argparse.ArgumentParser,
    *,
    explained: bool = True,
    meaning: str = "acting user for the audit trail",
) -> None:
    """``--as``: the acting user an admin command records in the audit trail."""
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        default=getpass.getuser(),
        help=f"{meaning} (default: %(default)s)" if explained else None,
    )


def password_arg(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--password-stdin", action="store_true", help=help)


def json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def scheme_arg(parser: argparse.ArgumentParser) -> None:
    """``--scheme``: every command that takes a patient id reads it alike."""
    parser.add_argument(
        "--scheme", default="nhs-number", help="patient id scheme (default nhs-number)"
    )


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def date(text: str) -> dt.date:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def when(text: str) -> dt.datetime:
    """An ISO date or time; without a zone, UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
