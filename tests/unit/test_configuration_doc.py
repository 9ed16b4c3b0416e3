"""docs/configuration.md lists every setting of the settings model once, with its default.

The page is written by hand (what a setting means needs sentences), so this test is what
keeps it true: a field added to ``archive.settings`` without a row, a row for a field that
is gone, or a default that changed fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from compose.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# a table row whose first cell is one setting in backticks: | `key` | default | meaning |
ROW = re.compile(r"^\|\s*`(?P<key>[a-z_][a-z0-9_.\[\]]*)`\s*\|\s*(?P<default>[^|]*?)\s*\|")


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, directly or as the items of a list or tuple."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, tuple):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _documented_default(value: Any) -> str:
    """A default as the page writes it: TOML literals, ``unset`` for None."""
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (str, Path)):
        return f'`"{value}"`'
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(_documented_default(v).strip("`") for v in value) + "]`"
    return f"`{value}`"


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str]]:
    for name, field in model.model_fields.items():
        key = prefix + name
        annotation = field.annotation
        nested = _model_in(annotation)
        is_union = get_origin(annotation) in (Union, UnionType)
        if nested is not None and not is_union and get_origin(annotation) is None:
            # a section such as [storage]: its fields are the settings
            yield from _fields(nested, key + ".")
            continue
        default = field.get_default(call_default_factory=True)
        yield key, _documented_default(default)
        if nested is not None:  # a list of tables: the table's fields too
            yield from _fields(nested, key + "[].")


def _rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.setdefault(match["key"], []).append(match["default"])
    return rows


def test_every_setting_is_documented_once_with_its_default() -> None:
    expected = dict(_fields(Settings))
    rows = _rows()
    assert sorted(set(expected) - set(rows)) == [], "settings missing from docs/configuration.md"
    assert sorted(set(rows) - set(expected)) == [], "rows for settings that do not exist"
    assert {k: v for k, v in rows.items() if len(v) > 1} == {}, "settings listed twice"
    wrong = {k: (rows[k][0], v) for k, v in expected.items() if rows[k][0] != v}
    assert wrong == {}, "documented default differs from the model's (page, model)"


def test_the_walk_reaches_nested_sections_and_lists_of_tables() -> None:
    keys = dict(_fields(Settings))
    assert keys["storage.zstd_level"] == "`1`"
    assert keys["gateway.cors_origins"] == '`["*"]`'
    assert keys["institutions[].name"] == "required"
    assert keys["gateway.external_issuers[].institution_claim"] == '`"institution"`'
    assert "dicom" not in keys and "dicom.tls" in keys
