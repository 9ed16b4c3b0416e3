"""A mistake in vna.toml or a VNA_* variable is one line that names the setting, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compose.settings import load_settings
from security.errors import InvalidInput


def test_a_misspelt_key_names_the_key_the_file_and_where_to_look(tmp_path: Path) -> None:
    (tmp_path / "vna.toml").write_text("dicom_portt = 4243\n")
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path)
    message = str(caught.value)
    assert "dicom_portt" in message
    assert "unknown setting" in message
    assert str(tmp_path / "vna.toml") in message
    assert "docs/configuration.md" in message


def test_a_wrong_value_names_the_setting_but_not_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values are left out: a misplaced secret must not reach a terminal or a log."""
    (tmp_path / "vna.toml").write_text('dicom_port = "s3cr3t-not-a-port"\n')
    with pytest.raises(InvalidInput) as caught:
        load_settings(tmp_path)
    message = str(caught.value)
    assert "dicom_port" in message
    assert "s3cr3t-not-a-port" not in message


def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "vna.toml").write_text("dicom_portt = 4243\n")
    env = {**os.environ, "VNA_HOME": str(tmp_path), "COLUMNS": "200"}
    env.pop("VNA_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert "dicom_portt" in output


def test_invalid_toml_names_the_file_and_the_place(tmp_path: Path) -> None:
    (tmp_path / "vna.toml").write_text("dicom_port = \n")
    with pytest.raises(InvalidInput, match=r"vna\.toml is not valid TOML .*line 1"):
        load_settings(tmp_path)
