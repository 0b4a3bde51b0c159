"""Acceptance (issue 21): the command line imports only what a command needs.

``clindav --help`` (and a subcommand's) loads the light option specs and no
database, crypto, WebDAV, image, directory or web library, nor the module of
any command.  ``clindav audit tail --no-follow`` loads the settings, the
database layer and the audit log: no WebDAV server, image library, directory
client, web framework, cryptography, Alembic (the database is at the newest
schema) or pipeline stage.  How fast they start is measured by
``python -m bench --only cli`` (docs/BENCHMARKS.md), not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import COMMANDS
from tests.conftest import REPO, run_cli

# Runs the real entry point, then lists what it imported (``importlib`` imports
# included, which ``-X importtime`` does not show).
RUN_AND_LIST = """
import json, runpy, sys
sys.argv = ["clindav", *json.loads(sys.argv[1])]
try:
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""

HELP_NEEDS_NONE = (
    "sqlalchemy",
    "alembic",
    "pydantic",
    "yaml",
    "cryptography",
    "wsgidav",
    "cheroot",
    "PIL",
    "ldap3",
    "flask",
    "redis",
    "prometheus_client",
    "plugins",
)
# The gateway modules outside gateway/cli that the parser may load.
LIGHT_GATEWAY = {"gateway", "gateway.errors", "gateway.records", "gateway.records.consent_terms"}
READING_NEEDS_NONE = (
    "wsgidav",
    "cheroot",
    "PIL",
    "ldap3",
    "flask",
    "cryptography",
    "alembic",
    "redis",
    "prometheus_client",
    "plugins",
)


def run_listing(*argv: str) -> tuple[str, set[str]]:
    """``clindav ARGV`` in a fresh interpreter: its standard output and every module
    it imported."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, json.dumps(argv)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), result.stderr[-3000:]
    return result.stdout, set(report["modules"])


def roots(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["trash", "purge", "--help"], ["consent", "add", "--help"], ["serve", "--help"]],
    ids=" ".join,
)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    out, modules = run_listing(*argv)
    assert out.startswith("usage: clindav")
    assert not roots(modules, HELP_NEEDS_NONE), roots(modules, HELP_NEEDS_NONE)
    gateway = {m for m in modules if m.split(".")[0] == "gateway"}
    assert {m for m in gateway - LIGHT_GATEWAY if not m.startswith("gateway.cli")} == set()
    # Nor the module that does any command's work.
    assert modules & {module for _spec, module in COMMANDS} == set()


def test_subcommand_help_lists_its_full_options() -> None:
    out, _modules = run_listing("consent", "add", "--help")
    for option in ("--patient", "--scope {record,share,teaching}", "--given-by", "--config"):
        assert option in out


def test_audit_tail_imports_only_what_reading_needs(tmp_path: Path) -> None:
    run_cli("init", str(tmp_path / "instance"))
    config = tmp_path / "instance" / "clindav.yaml"
    run_cli(
        "consent", "add", "--patient", "943 476 5919", "--scope", "record", "--given-by",
        "patient", "--method", "verbal", "--recorded-by", "dr-jones", config=config,
    )  # fmt: skip
    out, modules = run_listing("audit", "tail", "--no-follow", "--config", str(config))
    assert "CONSENT-ADD - -> 200 consent-recorded" in out
    assert {"gateway.cli.audit", "gateway.records.audit", "sqlalchemy"} <= modules
    assert not roots(modules, READING_NEEDS_NONE), roots(modules, READING_NEEDS_NONE)
    serving = ("gateway.dav", "gateway.app", "gateway.server", "gateway.pipeline", "gateway.auth")
    assert not {m for m in modules if m.startswith(serving)}
