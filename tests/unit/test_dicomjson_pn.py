"""What query/dicomjson.py writes for PN equals pydicom's ``Dataset.to_json_dict`` (what
WADO-RS metadata sends) for the same stored value: component groups (PS3.18 F.2.2),
values with only some groups, and several values."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset

from query.dicomjson import element

YAMADA = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def _pydicom(value: str | list[str]) -> dict[str, Any]:
    ds = Dataset()
    ds.PatientName = value
    document: dict[str, Any] = ds.to_json_dict()["00100010"]
    return document


@pytest.mark.parametrize(
    "value",
    [
        "Doe^Jane",
        "Doe^Jane^Q^Dr^PhD",
        YAMADA,  # alphabetic, ideographic and phonetic
        "Yamada^Tarou=山田^太郎",  # no phonetic group
        "=山田^太郎",  # ideographic only
        "Yamada^Tarou==やまだ^たろう",  # no ideographic group
        "==やまだ^たろう",  # phonetic only
        "Doe^Jane=",  # empty trailing groups
        "Doe^Jane==",
        "ÄNEAS^Ödipus",
        "Doe^Jane\\Roe^Richard",  # several values as stored: one string
        f"{YAMADA}\\Doe^Jane",
        "Yamada^Tarou=山田^太郎\\=やまだ",
        ["Doe^Jane", YAMADA],  # several values as a list
        ["=山田^太郎", "Roe^Richard"],
    ],
)
def test_person_names_are_written_as_pydicom_writes_them(value: str | list[str]) -> None:
    assert element("PN", value) == _pydicom(value)


def test_the_groups_of_a_full_name() -> None:
    assert element("PN", YAMADA)["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]


def test_empty_values_are_left_out() -> None:
    """pydicom cannot convert an empty value among several (IndexError in pydicom 3.0); the
    archive leaves it out, as it leaves out empty list items."""
    assert element("PN", "Doe^Jane\\\\Roe^Richard") == _pydicom("Doe^Jane\\Roe^Richard")
    assert element("PN", ["Doe^Jane", "", "Roe^Richard"]) == _pydicom("Doe^Jane\\Roe^Richard")
    assert element("PN", "") == {"vr": "PN"}
