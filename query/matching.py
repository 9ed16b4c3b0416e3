"""QIDO-RS query parameters to SQL over the catalog (PS3.18 8.3.4, PS3.4 C.2.2.2).

:func:`parse_query` turns untrusted query parameters into a frozen :class:`Query`
(``InvalidInput`` for anything malformed), :func:`query_for_keys` typed matching keys (a
DIMSE identifier's) into the same; :func:`build_select` turns a query plus the
principal's institution into one SQLAlchemy ``Select`` whose WHERE clause carries the
access condition, so paging and totals are correct after filtering.

Matching supported:

* single value (exact), universal (empty value, or ``*``),
* wild card ``*`` and ``?`` (PN case-insensitively, other VRs case-sensitively),
* PN: case-insensitive in every script, on the folded copies of each component group the
  catalog keeps (:mod:`archive.names`); a value without ``=`` matches any of the
  alphabetic, ideographic and phonetic groups, a value with ``=`` matches group by group
  (an empty group there matches anything),
* UID lists (``,`` or ``\\`` separated) and value lists for CS,
* ranges for DA and TM: ``A-B``, ``A-``, ``-B``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, true

from archive.api import fold, fold_group, split_groups
from archive.index_tables import instances, patients, series, studies
from query.access import reachable
from query.attributes import DEFAULT_RETURN, Attribute, Level, lookup
from security.api import InvalidInput

__all__ = ["Condition", "Query", "build_select", "parse_query", "query_for_keys"]

_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_UID = re.compile(r"^[0-9.]{1,64}$")
_MAX_LIST = 1000


@dataclass(frozen=True, slots=True)
class Condition:
    """One matching key: ``kind`` is exact, wildcard, list or range; universal has none."""

    attribute: Attribute
    kind: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    """A validated QIDO-RS search at one level, optionally inside a study or series."""

    level: Level
    conditions: tuple[Condition, ...]
    returned: tuple[Attribute, ...]
    limit: int
    offset: int = 0
    study_uid: str | None = None
    series_uid: str | None = None
    ignored: tuple[str, ...] = ()
    # includefield attributes the catalog does not index (8 upper-case hex digits), read
    # from the stored headers of the page of results (dicomweb/qido/includefield.py)
    header_fields: tuple[str, ...] = ()
    include_all: bool = False


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]


def _condition(attr: Attribute, raw: str) -> Condition | None:
    value = raw.strip()
    if value in ("", "*"):
        return Condition(attr, "universal")
    if attr.vr == "UI":
        uids = _split_list(value)
        if len(uids) > _MAX_LIST or not all(_UID.match(u) for u in uids):
            raise InvalidInput(f"{attr.keyword} must be a UID or a comma-separated UID list")
        return Condition(attr, "list", tuple(uids))
    if attr.vr in ("DA", "TM"):
        pattern = _DATE if attr.vr == "DA" else _TIME
        what = "YYYYMMDD" if attr.vr == "DA" else "HHMMSS"
        if "-" in value:
            low, _, high = value.partition("-")
            if not (low or high) or any(v and not pattern.match(v) for v in (low, high)):
                raise InvalidInput(f"{attr.keyword} range must be {what}-{what}, A- or -B")
            return Condition(attr, "range", (low, high))
        if not pattern.match(value):
            raise InvalidInput(f"{attr.keyword} must be {what} or a range")
        return Condition(attr, "exact", (value,))
    if attr.vr in ("IS", "US"):
        if not value.lstrip("-").isdigit():
            raise InvalidInput(f"{attr.keyword} must be an integer")
        return Condition(attr, "exact", (str(int(value)),))
    if attr.vr == "CS" and ("," in value or "\\" in value):
        return Condition(attr, "list", tuple(_split_list(value)))
    if "*" in value or "?" in value:
        return Condition(attr, "wildcard", (value,))
    return Condition(attr, "exact", (value,))


def _positive(name: str, raw: str, default: int, maximum: int) -> int:
    if raw == "":
        return default
    if not raw.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer")
    return min(int(raw), maximum)


def parse_query(
    params: Iterable[tuple[str, str]],
    level: Level,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    max_results: int = 1000,
) -> Query:
    """Validate QIDO-RS query parameters.

    Parameters
    ----------
    params : iterable of (name, value)
        The query string pairs (repeated names allowed, e.g. ``includefield``).
    level : Level
        Study, series or instance search.
    study_uid, series_uid : str, optional
        From the path (``/studies/{study}/series``): the search is inside them.
    max_results : int
        Upper bound for ``limit``; also the default.

    Raises
    ------
    InvalidInput
        An unknown attribute name, a malformed value, or a bad limit/offset.
    """
    conditions: dict[str, Condition] = {}
    includes: list[Attribute] = []
    header_fields: list[str] = []
    include_all = False
    ignored: list[str] = []
    limit, offset = max_results, 0
    for name, value in params:
        key = name.strip()
        low = key.lower()
        if low == "limit":
            # limit=0 asks for no particular limit (as Orthanc reads it), not for one result
            limit = _positive("limit", value, max_results, max_results) or max_results
        elif low == "offset":
            offset = _positive("offset", value, 0, 2**31)
        elif low == "fuzzymatching":
            if value.lower() == "true":
                ignored.append("fuzzymatching")
        elif low == "includefield":
            for item in _split_list(value):
                if item.lower() == "all":
                    include_all = True
                elif (attr := lookup(item)) is not None:
                    includes.append(attr)
                elif (tag := _header_tag(item)) is not None:
                    header_fields.append(tag)
                elif _is_tag_path(item):
                    ignored.append(item)  # a path into a sequence: not answered
                else:
                    raise InvalidInput(f"includefield names an unknown attribute {item!r}")
        elif (attr := lookup(key)) is not None:
            _add_condition(conditions, ignored, attr, value, level)
        elif _is_tag_path(key):
            ignored.append(key)  # a valid DICOM key the catalog does not index
        else:
            raise InvalidInput(f"unknown query parameter {key!r}")
    returned = _returned(level, includes, include_all, conditions.values(), study_uid)
    return Query(
        level=level,
        conditions=tuple(conditions.values()),
        returned=returned,
        limit=limit,
        offset=offset,
        study_uid=study_uid,
        series_uid=series_uid,
        ignored=tuple(ignored),
        header_fields=tuple(dict.fromkeys(header_fields)),
        include_all=include_all,
    )


def query_for_keys(
    level: Level,
    keys: Iterable[tuple[Attribute, str]],
    returned: Iterable[Attribute] = (),
    *,
    limit: int,
) -> Query:
    """A search from typed matching keys, as a DIMSE identifier gives them (PS3.4 C.4.1.1.3).

    Parameters
    ----------
    level : Level
        Study, series or instance search.
    keys : iterable of (Attribute, value)
        Each attribute is returned; a value other than empty or ``*`` is also matched
        (the same matching as a QIDO-RS parameter: :func:`parse_query`).
    returned : iterable of Attribute
        Attributes to return besides the keys and the level's defaults.
    limit : int
        Results returned at most.

    Raises
    ------
    InvalidInput
        An attribute below ``level``, or a malformed value.
    """
    conditions: dict[str, Condition] = {}
    includes: list[Attribute] = []
    ignored: list[str] = []
    for attr, value in keys:
        includes.append(attr)
        if value.strip():
            _add_condition(conditions, ignored, attr, value, level)
    includes += returned
    return Query(
        level=level,
        conditions=tuple(conditions.values()),
        returned=_returned(level, includes, False, conditions.values(), None),
        limit=limit,
        ignored=tuple(ignored),
    )


def _add_condition(
    conditions: dict[str, Condition],
    ignored: list[str],
    attr: Attribute,
    value: str,
    level: Level,
) -> None:
    """Match ``attr`` by ``value`` (a later key replaces an earlier one); a computed
    attribute other than ModalitiesInStudy cannot be matched and is listed as ignored."""
    if attr.level > level:
        raise InvalidInput(f"{attr.keyword} cannot be matched in a {level.name} search")
    if attr.computed and attr.keyword != "ModalitiesInStudy":
        ignored.append(attr.keyword)
        return
    cond = _condition(attr, value)
    if cond is not None:
        conditions[attr.tag] = cond


@functools.cache
def _keywords() -> dict[str, int]:
    from pydicom.datadict import keyword_dict

    return {keyword.lower(): tag for keyword, tag in keyword_dict.items() if keyword}


def _header_tag(key: str) -> str | None:
    """The tag of a single attribute (keyword in any case, as catalog attributes are
    looked up, or 8 hex digits) as 8 upper-case hex digits; None for anything else (a
    sequence path, an unknown keyword)."""
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        return key.upper()
    tag = _keywords().get(key.lower())
    return None if tag is None else f"{tag:08X}"


def _is_tag_path(key: str) -> bool:
    from pydicom.datadict import tag_for_keyword

    parts = key.split(".")
    return all(
        (len(p) == 8 and all(c in "0123456789abcdefABCDEF" for c in p))
        or tag_for_keyword(p) is not None
        for p in parts
    )


def _returned(
    level: Level,
    includes: list[Attribute],
    include_all: bool,
    conditions: Iterable[Condition],
    study_uid: str | None,
) -> tuple[Attribute, ...]:
    from query.attributes import ATTRIBUTES

    wanted: list[Attribute] = []
    if include_all:
        wanted = [a for a in ATTRIBUTES if a.level <= level]
    else:
        keywords = list(DEFAULT_RETURN[level])
        if level > Level.STUDY and study_uid is None:
            keywords = list(DEFAULT_RETURN[Level.STUDY]) + keywords  # relational search
        if level == Level.INSTANCE:
            keywords += [k for k in DEFAULT_RETURN[Level.SERIES] if k not in keywords]
        wanted = [a for k in keywords if (a := lookup(k)) is not None]
        wanted += includes + [c.attribute for c in conditions]
    unique: dict[str, Attribute] = {}
    for attr in wanted:
        if attr.level <= level:
            unique.setdefault(attr.tag, attr)
    return tuple(sorted(unique.values(), key=lambda a: a.tag))


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_pattern(value: str) -> str:
    return _like_escape(value).replace("*", "%").replace("?", "_")


# a PN attribute's folded component groups (alphabetic, ideographic, phonetic)
_FOLDED = {
    "PatientName": (
        patients.c.patient_name_fold_a,
        patients.c.patient_name_fold_i,
        patients.c.patient_name_fold_p,
    ),
    "ReferringPhysicianName": (
        studies.c.referring_physician_fold_a,
        studies.c.referring_physician_fold_i,
        studies.c.referring_physician_fold_p,
    ),
}


def _folded_like(group: str) -> str:
    """A LIKE pattern for a PN group with wild cards: the literal runs folded (so a
    full-width ``＊`` stays a literal) and escaped, ``*`` and ``?`` as ``%`` and ``_``."""
    pattern: list[str] = []
    literal: list[str] = []
    for char in group + "*":
        if char in "*?":
            pattern.append(_like_escape(fold("".join(literal))))
            pattern.append("%" if char == "*" else "_")
            literal = []
        else:
            literal.append(char)
    return "".join(pattern)[:-1]


def _match_group(column: ColumnElement[str], group: str) -> ColumnElement[bool]:
    if "*" in group or "?" in group:
        return column.like(_folded_like(group.strip()), escape="\\")
    return column == fold_group(group)


def _match_pn(columns: tuple[ColumnElement[str], ...], value: str) -> ColumnElement[bool]:
    """PS3.4 C.2.2.2 single value and wild card matching of a PN, case-insensitively:
    the folded query against the folded groups, never the database's ``lower()``."""
    if "=" not in value:
        return or_(*(_match_group(column, value) for column in columns))
    given = [
        (column, group)
        for column, group in zip(columns, split_groups(value), strict=False)
        if group.strip()
    ]
    return and_(*(_match_group(c, g) for c, g in given)) if given else true()


