"""The ``clindav`` command table: each spec names a function of the one signature in its
group's module, the context builds no more than a spec declares, and the README lists
every command.  (What the parser imports: tests/integration/test_cli_imports.py.)"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from pathlib import Path

import pytest

from gateway.cli.context import CommandContext
from gateway.cli.main import COMMANDS
from gateway.cli.spec import Command, Group, Needs
from tests.conftest import REPO, run_cli


def leaves() -> list[tuple[list[str], Command, str]]:
    """Every runnable command: its words, its spec and its module."""
    found: list[tuple[list[str], Command, str]] = []
    for spec, module in COMMANDS:
        if isinstance(spec, Group):
            found += [([spec.name, action.name], action, module) for action in spec.actions]
        else:
            found.append(([spec.name], spec, module))
    return found


def test_every_command_runs_a_function_of_the_one_signature() -> None:
    for words, spec, module in leaves():
        handler = getattr(importlib.import_module(module), spec.run, None)
        assert handler is not None, f"clindav {' '.join(words)}: no {module}.{spec.run}"
        params = list(inspect.signature(handler).parameters)
        assert params == ["ctx", "args"], f"{module}.{spec.run}{params}"


def test_a_command_gets_no_more_than_it_declares(tmp_path: Path) -> None:
    spec = Command("tail", "t", run="tail", needs=Needs.DATABASE)
    ctx = CommandContext(spec, argparse.Namespace(config=tmp_path / "clindav.yaml"), "audit tail")
    with pytest.raises(RuntimeError, match="declares needs=DATABASE but asked for SERVICES"):
        _ = ctx.services


def test_the_readme_lists_every_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    missing = [
        " ".join(words)
        for words, _spec, _module in leaves()
        if not re.search(rf"`(clindav )?{re.escape(' '.join(words))}\b", table)
    ]
    assert not missing, f"README's command table lacks: {missing}"


def test_every_command_help_says_what_it_does() -> None:
    """`clindav X --help` opens with what X does (its own description, else its line in the
    command list), not with the bare options."""
    for words, spec, _module in leaves():
        result = run_cli(*words, "--help")
        text = "".join(result.stdout.split()).lower()  # argparse wraps lines, at hyphens too
        described = "".join((spec.description or spec.help).split()).lower()
        assert described in text, f"clindav {' '.join(words)} --help:\n{result.stdout}"
