"""A reading centre's report for the tests: a DICOM SR (TID 1500 Measurement Report) built
with highdicom, in the study of the images it measures (Comprehensive 3D SR)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

__all__ = ["measurement_report", "part10"]


def measurement_report(
    images: Sequence[Dataset], *, institution: str = "Reading Centre", diameter_mm: float = 12.5
) -> Dataset:
    """One lesion diameter measured on ``images[0]``; the report lists all ``images`` as
    evidence and takes their patient and study (highdicom copies them from the evidence).
    It carries no IssuerOfPatientID, like most reports a reading centre sends back."""
    reader = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name="Reader^Rita"
        ),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="lesion 1"),
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Diameter, value=diameter_mm, unit=codes.UCUM.Millimeter
            )
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(images[0])],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=reader),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(images),
        content=report,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="VNA tests",
        institution_name=institution,
        is_complete=True,
    )
    if "IssuerOfPatientID" in sr:
        del sr.IssuerOfPatientID
    return sr


def part10(ds: Dataset) -> bytes:
    """``ds`` as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
