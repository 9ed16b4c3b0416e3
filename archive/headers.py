"""Read what the study index needs from the header part of a stored DICOM file.

The storage area already holds every file's header (the bytes before Pixel Data) when
Orthanc hands the file over; reading ~25 attributes from those ~2 KB on the indexer thread
is far cheaper than Orthanc's stored-instance callback, which serialises C-STOREs and
converts the whole data set to JSON.
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from typing import IO, Any

import pydicom
from pydicom.errors import InvalidDicomError

from archive.catalog import InstanceRecord
from security.api import InvalidInput

__all__ = ["INDEXED_KEYWORDS", "header_record", "instance_record", "orthanc_instance_id"]

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
    "BitsAllocated",
)


def orthanc_instance_id(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Orthanc's public id of an instance: SHA-1 of the four identifiers, in 5 groups."""
    digest = hashlib.sha1(  # noqa: S324 - Orthanc's naming scheme, not a security use
        f"{patient_id}|{study_uid}|{series_uid}|{sop_uid}".encode()
    ).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip().split("\\")[0])
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, (list, dict)):
        return None
    text = str(value).strip()
    return text or None


def instance_record(
    tags: dict[str, Any],
    issuer_fallback: str,
    *,
    orthanc_id: str | None,
    attachment_uuid: str | None,
    size: int | None,
    transfer_syntax: str | None,
) -> InstanceRecord:
    """Build the index row of an instance from Orthanc's simplified tags.

    The patient is qualified by IssuerOfPatientID, else by the sending institution, so equal
    patient IDs from two hospitals stay two patients.
    """
    return InstanceRecord(
        sop_uid=str(tags["SOPInstanceUID"]),
        series_uid=str(tags["SeriesInstanceUID"]),
        study_uid=str(tags["StudyInstanceUID"]),
        patient_id=_str(tags.get("PatientID")) or "",
        issuer=_str(tags.get("IssuerOfPatientID")) or issuer_fallback,
        patient_name=_str(tags.get("PatientName")),
        birth_date=_str(tags.get("PatientBirthDate")),
        sex=_str(tags.get("PatientSex")),
        study_date=_str(tags.get("StudyDate")),
        study_time=_str(tags.get("StudyTime")),
        accession_number=_str(tags.get("AccessionNumber")),
        study_id=_str(tags.get("StudyID")),
        study_description=_str(tags.get("StudyDescription")),
        referring_physician=_str(tags.get("ReferringPhysicianName")),
        modality=_str(tags.get("Modality")),
        series_number=_int(tags.get("SeriesNumber")),
        series_description=_str(tags.get("SeriesDescription")),
        series_date=_str(tags.get("SeriesDate")),
        sop_class_uid=_str(tags.get("SOPClassUID")),
        instance_number=_int(tags.get("InstanceNumber")),
        number_of_frames=_int(tags.get("NumberOfFrames")),
        rows=_int(tags.get("Rows")),
        columns=_int(tags.get("Columns")),
        bits_allocated=_int(tags.get("BitsAllocated")),
        transfer_syntax=transfer_syntax,
        orthanc_id=orthanc_id,
        attachment_uuid=attachment_uuid,
        size=size,
    )


def header_record(
    header: bytes | IO[bytes], issuer_fallback: str, *, attachment_uuid: str, size: int
) -> InstanceRecord:
    """The index row of an instance from its header (Part 10 bytes up to Pixel Data).

    ``header`` may also be an open binary file holding a whole Part 10 file (the gateway
    checks STOW-RS parts with the very code that will index them).

    The patient is qualified by IssuerOfPatientID, else by the sending institution, so equal
    patient IDs from two hospitals stay two patients.
    """
    try:
        ds = pydicom.dcmread(
            BytesIO(header) if isinstance(header, bytes) else header,
            stop_before_pixels=True,
            specific_tags=list(INDEXED_KEYWORDS),
        )
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise InvalidInput(f"the stored file {attachment_uuid} has an unreadable header") from exc
    tags = {keyword: ds.get(keyword) for keyword in INDEXED_KEYWORDS}
    sop_uid = _str(tags["SOPInstanceUID"])
    study_uid = _str(tags["StudyInstanceUID"])
    series_uid = _str(tags["SeriesInstanceUID"])
    if not (sop_uid and study_uid and series_uid):
        raise InvalidInput(f"the stored file {attachment_uuid} lacks its UIDs")
    meta = getattr(ds, "file_meta", None)
    return instance_record(
        tags,
        issuer_fallback,
        orthanc_id=orthanc_instance_id(
            _str(tags["PatientID"]) or "", study_uid, series_uid, sop_uid
        ),
        attachment_uuid=attachment_uuid,
        size=size,
        transfer_syntax=_str(meta.get("TransferSyntaxUID")) if meta is not None else None,
    )