def _match(cond: Condition, dialect: str) -> ColumnElement[bool]:
    attr = cond.attribute
    if attr.keyword == "ModalitiesInStudy":
        modality = series.c.modality
        wanted = (
            modality.in_(cond.values)
            if cond.kind == "list"
            else _match(Condition(_modality(), cond.kind, cond.values), dialect)
        )
        return exists(
            select(series.c.series_uid).where(series.c.study_uid == studies.c.study_uid, wanted)
        )
    col = attr.column
    assert col is not None
    if cond.kind == "list":
        return col.in_(cond.values)
    if cond.kind == "range":
        low, high = cond.values
        parts = [col >= low] if low else []
        if high:
            # a TM upper bound 1230 includes 123059.999: compare on the given precision
            parts.append(func.substr(col, 1, len(high)) <= high if attr.vr == "TM" else col <= high)
        return and_(col.is_not(None), *parts)
    if attr.vr in ("IS", "US"):
        return col == int(cond.values[0])
    value = cond.values[0]
    if attr.vr == "PN" and attr.keyword in _FOLDED:
        # case-insensitive, as in Orthanc's default (CaseSensitivePN false)
        return _match_pn(_FOLDED[attr.keyword], value)
    if cond.kind == "wildcard":
        if dialect == "sqlite":  # sqlite's LIKE ignores case; GLOB does not
            return col.op("GLOB")(value.replace("[", "[[]"))
        return col.like(_like_pattern(value), escape="\\")
    return col == value


