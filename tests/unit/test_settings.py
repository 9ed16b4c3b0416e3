"""One typed settings object: defaults, <home>/vna.toml, VNA_* environment (the root model
in compose/settings.py, its sections in archive/settings.py and dicomweb/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archive.settings import StorageSettings
from compose.settings import Settings, load_settings
from security.errors import InvalidInput


def _toml(home: Path, body: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "vna.toml"
    path.write_text(body)
    return path


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.home == tmp_path.absolute()
    assert settings.dicom_port == 4242
    assert settings.http_port == 8080
    assert settings.orthanc_http_port == 8042
    assert settings.dicom_aet == "VNA"
    assert settings.http_host == "127.0.0.1"
    assert settings.storage == StorageSettings()
    assert settings.storage.zstd_level == 1
    assert settings.storage.fsync is True
    assert settings.storage.gc_grace_seconds == 3600
    assert settings.institutions == []


def test_derived_paths(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.resolved_catalog_url == f"sqlite:///{tmp_path / 'catalog.db'}"
    assert settings.keys_dir == tmp_path / "keys"
    assert settings.blob_dir == tmp_path / "blobs"
    assert settings.run_dir == tmp_path / "run"


def test_explicit_catalog_url_wins(tmp_path: Path) -> None:
    _toml(tmp_path, 'catalog_url = "postgresql://vna@db/vna"\n')
    assert load_settings(tmp_path).resolved_catalog_url == "postgresql://vna@db/vna"


def test_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings("archive-home").home == tmp_path / "archive-home"


def test_home_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VNA_HOME", str(tmp_path))
    _toml(tmp_path, "http_port = 9999\n")
    settings = load_settings()
    assert settings.home == tmp_path
    assert settings.http_port == 9999


def test_toml_in_home_overrides_defaults(tmp_path: Path) -> None:
    _toml(
        tmp_path,
        """
dicom_aet = "REGION_VNA"
dicom_port = 11112
http_port = 9000

[storage]
zstd_level = 7
fsync = false

[[institutions]]
name = "Hospital A"
ae_titles = ["HOSPA_CT", "HOSPA_MR"]

[[institutions]]
name = "Hospital B"
ae_titles = ["HOSPB"]
host = "10.0.0.2"
port = 104
""",
    )
    settings = load_settings(tmp_path)
    assert settings.dicom_aet == "REGION_VNA"
    assert settings.dicom_port == 11112
    assert settings.http_port == 9000
    assert settings.orthanc_http_port == 8042  # untouched default
    assert settings.storage.zstd_level == 7
    assert settings.storage.fsync is False
    assert settings.storage.gc_grace_seconds == 3600
    assert [i.name for i in settings.institutions] == ["Hospital A", "Hospital B"]
    assert settings.institutions[0].ae_titles == ["HOSPA_CT", "HOSPA_MR"]
    assert (settings.institutions[1].host, settings.institutions[1].port) == ("10.0.0.2", 104)


def test_toml_of_another_home_is_not_read(tmp_path: Path) -> None:
    _toml(tmp_path / "a", "dicom_port = 1111\n")
    assert load_settings(tmp_path / "b").dicom_port == 4242


def test_vna_config_points_at_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path / "home", "dicom_port = 1111\n")
    elsewhere = _toml(tmp_path / "etc", "dicom_port = 2222\n")
    monkeypatch.setenv("VNA_CONFIG", str(elsewhere))
    assert load_settings(tmp_path / "home").dicom_port == 2222


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, "dicom_port = 11112\nhttp_port = 9000\n")
    monkeypatch.setenv("VNA_DICOM_PORT", "5555")
    settings = load_settings(tmp_path)
    assert settings.dicom_port == 5555
    assert settings.http_port == 9000


def test_nested_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VNA_STORAGE__ZSTD_LEVEL", "9")
    settings = load_settings(tmp_path)
    assert settings.storage.zstd_level == 9
    assert settings.storage.fsync is True


def test_nested_environment_merges_with_the_toml_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toml(tmp_path, "[storage]\nzstd_level = 5\nfsync = false\n")
    monkeypatch.setenv("VNA_STORAGE__ZSTD_LEVEL", "9")
    settings = load_settings(tmp_path)
    assert settings.storage.zstd_level == 9
    assert settings.storage.fsync is False


def test_explicit_arguments_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, "dicom_port = 11112\n")
    monkeypatch.setenv("VNA_DICOM_PORT", "5555")
    assert load_settings(tmp_path, dicom_port=6666).dicom_port == 6666


def test_load_settings_leaves_no_toml_behind(tmp_path: Path) -> None:
    """The TOML path lives in a context variable only while one load runs."""
    _toml(tmp_path / "a", "dicom_port = 1111\n")
    assert load_settings(tmp_path / "a").dicom_port == 1111
    assert Settings().dicom_port == 4242


@pytest.mark.parametrize("aet", ["", "SEVENTEEN_CHARS_X"])
def test_invalid_ae_title_is_rejected(tmp_path: Path, aet: str) -> None:
    assert len(aet) in (0, 17)
    _toml(tmp_path, f'dicom_aet = "{aet}"\n')
    with pytest.raises(InvalidInput, match="AE title"):
        load_settings(tmp_path)


def test_invalid_ae_title_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VNA_DICOM_AET", "A" * 17)
    with pytest.raises(InvalidInput, match="dicom_aet"):
        load_settings(tmp_path)


def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    _toml(tmp_path, "dicom_prot = 11112\n")
    with pytest.raises(InvalidInput, match="dicom_prot"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("zstd_level = 0", "zstd_level"),
        ("zstd_level = 23", "zstd_level"),
        ("min_compression_gain = 1.0", "min_compression_gain"),
        ("gc_grace_seconds = -1", "gc_grace_seconds"),
    ],
)
def test_storage_ranges(tmp_path: Path, body: str, field: str) -> None:
    _toml(tmp_path, f"[storage]\n{body}\n")
    with pytest.raises(InvalidInput, match=field):
        load_settings(tmp_path)


def test_wrong_type_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VNA_DICOM_PORT", "not-a-port")
    with pytest.raises(InvalidInput, match="dicom_port"):
        load_settings(tmp_path)


def test_unknown_key_in_a_nested_table_is_rejected(tmp_path: Path) -> None:
    _toml(tmp_path, "[storage]\nzstd_levle = 9\n")
    with pytest.raises(InvalidInput, match="zstd_levle"):
        load_settings(tmp_path)
