"""Settings: one strict schema; every error names the file and the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.stages import check_upload_formats

MINIMAL = "shares:\n  documents: {url: /documents, path: shares/documents}\n"


def test_minimal_settings_resolve_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "clindav.yaml").write_text(MINIMAL)
    settings = load_settings(tmp_path / "clindav.yaml")
    assert settings.resolve(settings.shares["documents"].path) == tmp_path / "shares/documents"
    assert settings.sqlalchemy_url() == f"sqlite:///{tmp_path}/clindav.db"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + "sever: {}\n", "sever"),
        (MINIMAL + "server: {prot: 1}\n", "server.prot"),
        (MINIMAL + "server: {port: 70000}\n", "server.port"),
        (MINIMAL + "locks: {storage: memcached}\n", "locks.storage"),
        ("shares:\n  documents: {url: /a/b, path: x}\n", "shares.documents.url"),
        ("{}\n", "shares"),
        (
            MINIMAL + "  other: {url: /DOCUMENTS, path: y}\n",
            "shares.other.url",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "clindav.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert [(p.file, p.key) for p in err.value.problems] == [(str(path), key)]


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "clindav.yaml"
    path.write_text("shares: [unclosed\n")
    with pytest.raises(ConfigError):
        load_settings(path)


def test_upload_formats_must_be_rows_of_the_format_table(tmp_path: Path) -> None:
    path = tmp_path / "clindav.yaml"
    path.write_text(MINIMAL + "uploads: {formats: [jpeg, jpg, heic]}\n")
    settings = load_settings(path)  # the schema takes any names; the format table decides
    with pytest.raises(ConfigError) as err:
        check_upload_formats(settings)
    (problem,) = err.value.problems
    assert problem.key == "uploads.formats"
    assert problem.problem == (
        "unknown format 'jpg', 'heic' (known: gif, heif, jpeg, mp4, pdf, png, tiff, webp)"
    )
    path.write_text(MINIMAL + "uploads: {formats: [jpeg, heif]}\n")
    check_upload_formats(load_settings(path))  # known names pass
