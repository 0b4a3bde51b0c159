"""The policy engine: first match wins, default deny, globs, validation of stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.auth.base import Principal
from gateway.errors import ConfigError
from gateway.policy import Check, load_policy, policy_schema
from gateway.stages import StageRegistry
from policies import shipped_policy

SHARES = ["clinical", "referrals", "teaching", "documents", "inbox"]
CLINICIAN = Principal("alice", frozenset({"clinicians"}))
INTIMATE = Principal("ivy", frozenset({"clinicians", "intimate-access"}))
AUDITOR = Principal("audrey", frozenset({"auditors"}))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_shipped_schema_is_current() -> None:
    shipped = json.loads((shipped_policy().parent / "schema.json").read_text())
    assert shipped == json.loads(json.dumps(policy_schema(), sort_keys=True))


def test_default_policy_encodes_groups() -> None:
    policy = load_policy(shipped_policy(), StageRegistry.default(), SHARES)
    read = Check("clinical", "/9434765919/a.jpg", "GET", "read")
    assert policy.decide(CLINICIAN, read).allowed
    assert not policy.decide(AUDITOR, read).allowed
    intimate = Check("clinical", "/9434765919/intimate/a.jpg", "GET", "read")
    assert not policy.decide(CLINICIAN, intimate).allowed
    assert policy.decide(INTIMATE, intimate).allowed
    assert policy.decide(CLINICIAN, read).pipeline.stages[0].name == "filetype"


def test_first_match_wins_and_default_deny(tmp_path: Path) -> None:
    policy = load_policy(
        write(
            tmp_path,
            """
version: 1
rules:
  - {name: deny-x, share: documents, path: "x/**", groups: ["*"], methods: [read], effect: deny}
  - {name: allow-all, share: documents, groups: [clinicians], methods: [read, PUT]}
""",
        ),
        StageRegistry.default(),
        SHARES,
    )
    assert policy.decide(CLINICIAN, Check("documents", "/x/y", "GET", "read")).rule == "deny-x"
    assert policy.decide(CLINICIAN, Check("documents", "/y", "GET", "read")).allowed
    assert policy.decide(CLINICIAN, Check("documents", "/y", "PUT", "write")).allowed
    assert not policy.decide(CLINICIAN, Check("documents", "/y", "MKCOL", "write")).allowed
    denied = policy.decide(AUDITOR, Check("documents", "/y", "GET", "read"))
    assert (denied.allowed, denied.rule) == (False, "default-deny")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**", "/a/b/c", True),
        ("*/intimate/**", "/123/intimate/x.jpg", True),
        ("*/intimate/**", "/123/other/intimate/x.jpg", False),
        ("*.jpg", "/a.jpg", True),
        ("*.jpg", "/d/a.jpg", False),
        ("**/*.jpg", "/d/e/a.jpg", True),
        ("a?c", "/abc", True),
        ("a.c", "/abc", False),
    ],
)
def test_globs(tmp_path: Path, pattern: str, path: str, matches: bool) -> None:
    policy = load_policy(
        write(
            tmp_path,
            f'version: 1\nrules:\n  - {{name: r, path: "{pattern}", groups: ["*"], methods: [read]}}\n',
        ),
        StageRegistry.default(),
        SHARES,
    )
    assert policy.decide(CLINICIAN, Check("documents", path, "GET", "read")).allowed is matches


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "version: 1\nshares: {clinical: {stages: [frobnicate]}}\n",
            "shares.clinical.stages.0.frobnicate",
        ),
        (
            "version: 1\nshares: {clinical: {stages: [{filetype: {allow: [bmp]}}]}}\n",
            "shares.clinical.stages.0.filetype.allow.0",
        ),
        (
            "version: 1\nshares: {clinical: {stages: [{filetype: {allow: any, x: 1}}]}}\n",
            "shares.clinical.stages.0.filetype.x",
        ),
        ("version: 1\nrulez: []\n", "rulez"),
        ("version: 1\nrules: [{name: r, groups: [a], methods: [FROB]}]\n", "rules.0.methods"),
        (
            "version: 1\nrules: [{name: r, share: nope, groups: [a], methods: [read]}]\n",
            "rules.0.share",
        ),
        ("version: 1\nshares: {nope: {}}\n", "shares.nope"),
    ],
)
def test_invalid_policies_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_policy(path, StageRegistry.default(), SHARES)
    assert any(p.file == str(path) and p.key == key for p in err.value.problems), err.value.problems
