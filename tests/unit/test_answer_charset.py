"""The character set of C-FIND answers: Orthanc's DefaultEncoding, from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from archive.credentials import OrthancCredentials
from compose.settings import load_settings
from deploy.orthanc_config import orthanc_config
from security.errors import InvalidInput


@pytest.mark.parametrize(
    ("charset", "encoding"),
    [(None, "Utf8"), ("ISO_IR 100", "Latin1"), ("ISO_IR 126", "Greek"), ("GB18030", "Chinese")],
)
def test_answers_are_in_the_configured_set(
    tmp_path: Path, charset: str | None, encoding: str
) -> None:
    """UTF-8 unless set: Orthanc converts every plugin answer to its DefaultEncoding, and
    its own default (Latin1) cannot hold Greek, Cyrillic or CJK names."""
    overrides = {} if charset is None else {"dicom_answer_charset": charset}
    settings = load_settings(tmp_path, **overrides)
    config = orthanc_config(settings, OrthancCredentials("u", "p"), [])
    assert config["DefaultEncoding"] == encoding


def test_a_set_orthanc_cannot_answer_in_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="dicom_answer_charset"):
        load_settings(tmp_path, dicom_answer_charset="ISO 2022 IR 87")