def _modality() -> Attribute:
    found = lookup("Modality")
    assert found is not None
    return found


def build_select(
    query: Query, institution: str, *, dialect: str = "sqlite"
) -> Select[tuple[object, ...]]:
    """One SELECT for ``query`` as seen by ``institution``: columns are the stored
    (non-computed) returned attributes plus the UIDs of the query level, in that order."""
    keys = {
        Level.STUDY: [studies.c.study_uid],
        Level.SERIES: [studies.c.study_uid, series.c.series_uid],
        Level.INSTANCE: [studies.c.study_uid, series.c.series_uid, instances.c.sop_uid],
    }[query.level]
    columns = [a.column for a in query.returned if a.column is not None]
    stmt = select(*keys, *columns)
    if query.level == Level.STUDY:
        stmt = stmt.select_from(studies.join(patients, patients.c.pk == studies.c.patient_pk))
    elif query.level == Level.SERIES:
        stmt = stmt.select_from(
            series.join(studies, studies.c.study_uid == series.c.study_uid).join(
                patients, patients.c.pk == studies.c.patient_pk
            )
        )
    else:
        stmt = stmt.select_from(
            instances.join(series, series.c.series_uid == instances.c.series_uid)
            .join(studies, studies.c.study_uid == series.c.study_uid)
            .join(patients, patients.c.pk == studies.c.patient_pk)
        )
    where = [reachable(studies.c.study_uid, institution)]
    if query.study_uid is not None:
        where.append(studies.c.study_uid == query.study_uid)
    if query.series_uid is not None:
        where.append(series.c.series_uid == query.series_uid)
    where += [_match(c, dialect) for c in query.conditions if c.kind != "universal"]
    order = {
        Level.STUDY: [studies.c.study_date, studies.c.study_uid],
        Level.SERIES: [series.c.series_number, series.c.series_uid],
        Level.INSTANCE: [series.c.series_uid, instances.c.instance_number, instances.c.sop_uid],
    }[query.level]
    return stmt.where(*where).order_by(*order).limit(query.limit).offset(query.offset)
