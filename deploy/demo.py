"""Load synthetic studies into a running archive over DICOM, as a modality would."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE

from archive.plugin import open_store
from archive.settings import Settings
from archive.synthetic import StudySpec, generate_studies, generate_study
from deploy.dimse_access import apply_registrations
from security.errors import VnaError

__all__ = ["DEMO_AE", "DEMO_INSTITUTION", "load_demo"]

DEMO_AE = "VNADEMO"
DEMO_INSTITUTION = "Demo Hospital"


def load_demo(
    settings: Settings,
    studies: int,
    slices: int,
    on_total: Callable[[int], None],
    on_sent: Callable[[], None],
) -> int:
    """Send ``studies`` synthetic studies (alternating CT and MR); returns instances stored."""
    if settings.dicom.tls:
        raise VnaError(
            "the demo sends plain DICOM and dicom.tls is on: send studies with a TLS client "
            "(docs/dimse-security.md) or load the demo into a home without TLS"
        )
    store = open_store(settings)
    try:
        # the demo sends from this machine: its AE is bound to loopback like any other
        store.catalog.add_institution(DEMO_INSTITUTION, DEMO_AE, "127.0.0.1")
    finally:
        store.catalog.close()
    apply_registrations(settings)  # Orthanc admits the AE at once, not at the next sync
    specs = []
    for i, spec in enumerate(
        generate_studies(
            studies,
            StudySpec(
                slices=slices,
                patient_id="DEMO0001",
                patient_name="Demo^Patient",
                institution=DEMO_INSTITUTION,
            ),
        )
    ):
        if i % 2:
            spec = dataclasses.replace(spec, modality="MR", rows=256, columns=256)
        specs.append(spec)
    on_total(sum(s.series * s.slices for s in specs))
    ae = AE(ae_title=DEMO_AE)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_aet)
    if not assoc.is_established:
        raise VnaError(
            f"could not associate with {settings.dicom_aet} on port "
            f"{settings.dicom_port}: is the archive running?"
        )
    stored = 0
    try:
        for spec in specs:
            for ds in generate_study(spec):
                status = assoc.send_c_store(ds)
                if not status or status.Status != 0:
                    raise VnaError(
                        f"the archive refused a demo instance (status "
                        f"{getattr(status, 'Status', 'none')}); see its log"
                    )
                stored += 1
                on_sent()
    finally:
        assoc.release()
    return stored
