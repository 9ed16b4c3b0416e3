"""Unit tests for synthetic (synthetic DICOM study generator)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import zstandard
from pydicom.data import get_testdata_file
from pydicom.uid import UID, ExplicitVRLittleEndian

from synthetic import StudySpec, generate_studies, generate_study, write_study

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

SMALL_CT = StudySpec(series=2, slices=4, rows=64, columns=64)
SMALL_MR = StudySpec(modality="MR", series=2, slices=3, rows=48, columns=64)


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.fixture(scope="module")
def full_ct() -> list[pydicom.Dataset]:
    """One realistic-size CT series (512x512) with enough slices to span the trunk."""
    return list(generate_study(StudySpec(series=1, slices=9)))


# ----------------------------------------------------------------------------- spec


def test_spec_defaults() -> None:
    spec = StudySpec()
    assert (spec.modality, spec.series, spec.slices) == ("CT", 2, 40)
    assert (spec.rows, spec.columns) == (512, 512)
    assert spec.patient_id == "SYN0001"
    assert spec.patient_name == "Synthetic^Patient"
    assert spec.issuer is None
    assert spec.institution == "Synthetic Hospital"
    assert spec.seed == 0
    assert spec.study_date == "20260101"


def test_spec_is_frozen() -> None:
    spec = StudySpec()
    with pytest.raises(AttributeError):
        spec.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "US"},
        {"series": 0},
        {"slices": 0},
        {"rows": 0},
        {"columns": 5000},
        {"patient_id": ""},
        {"seed": -1},
        {"study_date": "2026-01-01"},
        {"study_date": "20261301"},
    ],
)
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        StudySpec(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- determinism


def test_generation_is_deterministic() -> None:
    first = [_to_bytes(ds) for ds in generate_study(SMALL_CT)]
    second = [_to_bytes(ds) for ds in generate_study(SMALL_CT)]
    assert len(first) == SMALL_CT.series * SMALL_CT.slices
    assert first == second


def test_mr_generation_is_deterministic() -> None:
    first = [_to_bytes(ds) for ds in generate_study(SMALL_MR)]
    second = [_to_bytes(ds) for ds in generate_study(SMALL_MR)]
    assert first == second


def test_deterministic_across_processes() -> None:
    """A fresh interpreter (different hash seed, different RNG state) gives the same bytes."""
    code = (
        "import hashlib, io, pydicom\n"
        "from synthetic import StudySpec, generate_study\n"
        "h = hashlib.sha256()\n"
        "for ds in generate_study(StudySpec(series=2, slices=2, rows=32, columns=32)):\n"
        "    b = io.BytesIO(); pydicom.dcmwrite(b, ds, enforce_file_format=True)\n"
        "    h.update(b.getvalue())\n"
        "print(h.hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    local = hashlib.sha256()
    for ds in generate_study(StudySpec(series=2, slices=2, rows=32, columns=32)):
        local.update(_to_bytes(ds))
    assert out.stdout.strip() == local.hexdigest()


def test_written_files_are_byte_identical(tmp_path: Path) -> None:
    a = write_study(SMALL_CT, tmp_path / "a")
    b = write_study(SMALL_CT, tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()


def test_different_seed_changes_uids_and_pixels() -> None:
    a = next(generate_study(SMALL_CT))
    b = next(generate_study(StudySpec(series=2, slices=4, rows=64, columns=64, seed=1)))
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.PixelData != b.PixelData


def test_different_patient_changes_uids() -> None:
    a = next(generate_study(SMALL_CT))
    b = next(
        generate_study(StudySpec(series=2, slices=4, rows=64, columns=64, patient_id="SYN0002"))
    )
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.FrameOfReferenceUID != b.FrameOfReferenceUID


# ------------------------------------------------------------------------------ UIDs


def test_uids_valid_and_unique() -> None:
    datasets = list(generate_study(SMALL_CT))
    sop_uids = [str(ds.SOPInstanceUID) for ds in datasets]
    series_uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    study_uids = {str(ds.StudyInstanceUID) for ds in datasets}
    frame_uids = {str(ds.FrameOfReferenceUID) for ds in datasets}

    assert len(set(sop_uids)) == len(sop_uids)
    assert len(series_uids) == SMALL_CT.series
    assert len(study_uids) == 1
    assert len(frame_uids) == 1
    all_uids = set(sop_uids) | series_uids | study_uids | frame_uids
    assert len(all_uids) == len(sop_uids) + len(series_uids) + 2
    for uid in all_uids:
        assert UID(uid).is_valid
        assert len(uid) <= 64
        assert uid.startswith("2.25.")
    for ds in datasets:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID


# ------------------------------------------------------------------------ attributes


def test_ct_attributes() -> None:
    datasets = list(generate_study(SMALL_CT))
    for ds in datasets:
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CT_IMAGE_STORAGE
        assert ds.Modality == "CT"
        assert ds.SpecificCharacterSet == "ISO_IR 100"
        assert ds.Manufacturer == "VNA Synthetic"
        assert ds.InstitutionName == "Synthetic Hospital"
        assert ds.PatientID == "SYN0001"
        assert str(ds.PatientName) == "Synthetic^Patient"
        assert "IssuerOfPatientID" not in ds
        assert len(ds.PatientBirthDate) == 8
        assert ds.PatientSex in ("M", "F")
        assert "ReferringPhysicianName" in ds
        assert ds.StudyDate == "20260101"
        assert ds.InstanceCreationDate == "20260101"
        assert ds.StudyID and ds.AccessionNumber and ds.StudyDescription
        assert ds.SeriesDescription
        assert (ds.Rows, ds.Columns) == (64, 64)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 16, 15)
        assert ds.PixelRepresentation == 1
        assert ds.SamplesPerPixel == 1
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert float(ds.RescaleIntercept) == -1024.0
        assert float(ds.RescaleSlope) == 1.0
        assert "WindowCenter" in ds and "WindowWidth" in ds
        assert float(ds.KVP) > 0
        assert float(ds.SliceThickness) > 0
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert len(ds.PixelSpacing) == 2
        assert ds["PixelData"].VR == "OW"
        arr = ds.pixel_array
        assert arr.shape == (64, 64)
        assert arr.dtype == np.int16

    for series_number in (1, 2):
        series = [ds for ds in datasets if ds.SeriesNumber == series_number]
        assert [ds.InstanceNumber for ds in series] == [1, 2, 3, 4]
        z = [float(ds.ImagePositionPatient[2]) for ds in series]
        steps = np.diff(z)
        assert np.allclose(steps, -float(series[0].SliceThickness))
        assert [float(ds.SliceLocation) for ds in series] == z
    assert len({ds.SeriesDescription for ds in datasets}) == 2


def test_issuer_is_written_when_set() -> None:
    ds = next(generate_study(StudySpec(slices=1, series=1, rows=32, columns=32, issuer="HOSP_A")))
    assert ds.IssuerOfPatientID == "HOSP_A"


def test_non_square_matrix() -> None:
    ds = next(generate_study(StudySpec(slices=1, series=1, rows=40, columns=72)))
    assert ds.pixel_array.shape == (40, 72)


def test_mr_attributes() -> None:
    datasets = list(generate_study(SMALL_MR))
    assert len(datasets) == 6
    for ds in datasets:
        assert ds.SOPClassUID == MR_IMAGE_STORAGE
        assert ds.Modality == "MR"
        assert ds.PixelRepresentation == 0
        assert ds.BitsAllocated == 16
        assert ds.HighBit == ds.BitsStored - 1
        assert float(ds.EchoTime) > 0
        assert float(ds.RepetitionTime) > float(ds.EchoTime)
        assert float(ds.MagneticFieldStrength) > 0
        assert "RescaleIntercept" not in ds
        arr = ds.pixel_array
        assert arr.shape == (48, 64)
        assert arr.dtype == np.uint16
        assert int(arr.max()) < 2**ds.BitsStored
        assert int(arr.max()) > 300  # tissue signal, not just noise
    t1, t2 = datasets[0], datasets[3]
    assert t1.SeriesDescription != t2.SeriesDescription
    assert float(t1.EchoTime) != float(t2.EchoTime)


def test_instances_do_not_share_elements() -> None:
    generator = generate_study(StudySpec(series=1, slices=3, rows=16, columns=16))
    first = next(generator)
    first.PatientID = "CHANGED"
    first.StudyInstanceUID = "1.2.3"
    second = next(generator)
    assert second.PatientID == "SYN0001"
    assert second.StudyInstanceUID != "1.2.3"


# ----------------------------------------------------------------------------- pixels


def test_ct_pixels_look_like_a_body(full_ct: list[pydicom.Dataset]) -> None:
    hu = np.stack([_hu(ds) for ds in full_ct])
    stored = np.stack([ds.pixel_array for ds in full_ct])
    # Outside the reconstruction circle the scanner writes -1024 HU (stored 0), noise-free.
    assert np.all(stored[:, :8, :8] == 0)
    assert np.all(stored[:, -8:, -8:] == 0)
    # Air inside the circle is noisy, so it is told from tissue by a threshold.
    air_fraction = float(np.mean(hu < -900))
    assert 0.2 < air_fraction < 0.8
    # Soft tissue dominates the body; bone is present on every slice.
    body = hu > -900
    soft = (hu > -150) & (hu < 150)
    assert soft.sum() > 0.5 * body.sum()
    for slice_hu in hu:
        assert np.count_nonzero(slice_hu > 500) > 50
    # Lungs in the upper (first) slices only.
    lung_counts = [int(np.count_nonzero((s > -900) & (s < -700))) for s in hu]
    assert lung_counts[0] > 10_000
    assert lung_counts[-1] < 1_000


def test_ct_noise_level(full_ct: list[pydicom.Dataset]) -> None:
    # Fat (-100 HU) is the only tissue class within +/-60 HU of -100, so the spread of
    # those pixels is the noise of the soft-tissue series (20 HU).
    hu = _hu(full_ct[len(full_ct) // 2])
    fat = hu[(hu > -160) & (hu < -40)]
    assert fat.size > 1000
    assert abs(float(np.mean(fat)) + 100.0) < 2.0
    assert 15.0 < float(np.std(fat)) < 25.0


def _zstd1_ratio(pixels: bytes) -> float:
    return len(pixels) / len(zstandard.ZstdCompressor(level=1).compress(pixels))


def _jpeg_ls_ratio(ds: pydicom.Dataset) -> float:
    jpeg_ls = pytest.importorskip("jpeg_ls")  # pyjpegls, which highdicom brings
    values = ds.pixel_array.astype(np.int32)
    shifted = (values - values.min()).astype(np.uint16)  # CharLS codes unsigned samples
    return len(ds.PixelData) / len(jpeg_ls.encode(shifted))


@pytest.fixture(scope="module")
def real_ct() -> pydicom.Dataset:
    """A real 512x512 CT slice from pydicom-data (never downloaded: tests run offline)."""
    path = get_testdata_file("693_UNCI.dcm", download=False)
    assert path is not None, "pydicom-data is missing: pip install -e '.[test]'"
    return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def ct_of_every_kernel() -> list[pydicom.Dataset]:
    """512x512 slices from pelvis to chest of each CT series (soft tissue, lung, bone)."""
    return list(generate_study(StudySpec(series=3, slices=4)))


def test_ct_slices_compress_like_a_real_slice_with_zstd(
    real_ct: pydicom.Dataset, ct_of_every_kernel: list[pydicom.Dataset]
) -> None:
    """zstd level 1 (the blob store's default) packs a synthetic slice within 25 % of what it
    makes of a real one, so footprints measured on synthetic studies are not flattered."""
    real = _zstd1_ratio(real_ct.PixelData)
    for ds in ct_of_every_kernel:
        ratio = _zstd1_ratio(ds.PixelData)
        assert abs(ratio / real - 1.0) < 0.25, (ds.SeriesDescription, ratio, real)


def test_ct_slices_compress_like_a_real_slice_with_jpeg_ls(
    real_ct: pydicom.Dataset, ct_of_every_kernel: list[pydicom.Dataset]
) -> None:
    """The texture, not only the noise level, is like a real slice's: a predictive lossless
    codec (JPEG-LS, what a cold tier may re-encode with) packs it within 25 % as well."""
    real = _jpeg_ls_ratio(real_ct)
    for ds in ct_of_every_kernel:
        ratio = _jpeg_ls_ratio(ds)
        assert abs(ratio / real - 1.0) < 0.25, (ds.SeriesDescription, ratio, real)


def test_anatomy_varies_smoothly_along_z() -> None:
    datasets = list(generate_study(StudySpec(series=1, slices=30, rows=128, columns=128)))
    body = np.stack([_hu(ds) > -900 for ds in datasets])  # air is noisy
    area = body.sum(axis=(1, 2)).astype(float)
    # Body cross-section changes by only a few percent between neighbouring slices.
    assert np.max(np.abs(np.diff(area)) / area[:-1]) < 0.1
    # ... but the anatomy is not the same on every slice.
    assert not np.array_equal(datasets[0].PixelData, datasets[-1].PixelData)


def test_series_have_different_noise() -> None:
    datasets = list(generate_study(StudySpec(series=2, slices=1, rows=64, columns=64)))
    assert datasets[0].PixelData != datasets[1].PixelData


# ---------------------------------------------------------------------------- writing


def test_write_study_layout_and_round_trip(tmp_path: Path) -> None:
    expected = {
        (int(ds.SeriesNumber), int(ds.InstanceNumber)): ds.pixel_array
        for ds in generate_study(SMALL_CT)
    }
    paths = write_study(SMALL_CT, tmp_path)
    assert len(paths) == len(expected)
    assert paths == [tmp_path / str(s) / f"{i}.dcm" for s, i in expected]
    for path in paths:
        assert path.is_file()
        raw = path.read_bytes()
        assert raw[:128] == b"\x00" * 128
        assert raw[128:132] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert path.parent.name == str(ds.SeriesNumber)
        assert path.stem == str(ds.InstanceNumber)
        key = (int(ds.SeriesNumber), int(ds.InstanceNumber))
        np.testing.assert_array_equal(ds.pixel_array, expected[key])


def test_write_mr_study(tmp_path: Path) -> None:
    paths = write_study(SMALL_MR, tmp_path)
    assert len(paths) == 6
    ds = pydicom.dcmread(paths[-1])
    assert ds.SOPClassUID == MR_IMAGE_STORAGE
    assert ds.pixel_array.dtype == np.uint16


# --------------------------------------------------------------------- multi-study


def test_generate_studies_are_distinct() -> None:
    base = StudySpec(series=1, slices=2, rows=32, columns=32, seed=7)
    specs = list(generate_studies(5, base))
    assert len(specs) == 5
    assert [s.patient_id for s in specs] == [f"SYN000{k}" for k in range(1, 6)]
    assert len({s.patient_name for s in specs}) == 5
    assert [s.seed for s in specs] == [7, 8, 9, 10, 11]
    assert [s.study_date for s in specs] == [f"2026010{k}" for k in range(1, 6)]
    for spec in specs:
        assert (spec.modality, spec.series, spec.slices, spec.rows) == ("CT", 1, 2, 32)
        assert spec.institution == base.institution
    study_uids = {next(generate_study(s)).StudyInstanceUID for s in specs}
    assert len(study_uids) == 5


def test_generate_studies_without_numeric_suffix() -> None:
    base = StudySpec(patient_id="DEMO", patient_name="Demo", study_date="20251231")
    specs = list(generate_studies(3, base))
    assert len({s.patient_id for s in specs}) == 3
    assert len({s.patient_name for s in specs}) == 3
    assert specs[0].patient_id == "DEMO"
    assert [s.study_date for s in specs] == ["20251231", "20260101", "20260102"]


def test_generate_studies_edge_counts() -> None:
    assert list(generate_studies(0, StudySpec())) == []
    with pytest.raises(ValueError):
        list(generate_studies(-1, StudySpec()))
