"""A key given twice in a settings or policy file is refused, naming file, line and key.

YAML readers keep the last of two equal keys silently: a second ``clinical:``
block in policy.yaml replaced the first (losing its consent and scrub stages)
and ``clindav check-config`` said the policy was valid.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings, read_yaml
from tests.conftest import Instance, run_cli

SECOND_CLINICAL = "  clinical:\n    stages:\n      - filetype: {allow: any}\n"


def _plant_second_clinical_block(policy: Path) -> int:
    """Add a second ``shares.clinical`` block before ``referrals``; its line number."""
    text = policy.read_text()
    marker = "  referrals:\n"
    assert text.count(marker) == 1
    line = text[: text.index(marker)].count("\n") + 1
    policy.write_text(text.replace(marker, SECOND_CLINICAL + marker))
    return line


def test_duplicate_settings_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "clindav.yaml"
    path.write_text(
        "shares:\n"
        "  documents: {url: /documents, path: shares/documents}\n"
        "server:\n"
        "  port: 8443\n"
        "  port: 9443\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    [problem] = err.value.problems
    assert (problem.file, problem.key) == (str(path), "server.port")
    assert "duplicate key at line 5 (first at line 4)" in problem.problem


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", "a", 3),
        ("rules:\n  - {name: x, name: y}\n", "rules.0.name", 2),
        ("s:\n  t: {u: 1}\n  t: {u: 2}\n", "s.t", 3),
    ],
    ids=["top-level", "inside-a-list-item-on-one-line", "nested-block"],
)
def test_every_level_is_checked(tmp_path: Path, text: str, key: str, line: int) -> None:
    path = tmp_path / "file.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert [(p.key, p.problem.split(" (")[0]) for p in err.value.problems] == [
        (key, f"duplicate key at line {line}")
    ]


def test_equal_keys_in_different_mappings_and_merge_keys_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "file.yaml"
    path.write_text("base: &b {x: 1}\na: {x: 1, <<: *b}\nb: {x: 2, <<: *b}\n")
    assert read_yaml(path) == {"base": {"x": 1}, "a": {"x": 1}, "b": {"x": 2}}


def test_check_config_refuses_a_second_clinical_block(instance: Instance) -> None:
    policy = instance.folder / "policy.yaml"
    line = _plant_second_clinical_block(policy)
    result = run_cli("check-config", config=instance.config, check=False)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{policy}: shares.clinical: duplicate key at line {line}" in result.stderr
    assert "valid" not in result.stdout


def test_check_config_refuses_a_duplicate_setting(instance: Instance) -> None:
    text = instance.config.read_text()
    instance.config.write_text(text + "database_url: sqlite:///other.db\n")
    result = run_cli("check-config", config=instance.config, check=False)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{instance.config}: database_url: duplicate key at line" in result.stderr


def test_the_gateway_does_not_start_on_a_duplicate_policy_key(instance: Instance) -> None:
    line = _plant_second_clinical_block(instance.folder / "policy.yaml")
    result = run_cli("serve", "--port", "0", config=instance.config, check=False, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"shares.clinical: duplicate key at line {line}" in result.stderr
