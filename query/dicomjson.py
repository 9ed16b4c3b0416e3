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

__all__ = ["element", "NUMERIC_VRS"]

NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})


_PN_TAG = 0x00100010  # any PN tag: the conversion depends on the VR only


def _person_names(values: list[Any]) -> list[Any]:
    """PN values as F.2.2 objects: ``A=I=P`` splits into its three component groups,
    by pydicom's converter, the one metadata uses (dicomweb/wado/metadata.py).

    A stored value may hold several names joined by ``\\`` (the catalog keeps a
    multi-valued PN as the file has it): each is a value of its own, as pydicom reads the
    file for WADO-RS metadata; empty ones are left out, as empty list items are.
    """
    names = [name for v in values for name in str(v).split("\\") if name]
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
    if value is None or value == "":
        return {"vr": vr}
    values: Iterable[Any]
    if isinstance(value, list | tuple | set | frozenset):
        values = [v for v in value if v is not None and v != ""]
    else:
        values = [value]
    rendered = _person_names(list(values)) if vr == "PN" else [_one(vr, v) for v in values]
    return {"vr": vr, "Value": rendered} if rendered else {"vr": vr}
