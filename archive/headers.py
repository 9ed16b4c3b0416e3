"""Read what the study index needs from the header part of a stored DICOM file.

The storage area already holds every file's header (the bytes before Pixel Data) when
Orthanc hands the file over; reading ~25 attributes from those ~2 KB on the indexer thread
is far cheaper than Orthanc's stored-instance callback, which serialises C-STOREs and
converts the whole data set to JSON.
"""

from __future__ import annotations

import hashlib
from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError

from archive.catalog import InstanceRecord
from security.errors import InvalidInput

__all__ = ["INDEXED_KEYWORDS", "header_record", "orthanc_instance_id"]

INDEXED_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "SeriesDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDescription",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
    "NumberOfFrames",
    "Rows",
    "Columns",
)


def orthanc_instance_id(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Orthanc's public id of an instance: SHA-1 of the four identifiers, in 5 groups."""
    digest = hashlib.sha1(  # noqa: S324 - Orthanc's naming scheme, not a security use
        f"{patient_id}|{study_uid}|{series_uid}|{sop_uid}".encode()
    ).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip()
    return text or None


def _number(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def header_record(
    header: bytes, issuer_fallback: str, *, attachment_uuid: str, size: int
) -> InstanceRecord:
    """The index row of an instance from its header (Part 10 bytes up to Pixel Data).

    The patient is qualified by IssuerOfPatientID, else by the sending institution, so equal
    patient IDs from two hospitals stay two patients.
    """
    try:
        ds = pydicom.dcmread(
            BytesIO(header), stop_before_pixels=True, specific_tags=list(INDEXED_KEYWORDS)
        )
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise InvalidInput(f"the stored file {attachment_uuid} has an unreadable header") from exc
    sop_uid = _text(ds.get("SOPInstanceUID"))
    study_uid = _text(ds.get("StudyInstanceUID"))
    series_uid = _text(ds.get("SeriesInstanceUID"))
    if not (sop_uid and study_uid and series_uid):
        raise InvalidInput(f"the stored file {attachment_uuid} lacks its UIDs")
    patient_id = str(ds.get("PatientID", "") or "")
    meta = getattr(ds, "file_meta", None)
    syntax = _text(meta.get("TransferSyntaxUID")) if meta is not None else None
    return InstanceRecord(
        sop_uid=sop_uid,
        series_uid=series_uid,
        study_uid=study_uid,
        patient_id=patient_id.strip(),
        issuer=_text(ds.get("IssuerOfPatientID")) or issuer_fallback,
        patient_name=_text(ds.get("PatientName")),
        birth_date=_text(ds.get("PatientBirthDate")),
        sex=_text(ds.get("PatientSex")),
        study_date=_text(ds.get("StudyDate")),
        study_time=_text(ds.get("StudyTime")),
        accession_number=_text(ds.get("AccessionNumber")),
        study_id=_text(ds.get("StudyID")),
        study_description=_text(ds.get("StudyDescription")),
        referring_physician=_text(ds.get("ReferringPhysicianName")),
        modality=_text(ds.get("Modality")),
        series_number=_number(ds.get("SeriesNumber")),
        series_description=_text(ds.get("SeriesDescription")),
        series_date=_text(ds.get("SeriesDate")),
        sop_class_uid=_text(ds.get("SOPClassUID")),
        instance_number=_number(ds.get("InstanceNumber")),
        number_of_frames=_number(ds.get("NumberOfFrames")),
        rows=_number(ds.get("Rows")),
        columns=_number(ds.get("Columns")),
        transfer_syntax=syntax,
        orthanc_id=orthanc_instance_id(patient_id, study_uid, series_uid, sop_uid),
        attachment_uuid=attachment_uuid,
        size=size,
    )
