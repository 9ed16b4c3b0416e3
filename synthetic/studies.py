"""Deterministic synthetic DICOM study generator.

Produces realistic-looking CT and MR studies (trunk anatomy from pelvis to upper chest)
for demos, tests and benchmarks. Everything -- UIDs, dates, pixel data -- is derived
from the :class:`StudySpec`, so generating the same spec twice yields byte-identical
files.

Pixel data is built from a per-slice tissue label map (ellipses whose sizes follow
ellipsoids along *z*, so anatomy varies smoothly from slice to slice), mapped to
Hounsfield units (CT) or signal intensities (MR) and overlaid with noise: for CT, noise
correlated over a few pixels across the whole reconstruction circle, calibrated so that a
slice compresses like a real 512x512 CT slice (zstd level 1 about 2x, lossless JPEG-LS
about 4.5x); for MR, Rician-like white noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

__all__ = ["StudySpec", "generate_studies", "generate_study", "write_study"]

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")

MANUFACTURER = "VNA Synthetic"
MODEL_NAME = "SynthScan"
_UID_NAMESPACE = "vna-synthetic-v1"
_UID_NAMESPACE_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "urn:vna:synthetic:v1")

# Tissue labels of the label map.
_AIR, _FAT, _MUSCLE, _LUNG, _BLOOD, _LIVER, _SPLEEN, _KIDNEY = 0, 1, 2, 3, 4, 5, 6, 7
_CORTICAL, _CANCELLOUS, _FLUID, _GAS, _DISC, _BOWEL = 8, 9, 10, 11, 12, 13
_N_LABELS = 14

# Hounsfield units per label.
_CT_HU = np.array(
    [-1024, -100, 45, -820, 40, 60, 48, 32, 700, 250, 8, -950, 85, 30], dtype=np.float32
)
# MR signal intensities per label (12-bit range), T1- / T2- / PD-like contrasts.
_MR_T1 = np.array(
    [0, 1100, 350, 15, 60, 520, 380, 420, 30, 700, 150, 10, 300, 300], dtype=np.float32
)
_MR_T2 = np.array(
    [0, 800, 250, 10, 80, 300, 650, 700, 30, 550, 1900, 10, 900, 400], dtype=np.float32
)
_MR_PD = np.array(
    [0, 1000, 600, 25, 120, 700, 800, 820, 40, 800, 1200, 15, 850, 650], dtype=np.float32
)

_ANATOMY_SCALE_MM = 180.0  # anatomy is modelled in units of 180 mm
_CT_FOV_MM = 360.0
# CT texture, calibrated against a real 512x512 CT slice (pydicom-data's 693_UNCI.dcm: zstd
# level 1 packs it about 2.0x, lossless JPEG-LS about 4.6x; the earlier phantom, white noise
# inside the body only, packed 3.7-4.7x with zstd and flattered the archive's footprint).
# tests/unit/test_synthetic.py keeps the zstd ratio near that file's.
_TEXTURE_STEP = 8  # pixels between the knots of the correlated noise
_WHITE_FRACTION = 0.1  # white noise, as a fraction of the series' noise level
_MR_FOV_MM = 380.0
_MR_MAX = 4095  # BitsStored 12


@dataclass(frozen=True, slots=True)
class _CTSeries:
    description: str
    kernel: str
    window_center: int
    window_width: int
    noise_hu: float


@dataclass(frozen=True, slots=True)
class _MRSeries:
    description: str
    scanning_sequence: str
    sequence_variant: str
    echo_time: float
    repetition_time: float
    echo_train_length: int
    flip_angle: float
    contrast: npt.NDArray[np.float32]
    window_center: int
    window_width: int
    noise: float


_CT_SERIES = (
    _CTSeries("Soft Tissue", "STANDARD", 40, 400, 20.0),
    _CTSeries("Lung", "LUNG", -600, 1500, 30.0),
    _CTSeries("Bone", "BONE", 500, 2000, 28.0),
)
_MR_SERIES = (
    _MRSeries("Ax T1 SE", "SE", "NONE", 12.0, 550.0, 1, 90.0, _MR_T1, 600, 1200, 14.0),
    _MRSeries("Ax T2 TSE", "SE", "SK", 95.0, 4200.0, 16, 150.0, _MR_T2, 800, 1600, 16.0),
    _MRSeries("Ax PD TSE", "SE", "SK", 22.0, 3000.0, 8, 150.0, _MR_PD, 650, 1300, 16.0),
)


@dataclass(frozen=True, slots=True)
class StudySpec:
    """Description of one synthetic study.

    Parameters
    ----------
    modality : str
        ``"CT"`` (CT Image Storage, signed 16-bit HU + 1024) or ``"MR"``
        (MR Image Storage, unsigned 12-bit stored in 16).
    series : int
        Number of series in the study (CT: soft tissue / lung / bone kernels;
        MR: T1 / T2 / PD; cycled when more are requested).
    slices : int
        Number of axial slices per series.
    rows, columns : int
        Image matrix size.
    patient_id : str
        Patient ID (LO, at most 64 characters).
    patient_name : str
        Patient name in DICOM PN form (``Family^Given``).
    issuer : str or None
        Issuer of Patient ID; the attribute is omitted when ``None``.
    institution : str
        Institution name.
    seed : int
        Non-negative seed; drives UIDs, demographics, anatomy and noise.
    study_date : str
        Study date as ``YYYYMMDD``.

    Raises
    ------
    ValueError
        If any field is out of range.
    """

    modality: str = "CT"
    series: int = 2
    slices: int = 40
    rows: int = 512
    columns: int = 512
    patient_id: str = "SYN0001"
    patient_name: str = "Synthetic^Patient"
    issuer: str | None = None
    institution: str = "Synthetic Hospital"
    seed: int = 0
    study_date: str = "20260101"

    def __post_init__(self) -> None:
        if self.modality not in ("CT", "MR"):
            raise ValueError(f"modality must be 'CT' or 'MR', got {self.modality!r}")
        if self.series < 1:
            raise ValueError(f"series must be >= 1, got {self.series}")
        if self.slices < 1:
            raise ValueError(f"slices must be >= 1, got {self.slices}")
        if not (8 <= self.rows <= 4096 and 8 <= self.columns <= 4096):
            raise ValueError(f"rows/columns must be in [8, 4096], got {self.rows}x{self.columns}")
        if not self.patient_id or len(self.patient_id) > 64:
            raise ValueError("patient_id must be 1..64 characters")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        _parse_date(self.study_date)


# --------------------------------------------------------------------------- helpers


def _parse_date(value: str) -> date:
    """Parse a DICOM DA value (``YYYYMMDD``), raising ``ValueError`` when invalid."""
    if len(value) != 8 or not value.isdigit():
        raise ValueError(f"study_date must be YYYYMMDD, got {value!r}")
    return datetime.strptime(value, "%Y%m%d").date()


def _identity(spec: StudySpec) -> list[str]:
    """Strings that identify a study; every derived value is a function of these."""
    return [_UID_NAMESPACE, spec.patient_id, str(spec.seed), spec.issuer or "", spec.modality]


def _uid(spec: StudySpec, *parts: str) -> UID:
    """Deterministic ``2.25.<n>`` UID derived from the seed and patient identity.

    Notes
    -----
    ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`` ignores
    ``entropy_srcs`` and returns a random UUID4-based UID, so it cannot be used for
    reproducible output. A name-based UUID (version 5, RFC 4122) rendered under the
    ``2.25`` arc is deterministic and still a well-formed UUID-derived UID.
    """
    name = "\x00".join([*_identity(spec), *parts])
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE_UUID, name).int}")


def _hash_int(spec: StudySpec, *parts: str) -> int:
    """Deterministic non-negative integer derived from the seed and patient identity."""
    digest = hashlib.sha256("\x00".join([*_identity(spec), *parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _ds(value: float) -> str:
    """Format a number as a valid DICOM DS string (at most 16 characters)."""
    text = f"{value:.8g}"
    return "0" if text == "-0" else text


def _slice_thickness(slices: int) -> float:
    """Pick a clinically plausible slice thickness for the requested slice count."""
    if slices <= 80:
        return 5.0
    if slices <= 160:
        return 2.5
    if slices <= 320:
        return 1.25
    return 0.625


def _envelope(t: float, center: float, half: float) -> float:
    """Cross-section scale of an ellipsoid spanning ``center +/- half`` along ``t``."""
    u = (t - center) / half
    return math.sqrt(1.0 - u * u) if abs(u) < 1.0 else 0.0


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True, slots=True)
class _Organ:
    label: int
    cx: float
    cy: float
    ax: float
    ay: float
    tc: float
    th: float


@dataclass(frozen=True, slots=True)
class _Anatomy:
    """Per-study anatomical parameters (body habitus and organ placement)."""

    width: float
    depth: float
    fat: float
    organs: tuple[_Organ, ...]
    bowel: tuple[_Organ, ...]


def _make_anatomy(spec: StudySpec) -> _Anatomy:
    """Draw the per-study anatomy deterministically from the spec's seed."""
    rng = np.random.default_rng([spec.seed, 0xA7A7])
    j = rng.uniform(0.92, 1.08, size=12)
    organs = (
        _Organ(_LIVER, -0.34, -0.02, 0.36 * j[0], 0.31 * j[1], 0.58, 0.15),
        _Organ(_SPLEEN, 0.45, 0.12, 0.13 * j[2], 0.19 * j[3], 0.58, 0.10),
        _Organ(_BOWEL, 0.26, -0.18, 0.17 * j[4], 0.12 * j[5], 0.60, 0.08),  # stomach
        _Organ(_GAS, 0.26, -0.24, 0.10 * j[4], 0.05 * j[5], 0.61, 0.06),  # fundal gas
        _Organ(_KIDNEY, -0.30, 0.25, 0.09 * j[6], 0.12 * j[7], 0.44, 0.10),
        _Organ(_KIDNEY, 0.30, 0.25, 0.09 * j[7], 0.12 * j[6], 0.46, 0.10),
        _Organ(_FLUID, 0.0, -0.16, 0.20 * j[8], 0.15 * j[9], 0.05, 0.10),  # bladder
    )
    contents = (_BOWEL, _GAS, _FLUID, _BOWEL, _BOWEL, _GAS)
    bowel = tuple(
        _Organ(
            label=contents[k % len(contents)],
            cx=float(rng.uniform(-0.45, 0.45)),
            cy=float(rng.uniform(-0.35, 0.12)),
            ax=float(rng.uniform(0.05, 0.11)),
            ay=float(rng.uniform(0.04, 0.08)),
            tc=float(rng.uniform(0.12, 0.50)),
            th=float(rng.uniform(0.04, 0.10)),
        )
        for k in range(24)
    )
    return _Anatomy(
        width=0.86 * float(j[10]),
        depth=0.62 * float(j[11]),
        fat=float(rng.uniform(0.04, 0.08)),
        organs=organs,
        bowel=bowel,
    )


