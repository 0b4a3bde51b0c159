"""The schema check's fast path (gateway/db.py ``prepare_database``) reads the newest
revision from the migration files' names: each file is named after its revision, and
the newest name is Alembic's head."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from gateway.db import (
    SchemaOutdated,
    _alembic_config,
    _at_newest_revision,
    make_engine,
    prepare_database,
)

VERSIONS = Path(__file__).resolve().parents[2] / "gateway" / "migrations" / "versions"


def test_each_migration_file_is_named_after_its_revision() -> None:
    files = sorted(VERSIONS.glob("*.py"))
    assert files
    for path in files:
        revision = re.search(r'^revision = "([^"]+)"', path.read_text(), re.M)
        assert revision is not None, path
        assert path.name.startswith(revision.group(1) + "_"), path.name


def test_the_newest_file_name_is_the_head() -> None:
    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    newest = max(p.name.split("_", 1)[0] for p in VERSIONS.glob("[0-9]*_*.py"))
    assert script.get_current_head() == newest


def test_the_fast_path_answers_only_for_a_database_at_the_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'clindav.db'}"
    assert not _at_newest_revision(url)  # no schema yet: Alembic creates it
    prepare_database(url)
    assert _at_newest_revision(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    engine.dispose()
    assert not _at_newest_revision(url)
    with pytest.raises(SchemaOutdated) as refused:  # by the full check, as before
        prepare_database(url)
    assert "clindav upgrade" in refused.value.public_message
