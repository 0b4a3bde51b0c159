"""The documentation against the code: these fail when the two drift apart."""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from gateway.errors import ClindavError
from gateway.policy import load_policy
from gateway.settings import Settings, load_settings
from gateway.stages import StageRegistry, builtin_stages

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
ERROR_MODULES = (
    "gateway.errors",
    "plugins.filetype",
    "plugins.scrub.base",
    "gateway.crypto.fileformat",
    "gateway.crypto.keywrap",
    "gateway.crypto.names",
    "gateway.storage.keystore",
)


def _all_modules() -> list[str]:
    """Every module of gateway/ and plugins/ (migrations excepted), so new errors count."""
    names = []
    for package in ("gateway", "plugins"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if not info.name.startswith("gateway.migrations") and info.name != "gateway.__main__":
                names.append(info.name)
    return names


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The settings models an annotation such as ``X`` or ``X | None`` names."""
    if typing.get_origin(annotation) is dict:
        return []
    candidates = [annotation, *typing.get_args(annotation)]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every dotted key of the settings schema; mapping entries as ``<name>``."""
    keys = []
    for name, field in model.model_fields.items():
        if name == "base_dir":
            continue
        key = prefix + name
        keys.append(key)
        for sub in _models_in(field.annotation):
            keys.extend(settings_keys(sub, key + "."))
        if typing.get_origin(field.annotation) is dict:
            _key_type, value_type = typing.get_args(field.annotation)
            for sub in _models_in(value_type):
                keys.extend(settings_keys(sub, key + ".<name>."))
    return keys


def error_classes() -> list[type[ClindavError]]:
    for module in (*ERROR_MODULES, *_all_modules()):
        importlib.import_module(module)
    found: list[type[ClindavError]] = []
    todo = [ClindavError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    # Only clindav's own: tests may define subclasses of their own.
    return [c for c in found if c.__module__.startswith(("gateway.", "plugins."))]


def test_every_settings_key_is_documented() -> None:
    text = (DOCS / "CONFIGURATION.md").read_text(encoding="utf-8")
    keys = settings_keys()
    assert "server.tls.cert" in keys and "shares.<name>.path" in keys
    missing = [key for key in keys if f"`{key}`" not in text]
    assert not missing, f"docs/CONFIGURATION.md does not document: {missing}"


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "ERRORS.md").read_text(encoding="utf-8")
    codes = {cls.code for cls in error_classes()}
    assert {"policy-denied", "file-type-not-allowed", "content-key-purged"} <= codes
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert not missing, f"docs/ERRORS.md does not document: {missing}"


def test_every_builtin_stage_is_documented() -> None:
    text = (DOCS / "POLICY.md").read_text(encoding="utf-8")
    missing = [name for name in builtin_stages() if f"`{name}`" not in text]
    assert not missing, f"docs/POLICY.md does not document the stages: {missing}"


def _model_fields(model: type[BaseModel]) -> list[str]:
    """Every field of a model and of the models it nests (policy files, stage options)."""
    names = []
    hints = typing.get_type_hints(model)  # resolves forward references
    for name in model.model_fields:
        names.append(name)
        annotation = hints[name]
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        for sub in _models_in(annotation):
            names.extend(_model_fields(sub))
    return names


def test_every_policy_key_and_stage_option_is_documented() -> None:
    from gateway.policy import PolicyFile

    text = (DOCS / "POLICY.md").read_text(encoding="utf-8")
    keys = _model_fields(PolicyFile)
    assert {"admin_group", "trash_window", "keep_for"} <= set(keys)
    for name, stage in builtin_stages().items():
        keys.extend(f"{name}: {option}" for option in stage.Options.model_fields)
    documented = set(re.findall(r"`(?:[\w-]+\.)*([\w-]+)`", text))  # `key` or `a.b.key`
    missing = [k for k in keys if k.rsplit(": ", 1)[-1] not in documented]
    assert not missing, f"docs/POLICY.md does not document: {missing}"


def test_every_module_is_in_the_architecture() -> None:
    text = (DOCS / "ARCHITECTURE.md").read_text(encoding="utf-8")
    packages = [p.parent for p in sorted((REPO / "gateway").glob("*/__init__.py"))]
    modules = [
        p.relative_to(REPO).as_posix()
        for folder in (REPO / "gateway", *packages, REPO / "plugins")
        for p in sorted(folder.glob("*.py"))
        if p.name != "__init__.py"
    ]
    assert "gateway/dav/provider.py" in modules and "gateway/cli/main.py" in modules
    missing = [m for m in modules if f"`{m}`" not in text and not m.endswith("/__main__.py")]
    missing += [
        f"{p.relative_to(REPO).as_posix()}/"
        for p in packages
        if f"`{p.relative_to(REPO).as_posix()}/`" not in text
    ]
    assert not missing, f"docs/ARCHITECTURE.md does not list: {missing}"


def test_example_settings_validate(tmp_path: Path) -> None:
    # Relative paths resolve against the file's folder: load a copy.
    example = tmp_path / "clindav.yaml"
    shutil.copyfile(REPO / "deploy" / "clindav.example.yaml", example)
    settings = load_settings(example)
    assert settings.resolve(settings.keys.file or Path()) == tmp_path / "keys/master.key"
    # The shipped policy fits the example's shares (as check-config would see it).
    load_policy(REPO / "policies" / "default.yaml", StageRegistry.default(), list(settings.shares))


def test_compose_settings_validate(tmp_path: Path) -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    content = compose["configs"]["clindav-settings"]["content"]
    path = tmp_path / "clindav.yaml"
    path.write_text(re.sub(r"\$\{[A-Z_]+\}", "secret", content), encoding="utf-8")
    settings = load_settings(path)
    assert settings.locks.storage.startswith("redis://")
    assert settings.database_url.startswith("postgresql")
    load_policy(REPO / "policies" / "default.yaml", StageRegistry.default(), list(settings.shares))


def test_default_policy_loads() -> None:
    shares = ["clinical", "referrals", "teaching", "documents", "inbox"]
    policy = load_policy(REPO / "policies" / "default.yaml", StageRegistry.default(), shares)
    assert policy.doc.rules


def _fenced_lines(text: str) -> set[str]:
    lines: set[str] = set()
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.add(line.strip())
    return lines


@pytest.mark.parametrize("command", ["./deploy/bootstrap serve", "./deploy/bootstrap test"])
def test_readme_commands_are_fenced_lines(command: str) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert command in _fenced_lines(readme)
    subcommand = command.rsplit(" ", 1)[1]
    assert f"  {subcommand})" in (REPO / "deploy" / "bootstrap").read_text(encoding="utf-8")


def test_docs_named_in_readme_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(docs/[A-Z]+\.md)`", readme))
    assert named
    missing = sorted(n for n in named if not (REPO / n).is_file())
    assert not missing, f"README names missing docs: {missing}"
