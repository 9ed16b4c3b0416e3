"""The DICOM attributes QIDO-RS can match and return, and where the catalog keeps them.

Study Root information model (PS3.4 C.6.2): patient attributes are study-level. Each
attribute has a catalog column, or is *computed* (ModalitiesInStudy and the counts) from
the rows below it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import ColumnElement

from archive.index_tables import instances as instances_table
from archive.index_tables import patients, series, studies

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_RETURN",
    "Attribute",
    "Level",
    "RETRIEVE_URL",
    "lookup",
]


class Level(enum.IntEnum):
    """Query/retrieve level; a lower level joins the rows of every level above it."""

    STUDY = 1
    SERIES = 2
    INSTANCE = 3


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute: tag (8 upper-case hex digits), keyword, VR, level, catalog column."""

    tag: str
    keyword: str
    vr: str
    level: Level
    column: ColumnElement[object] | None = None

    @property
    def computed(self) -> bool:
        return self.column is None


def _attrs() -> tuple[Attribute, ...]:
    s, p, se, i = studies.c, patients.c, series.c, instances_table.c
    study, ser, inst = Level.STUDY, Level.SERIES, Level.INSTANCE
    return (
        Attribute("0020000D", "StudyInstanceUID", "UI", study, s.study_uid),
        Attribute("00080020", "StudyDate", "DA", study, s.study_date),
        Attribute("00080030", "StudyTime", "TM", study, s.study_time),
        Attribute("00080050", "AccessionNumber", "SH", study, s.accession_number),
        Attribute("00080090", "ReferringPhysicianName", "PN", study, s.referring_physician),
        Attribute("00200010", "StudyID", "SH", study, s.study_id),
        Attribute("00081030", "StudyDescription", "LO", study, s.description),
        Attribute("00100010", "PatientName", "PN", study, p.patient_name),
        Attribute("00100020", "PatientID", "LO", study, p.patient_id),
        Attribute("00100021", "IssuerOfPatientID", "LO", study, p.issuer),
        Attribute("00100030", "PatientBirthDate", "DA", study, p.birth_date),
        Attribute("00100040", "PatientSex", "CS", study, p.sex),
        Attribute("00080061", "ModalitiesInStudy", "CS", study),
        Attribute("00201206", "NumberOfStudyRelatedSeries", "IS", study),
        Attribute("00201208", "NumberOfStudyRelatedInstances", "IS", study),
        # computed: every indexed instance can be retrieved now (PS3.18 Table 10.6.3-3, -5)
        Attribute("00080056", "InstanceAvailability", "CS", study),
        Attribute("0020000E", "SeriesInstanceUID", "UI", ser, se.series_uid),
        Attribute("00080060", "Modality", "CS", ser, se.modality),
        Attribute("00200011", "SeriesNumber", "IS", ser, se.series_number),
        Attribute("0008103E", "SeriesDescription", "LO", ser, se.description),
        Attribute("00080021", "SeriesDate", "DA", ser, se.series_date),
        Attribute("00201209", "NumberOfSeriesRelatedInstances", "IS", ser),
        Attribute("00080018", "SOPInstanceUID", "UI", inst, i.sop_uid),
        Attribute("00080016", "SOPClassUID", "UI", inst, i.sop_class_uid),
        Attribute("00200013", "InstanceNumber", "IS", inst, i.instance_number),
        Attribute("00280010", "Rows", "US", inst, i.rows),
        Attribute("00280011", "Columns", "US", inst, i.columns),
        Attribute("00280100", "BitsAllocated", "US", inst, i.bits_allocated),
        Attribute("00280008", "NumberOfFrames", "IS", inst, i.number_of_frames),
        Attribute("00083002", "AvailableTransferSyntaxUID", "UI", inst, i.transfer_syntax),
    )


ATTRIBUTES: tuple[Attribute, ...] = _attrs()
_BY_KEY = {a.tag: a for a in ATTRIBUTES} | {a.keyword.lower(): a for a in ATTRIBUTES}

RETRIEVE_URL = "00081190"
"""Retrieve URL (UR): added to every result, pointing at the WADO-RS resource."""

DEFAULT_RETURN: dict[Level, tuple[str, ...]] = {
    # PS3.18 Table 10.6.3-3 (study), -4 (series), -5 (instance); keywords
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "StudyID",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "InstanceAvailability",
    ),
    Level.SERIES: (
        "StudyInstanceUID",
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    Level.INSTANCE: (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
        "AvailableTransferSyntaxUID",
        "InstanceAvailability",
    ),
}


def lookup(key: str) -> Attribute | None:
    """The attribute named by a keyword (any case) or an 8-digit hex tag; else None."""
    key = key.strip()
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        return _BY_KEY.get(key.upper())
    return _BY_KEY.get(key.lower())
