"""Result objects in the viewer: a DICOM SEG (a mask, as an AI model would produce) and an
SR measurement report (TID 1500), both built with highdicom and stored over STOW-RS into
a study, are listed by the viewer next to the images and the SEG's frames are fetched."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from dicomweb_client.api import DICOMwebClient
from pydicom.sr.codedict import codes

from tests.integration.browser import skip_without_browser
from tests.integration.harness import wait_until
from tests.integration.sites import ViewerSite
from tests.report_sr import measurement_report

skip_without_browser()  # the viewer's session fixtures fail instead under CI

from playwright.sync_api import Browser  # noqa: E402


def _segmentation(images: list[object]) -> hd.seg.Segmentation:
    ordered = sorted(images, key=lambda d: int(d.InstanceNumber))  # type: ignore[attr-defined]
    rows, columns = int(ordered[0].Rows), int(ordered[0].Columns)  # type: ignore[attr-defined]
    mask = np.zeros((len(ordered), rows, columns), dtype=bool)
    mask[:, rows // 4 : rows // 2, columns // 4 : columns // 2] = True  # a square "lesion"
    algorithm = hd.AlgorithmIdentificationSequence(
        name="vna-test-model", version="1.0", family=codes.DCM.ArtificialIntelligence
    )
    return hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="lesion",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Neoplasm,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="VNA tests",
        manufacturer_model_name="vna-test-model",
        software_versions="1.0",
        device_serial_number="1",
    )


def test_seg_and_sr_show_in_the_viewer(site: ViewerSite, browser: Browser) -> None:
    uid = site.studies["VW-A1"]
    writer = site.issuer.mint(
        subject="ai-worker", institution="Hospital A", scopes=("dicom.read", "dicom.write")
    )
    client = DICOMwebClient(
        url=f"{site.url}/dicom-web", headers={"Authorization": f"Bearer {writer}"}
    )
    images = client.retrieve_study(uid)
    images = [d for d in images if getattr(d, "Modality", "") == "CT"]
    assert images
    seg = _segmentation(images)
    sr = measurement_report(images, institution="Hospital A")
    stored = client.store_instances([seg, sr], study_instance_uid=uid)
    assert "00081198" not in stored or not stored["00081198"].get("Value")  # nothing failed

    token = site.token("Hospital A")

    def indexed() -> bool:
        modalities = {s["00080060"]["Value"][0] for s in site.qido(token, f"/studies/{uid}/series")}
        return {"SEG", "SR"} <= modalities

    wait_until(indexed, "the SEG and SR series to be indexed")

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(f"window.sessionStorage.setItem('vna.viewer.token', {token!r});")
    page = context.new_page()
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/dicom-web/" in r.url else None)
    try:
        page.goto(f"{site.url}/viewer/share/viewer?StudyInstanceUIDs={uid}&viewportRendering=cpu")
        page.locator("canvas.cornerstone-canvas").first.wait_for(state="visible", timeout=90_000)

        def listed() -> bool:
            text = page.inner_text("body")
            return "SEG" in text and "SR" in text

        wait_until(listed, "the SEG and SR series in the viewer's study panel", deadline=90)
        seg_series = str(seg.SeriesInstanceUID)
        wait_until(
            lambda: any(seg_series in url for url in fetched),
            "the viewer to read the SEG series",
            deadline=90,
        )
    finally:
        context.close()
