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


@pytest.mark.parametrize(
    ("section", "key", "least", "shorter"),
    [
        ("console", "idle_timeout", "10s", "9s"),
        ("console", "max_session", "10s", "9s"),
        ("nextcloud", "login_flow_timeout", "1m", "59s"),
        ("nextcloud", "upload_expiry", "1m", "59s"),
        ("trash", "max_clock_jump", "2h", "119m"),
    ],
)
def test_durations_below_their_bound_are_refused_naming_it(
    tmp_path: Path, section: str, key: str, least: str, shorter: str
) -> None:
    path = tmp_path / "clindav.yaml"
    path.write_text(MINIMAL + f"{section}: {{{key}: {least}}}\n")
    load_settings(path)
    path.write_text(MINIMAL + f"{section}: {{{key}: {shorter}}}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    (problem,) = err.value.problems
    assert problem.key == f"{section}.{key}"
    assert str(err.value).endswith(f"at least {least}")


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
