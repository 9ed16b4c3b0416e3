"""Render catalog values as the DICOM JSON Model (PS3.18 Annex F).

Keys are 8 upper-case hex digits; each element has ``vr`` and, when it has a value,
``Value`` (always an array). PN values are objects with ``Alphabetic``; IS, DS, US and the
other numeric VRs are JSON numbers (F.2.3). An attribute without a value is rendered with
its ``vr`` only, which is how QIDO-RS says "known, empty".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["element", "NUMERIC_VRS"]

NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})


def _one(vr: str, value: Any) -> Any:
    if vr == "PN":
        return {"Alphabetic": str(value)}
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
    rendered = [_one(vr, v) for v in values]
    return {"vr": vr, "Value": rendered} if rendered else {"vr": vr}