def _paint(
    labels: npt.NDArray[np.uint8],
    xs: npt.NDArray[np.float32],
    ys: npt.NDArray[np.float32],
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    label: int,
) -> None:
    """Paint a filled axis-aligned ellipse into ``labels`` (bounding box only)."""
    if ax <= 0.0 or ay <= 0.0:
        return
    c0 = int(np.searchsorted(xs, cx - ax))
    c1 = int(np.searchsorted(xs, cx + ax, side="right"))
    r0 = int(np.searchsorted(ys, cy - ay))
    r1 = int(np.searchsorted(ys, cy + ay, side="right"))
    if c0 >= c1 or r0 >= r1:
        return
    dx = np.square((xs[c0:c1] - cx) / ax)
    dy = np.square((ys[r0:r1] - cy) / ay)
    mask = dy[:, None] + dx[None, :] <= 1.0
    labels[r0:r1, c0:c1][mask] = label


def _label_slice(
    anatomy: _Anatomy,
    t: float,
    xs: npt.NDArray[np.float32],
    ys: npt.NDArray[np.float32],
) -> npt.NDArray[np.uint8]:
    """Build the tissue label map of the axial slice at normalised height ``t``.

    ``t = 0`` is the pelvis, ``t = 1`` the upper chest; all structures are ellipsoids
    so their cross-sections change smoothly with ``t``.
    """
    labels = np.zeros((ys.size, xs.size), dtype=np.uint8)
    # Body outline: wider at hips and shoulders, narrower at the waist.
    a = anatomy.width * (1.0 + 0.05 * math.cos(2.0 * math.pi * t))
    b = anatomy.depth * (1.0 + 0.04 * math.sin(math.pi * t))
    cy = 0.04
    f = anatomy.fat
    _paint(labels, xs, ys, 0.0, cy, a, b, _FAT)  # subcutaneous fat
    _paint(labels, xs, ys, 0.0, cy, a - f, b - f, _MUSCLE)  # body wall
    _paint(labels, xs, ys, 0.0, cy - 0.02, a - f - 0.05, b - f - 0.08, _FAT)  # visceral fat

    # Lungs (chest) and heart.
    lung = _envelope(t, 0.92, 0.28)
    for side in (-1.0, 1.0):
        lx, ly = side * 0.40 * a / 0.86, cy - 0.02
        _paint(labels, xs, ys, lx, ly, 0.30 * lung * a / 0.86, 0.41 * lung * b / 0.62, _LUNG)
    heart = _envelope(t, 0.76, 0.12)
    _paint(labels, xs, ys, 0.08, cy - 0.14, 0.22 * heart, 0.19 * heart, _BLOOD)

    # Solid organs, stomach, kidneys, bladder, bowel loops.
    for organ in (*anatomy.organs, *anatomy.bowel):
        k = _envelope(t, organ.tc, organ.th)
        if k > 0.0:
            _paint(labels, xs, ys, organ.cx, organ.cy, organ.ax * k, organ.ay * k, organ.label)

    # Pelvic bones: iliac wings as cortical rings around marrow.
    iliac = _envelope(t, 0.14, 0.13)
    for side in (-1.0, 1.0):
        _paint(labels, xs, ys, side * 0.47, 0.14, 0.18 * iliac, 0.07 * iliac, _CORTICAL)
        _paint(labels, xs, ys, side * 0.47, 0.14, 0.15 * iliac, 0.045 * iliac, _CANCELLOUS)

    # Ribs (lower chest and upper abdomen) and sternum.
    rib = _envelope(t, 0.85, 0.30)
    if rib > 0.2:
        ra, rb = a - f - 0.03, b - f - 0.03
        for k in range(14):
            angle = math.pi * (0.10 + 0.80 * k / 13.0)  # skip the spine and the sternum
            for side in (-1.0, 1.0):
                x = side * ra * math.sin(angle)
                y = cy - rb * math.cos(angle)
                _paint(labels, xs, ys, x, y, 0.030 * rib, 0.022 * rib, _CORTICAL)
                _paint(labels, xs, ys, x, y, 0.016 * rib, 0.010 * rib, _CANCELLOUS)
    sternum = _envelope(t, 0.82, 0.18)
    _paint(labels, xs, ys, 0.0, cy - b + f + 0.04, 0.06 * sternum, 0.03 * sternum, _CORTICAL)
    _paint(labels, xs, ys, 0.0, cy - b + f + 0.04, 0.045 * sternum, 0.018 * sternum, _CANCELLOUS)

    # Great vessels.
    _paint(labels, xs, ys, 0.05, cy + 0.17, 0.045, 0.045, _BLOOD)  # aorta
    ivc = _envelope(t, 0.45, 0.40)
    _paint(labels, xs, ys, -0.09, cy + 0.15, 0.045 * ivc, 0.035 * ivc, _BLOOD)

    # Paraspinal muscles and spine (vertebral bodies alternate with discs along z).
    vy = cy + b * 0.55
    for side in (-1.0, 1.0):
        _paint(labels, xs, ys, side * 0.12, vy + 0.16, 0.10, 0.08, _MUSCLE)
    if math.cos(2.0 * math.pi * t / 0.065) > -0.6:
        _paint(labels, xs, ys, 0.0, vy, 0.09, 0.08, _CORTICAL)
        _paint(labels, xs, ys, 0.0, vy, 0.072, 0.062, _CANCELLOUS)
    else:
        _paint(labels, xs, ys, 0.0, vy, 0.085, 0.075, _DISC)
    _paint(labels, xs, ys, 0.0, vy + 0.13, 0.065, 0.06, _CORTICAL)  # posterior arch
    _paint(labels, xs, ys, 0.0, vy + 0.125, 0.035, 0.035, _FLUID)  # spinal canal
    return labels


