"""Render catalog values as the DICOM JSON Model (PS3.18 Annex F).

Keys are 8 upper-case hex digits; each element has ``vr`` and, when it has a value,
``Value`` (always an array). PN values are objects with ``Alphabetic``, ``Ideographic``
and ``Phonetic`` component groups (F.2.2), converted by pydicom as WADO-RS metadata is;
IS, DS, US and the other numeric VRs are JSON numbers (F.2.3). An attribute without a
value is rendered with its ``vr`` only, which is how QIDO-RS says "known, empty".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.dataelem import DataElement

__all__ = ["NUMERIC_VRS", "catalog_values", "element"]

NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})


_PN_TAG = 0x00100010  # any PN tag: the conversion depends on the VR only


def _person_names(names: list[str]) -> list[Any]:
    """PN values as F.2.2 objects: ``A=I=P`` splits into its three component groups,
    by pydicom's converter, the one metadata uses (dicomweb/wado/metadata.py)."""
    document = DataElement(_PN_TAG, "PN", names).to_json_dict(
        bulk_data_element_handler=None, bulk_data_threshold=1024
    )
    return list(document.get("Value", []))


def _one(vr: str, value: Any) -> Any:
    if vr in NUMERIC_VRS:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        return float(text) if vr == "DS" or "." in text else int(text)
    return str(value)


def catalog_values(vr: str, value: Any) -> list[Any]:
    """The values of a catalog value (None, a scalar or an iterable) as DICOM has them.

    Empty ones are left out; the numeric VRs' are numbers. A stored PN may hold several
    names joined by ``\\`` (the catalog keeps a multi-valued PN as the file has it): each
    is a value of its own, as pydicom reads the file for WADO-RS metadata, with at most
    three component groups (PS3.5 6.2.1).

    Examples
    --------
    >>> catalog_values("PN", "Doe^Jane\\\\Roe^Richard")
    ['Doe^Jane', 'Roe^Richard']
    >>> catalog_values("IS", ["3", None, ""])
    [3]
    >>> catalog_values("DA", "")
    []
    """
    if value is None or value == "":
        return []
    values: Iterable[Any]
    if isinstance(value, list | tuple | set | frozenset):
        values = [v for v in value if v is not None and v != ""]
    else:
        values = [value]
    if vr == "PN":
        names = (name for v in values for name in str(v).split("\\") if name)
        return ["=".join(name.split("=")[:3]) for name in names]
    return [_one(vr, v) for v in values]


def element(vr: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON element; ``value`` may be None, a scalar or an iterable of values.

    Examples
    --------
    >>> element("PN", "Doe^Jane")
    {'vr': 'PN', 'Value': [{'Alphabetic': 'Doe^Jane'}]}
    >>> element("PN", "Yamada^Tarou=山田^太郎")
    {'vr': 'PN', 'Value': [{'Alphabetic': 'Yamada^Tarou', 'Ideographic': '山田^太郎'}]}
    >>> element("PN", "Doe^Jane\\\\Roe^Richard")
    {'vr': 'PN', 'Value': [{'Alphabetic': 'Doe^Jane'}, {'Alphabetic': 'Roe^Richard'}]}
    >>> element("IS", "3")
    {'vr': 'IS', 'Value': [3]}
    >>> element("DA", None)
    {'vr': 'DA'}
    """
    values = catalog_values(vr, value)
    rendered = _person_names(values) if vr == "PN" and values else values
    return {"vr": vr, "Value": rendered} if rendered else {"vr": vr}