# --------------------------------------------------------------------------- pixels


def _coordinates(
    rows: int, columns: int, spacing_mm: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Normalised patient x (per column) and y (per row) coordinates of pixel centres."""
    scale = spacing_mm / _ANATOMY_SCALE_MM
    xs = ((np.arange(columns, dtype=np.float32) - (columns - 1) / 2.0) * scale).astype(np.float32)
    ys = ((np.arange(rows, dtype=np.float32) - (rows - 1) / 2.0) * scale).astype(np.float32)
    return xs, ys


def _lerp_weights(
    size: int, step: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Knot index and linear weights of each of ``size`` pixels on a grid of knots every
    ``step`` pixels."""
    position = np.arange(size, dtype=np.float32) / np.float32(step)
    index = position.astype(np.intp)
    upper = (position - index).astype(np.float32)
    return index, np.float32(1.0) - upper, upper


def _correlated_noise(
    rng: np.random.Generator, rows: int, columns: int, step: int
) -> npt.NDArray[np.float32]:
    """Noise correlated over about ``step`` pixels, of standard deviation about 1.

    White noise on a coarse grid of knots, bilinearly interpolated: gathers and elementwise
    arithmetic only (no BLAS), so every machine computes the same bits.
    """
    r, r0, r1 = _lerp_weights(rows, step)
    c, c0, c1 = _lerp_weights(columns, step)
    knots = rng.standard_normal((rows // step + 2, columns // step + 2), dtype=np.float32)
    along_rows = knots[r] * r0[:, None] + knots[r + 1] * r1[:, None]
    field = along_rows[:, c] * c0 + along_rows[:, c + 1] * c1
    # bilinear weights shrink the variance to (r0^2 + r1^2)(c0^2 + c1^2), 4/9 on average
    field *= np.float32(1.5)
    noise: npt.NDArray[np.float32] = field.astype(np.float32, copy=False)  # float32 already
    return noise


def _ct_pixels(
    labels: npt.NDArray[np.uint8],
    rng: np.random.Generator,
    noise_hu: float,
    in_view: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int16]:
    """Stored CT values (HU + 1024) with the texture of a reconstructed slice.

    Noise covers the whole reconstruction circle ``in_view`` (air included), mostly
    correlated over a few pixels as filtered back-projection makes it, plus a little white
    noise; outside the circle the scanner writes a constant (-1024 HU here). That texture
    compresses like a real slice (see ``_TEXTURE_STEP``), where white noise inside the
    body only did not.
    """
    rows, columns = labels.shape
    hu = _CT_HU[labels]
    hu += _correlated_noise(rng, rows, columns, _TEXTURE_STEP) * np.float32(noise_hu)
    hu += rng.standard_normal((rows, columns), dtype=np.float32) * np.float32(
        noise_hu * _WHITE_FRACTION
    )
    np.clip(hu, -2048.0, 3071.0, out=hu)
    hu[~in_view] = -1024.0
    stored: npt.NDArray[np.int16] = np.rint(hu + np.float32(1024.0)).astype("<i2")
    return stored


def _mr_pixels(
    labels: npt.NDArray[np.uint8],
    rng: np.random.Generator,
    contrast: npt.NDArray[np.float32],
    noise: float,
    xs: npt.NDArray[np.float32],
    ys: npt.NDArray[np.float32],
) -> npt.NDArray[np.uint16]:
    """MR magnitude image: contrast x smooth coil bias field, Rician-like noise."""
    bias = (np.float32(1.1) - np.float32(0.25) * np.square(ys))[:, None] * (
        np.float32(1.0) - np.float32(0.15) * np.square(xs)
    )[None, :]
    signal = contrast[labels] * bias
    signal += rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(noise)
    np.abs(signal, out=signal)
    np.clip(signal, 0.0, float(_MR_MAX), out=signal)
    stored: npt.NDArray[np.uint16] = np.rint(signal).astype("<u2")
    return stored


# --------------------------------------------------------------------------- datasets


def _study_level(spec: StudySpec) -> pydicom.Dataset:
    """Patient / study / frame-of-reference / equipment attributes shared by all slices."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    h = _hash_int(spec, "demographics")
    birth = date(1935 + h % 60, 1 + (h >> 8) % 12, 1 + (h >> 16) % 28)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    if spec.issuer is not None:
        ds.IssuerOfPatientID = spec.issuer
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = "F" if (h >> 24) % 2 else "M"
    ds.StudyInstanceUID = _uid(spec, "study")
    ds.StudyDate = spec.study_date
    ds.StudyTime = f"{8 + (h >> 32) % 10:02d}{(h >> 40) % 60:02d}00"
    ds.StudyID = str(1 + _hash_int(spec, "study-id") % 99_999)
    ds.AccessionNumber = f"SYN{_hash_int(spec, 'accession') % 10**10:010d}"
    ds.ReferringPhysicianName = "Referrer^Synthetic"
    if spec.modality == "CT":
        ds.StudyDescription = "CT CHEST ABDOMEN PELVIS"
    else:
        ds.StudyDescription = "MR ABDOMEN PELVIS"
    ds.FrameOfReferenceUID = _uid(spec, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.InstitutionName = spec.institution
    ds.StationName = "SYNTH01"
    ds.DeviceSerialNumber = f"{spec.modality}-0001"
    ds.SoftwareVersions = "1.0"
    return ds


def _file_meta(sop_class: UID, sop_instance: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def generate_study(spec: StudySpec) -> Iterator[pydicom.Dataset]:
    """Generate every instance of one synthetic study.

    Parameters
    ----------
    spec : StudySpec
        What to generate.

    Yields
    ------
    pydicom.Dataset
        Complete instances (``file_meta`` with Explicit VR Little Endian), series by
        series, slices ordered head to feet (``InstanceNumber`` 1 is the most
        superior). The output is fully determined by ``spec``: UIDs are
        ``2.25.<n>`` values derived from the seed and patient identity, pixel noise
        comes from :func:`numpy.random.default_rng` seeded with the spec's seed, the
        series number and the slice index.
    """
    is_ct = spec.modality == "CT"
    sop_class = CT_IMAGE_STORAGE if is_ct else MR_IMAGE_STORAGE
    fov = _CT_FOV_MM if is_ct else _MR_FOV_MM
    spacing = fov / max(spec.rows, spec.columns)
    xs, ys = _coordinates(spec.rows, spec.columns, spacing)
    radius = fov / 2.0 / _ANATOMY_SCALE_MM
    in_view = np.square(ys)[:, None] + np.square(xs)[None, :] <= np.float32(radius * radius)
    anatomy = _make_anatomy(spec)
    thickness = _slice_thickness(spec.slices)
    z_top = (spec.slices - 1) * thickness / 2.0
    x0 = -(spec.columns - 1) / 2.0 * spacing
    y0 = -(spec.rows - 1) / 2.0 * spacing
    shared = _study_level(spec)
    study_time = str(shared.StudyTime)

    for series_index in range(spec.series):
        series_number = series_index + 1
        series_uid = _uid(spec, "series", str(series_number))
        cycle = series_index // (len(_CT_SERIES) if is_ct else len(_MR_SERIES))
        ct = _CT_SERIES[series_index % len(_CT_SERIES)]
        mr = _MR_SERIES[series_index % len(_MR_SERIES)]
        base = f"Axial {thickness:g}mm {ct.description}" if is_ct else mr.description
        description = base if cycle == 0 else f"{base} ({cycle + 1})"
        series_time = f"{study_time[:2]}{(int(study_time[2:4]) + series_index) % 60:02d}00"

        for index in range(spec.slices):
            instance_number = index + 1
            t = 1.0 - index / (spec.slices - 1) if spec.slices > 1 else 0.5
            z = z_top - index * thickness
            labels = _label_slice(anatomy, t, xs, ys)
            rng = np.random.default_rng([spec.seed, series_number, index])
            sop_uid = _uid(spec, "instance", str(series_number), str(instance_number))

            ds = pydicom.Dataset()
            for element in shared:  # fresh elements: instances must not alias each other
                ds.add(pydicom.DataElement(element.tag, element.VR, element.value))
            ds.file_meta = _file_meta(sop_class, sop_uid)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.InstanceCreationDate = spec.study_date
            ds.InstanceCreationTime = series_time
            ds.SeriesDate = spec.study_date
            ds.AcquisitionDate = spec.study_date
            ds.ContentDate = spec.study_date
            ds.SeriesTime = series_time
            ds.AcquisitionTime = series_time
            ds.ContentTime = series_time
            ds.Modality = spec.modality
            ds.SeriesDescription = description
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = instance_number
            ds.PatientPosition = "HFS"
            ds.SliceThickness = _ds(thickness)
            ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.SliceLocation = _ds(z)
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = spec.rows
            ds.Columns = spec.columns
            ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
            ds.BitsAllocated = 16
            if is_ct:
                ds.KVP = "120"
                ds.DataCollectionDiameter = "500"
                ds.ReconstructionDiameter = _ds(fov)
                ds.XRayTubeCurrent = 200
                ds.ExposureTime = 500
                ds.ConvolutionKernel = ct.kernel
                ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 1
                ds.WindowCenter = str(ct.window_center)
                ds.WindowWidth = str(ct.window_width)
                ds.RescaleIntercept = "-1024"
                ds.RescaleSlope = "1"
                ds.RescaleType = "HU"
                pixels: npt.NDArray[np.int16] | npt.NDArray[np.uint16]
                pixels = _ct_pixels(labels, rng, ct.noise_hu, in_view)
            else:
                ds.ScanningSequence = mr.scanning_sequence
                ds.SequenceVariant = mr.sequence_variant
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.EchoTime = _ds(mr.echo_time)
                ds.RepetitionTime = _ds(mr.repetition_time)
                ds.EchoTrainLength = mr.echo_train_length
                ds.FlipAngle = _ds(mr.flip_angle)
                ds.MagneticFieldStrength = "1.5"
                ds.ImagingFrequency = "63.87"
                ds.ImagedNucleus = "1H"
                ds.SpacingBetweenSlices = _ds(thickness)
                ds.BitsStored = 12
                ds.HighBit = 11
                ds.PixelRepresentation = 0
                ds.WindowCenter = str(mr.window_center)
                ds.WindowWidth = str(mr.window_width)
                pixels = _mr_pixels(labels, rng, mr.contrast, mr.noise, xs, ys)
            ds.add_new(0x7FE00010, "OW", pixels.tobytes())
            yield ds


def write_study(spec: StudySpec, directory: Path) -> list[Path]:
    """Write a synthetic study as DICOM Part 10 files.

    Parameters
    ----------
    spec : StudySpec
        What to generate.
    directory : Path
        Output root; files go to ``<directory>/<SeriesNumber>/<InstanceNumber>.dcm``
        (directories are created as needed, existing files overwritten).

    Returns
    -------
    list of Path
        The written files in generation order.
    """
    paths: list[Path] = []
    for ds in generate_study(spec):
        path = Path(directory) / str(ds.SeriesNumber) / f"{ds.InstanceNumber}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def generate_studies(count: int, base: StudySpec) -> Iterator[StudySpec]:
    """Derive ``count`` distinct study specs from ``base``.

    Study ``k`` (0-based) gets seed ``base.seed + k``, study date ``base.study_date``
    plus ``k`` days, and a patient ID whose trailing number is incremented by ``k``
    (``SYN0001`` -> ``SYN0002`` ...; a number is appended when there is none). The
    given-name component of the patient name gets the same number. All other fields
    are copied from ``base``.

    Parameters
    ----------
    count : int
        Number of specs to produce (``>= 0``).
    base : StudySpec
        Template spec; the first spec keeps its patient ID.

    Yields
    ------
    StudySpec
        The derived specs.

    Raises
    ------
    ValueError
        If ``count`` is negative.
    """
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    stem = base.patient_id.rstrip("0123456789")
    digits = base.patient_id[len(stem) :]
    start, width = (int(digits), len(digits)) if digits else (0, 4)
    family, _, given = base.patient_name.partition("^")
    first_date = _parse_date(base.study_date)
    for k in range(count):
        if digits or k > 0:
            number = f"{start + k:0{width}d}"
            patient_id = f"{stem}{number}"
        else:
            number = ""
            patient_id = base.patient_id
        name = f"{family}^{given}{number}" if number else base.patient_name
        yield dataclasses.replace(
            base,
            patient_id=patient_id,
            patient_name=name,
            seed=base.seed + k,
            study_date=(first_date + timedelta(days=k)).strftime("%Y%m%d"),
        )
