"""DICOMweb conformance: the archive against a stock Orthanc, on the same real files.

The same files (pydicom's test files and character-set files: CT, MR in eight transfer
syntaxes, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE, multi-frame, RT plan
and dose, SR, names in six character sets; UIDs remapped so no two files share a SOP
Instance UID) go into a stock Orthanc with its DICOMweb plugin (REST upload) and into
the archive (C-STORE from a registered AE, each file in its own transfer syntax). Then
both are asked the same QIDO-RS and WADO-RS requests: JSON attributes and values per
level, includefield, paging, metadata, instances, series and studies in their transfer
syntaxes, frames, bulk data, rendered images, media types and part headers, and the
status of bad requests.

Every difference is either asserted equal or named in ``KNOWN`` (below; the same table
is in docs/conformance.md) with its reason.

Orthanc versions: Debian 12 runs Orthanc 1.10.1 with DICOMweb 1.7, Debian 13 Orthanc
1.12.7 with DICOMweb 1.20. Where the stock answers differ by version (person names
outside Latin-1, thumbnails, Pixel Data in metadata, some statuses), each version's
answer is asserted, chosen by ``GET /system``'s version. Queries go to the stock Orthanc
unencoded (``tests/integration/dicomweb_compare.py`` says why).

``test_qido_vs_orthanc.py`` stays beside this module: it checks matching (wild cards,
ranges, lists, case, paging) on many synthetic studies against the archive's own Orthanc;
this one checks what the answers hold, for real files, against a stock Orthanc.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from PIL import Image
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import generate_uid

from security.issuer import EmbeddedIssuer
from tests.integration.dicomweb_compare import (
    Answer,
    Params,
    by_uid,
    check_paging,
    compare,
    media_params,
    multipart,
    normalised,
    orthanc_version,
    params,
    raw_get,
)
from tests.integration.harness import Archive, wait_until
from tests.integration.stock_orthanc import StockOrthanc, stock_orthanc

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
J2K = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
DICOM = "application/dicom"
OCTETS = "application/octet-stream"

# dcmtk storescu's option proposing each transfer syntax (only that one, with -R)
PROPOSE = {
    IMPLICIT_LE: "-xi",
    EXPLICIT_LE: "-xe",
    EXPLICIT_BE: "-xb",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
}
TEST_FILES = (
    "CT_small.dcm",  # CT, explicit VR little endian
    "MR_small.dcm",  # the same MR image in seven transfer syntaxes (one series here)
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG-lossy.dcm",  # NM, JPEG extended (process 2+4)
    "JPEG2000.dcm",  # NM, JPEG 2000 (lossy)
    "SC_rgb_jpeg_gdcm.dcm",  # RGB, JPEG lossless (process 14 SV1); one series of three
    "SC_rgb_rle_2frame.dcm",  # RGB, RLE, two frames
    "SC_rgb_small_odd.dcm",  # RGB, 3x3: odd lengths
    "examples_ybr_color.dcm",  # US multi-frame (30 frames), JPEG baseline, YBR
    "rtplan.dcm",  # RT Plan, implicit VR, no pixel data
    "rtdose.dcm",  # RT Dose, implicit VR, 15 frames
    "test-SR.dcm",  # Comprehensive SR, no pixel data
)
CHARSET_FILES = (
    "chrGerm.dcm",  # Äneas^Rüdiger (ISO_IR 100)
    "chrGreek.dcm",  # Διονυσιος (ISO_IR 126)
    "chrRuss.dcm",  # Люкceмбypг (ISO_IR 144)
    "chrH31.dcm",  # Yamada^Tarou=山田^太郎=やまだ^たろう (ISO 2022 IR 87)
    "chrX1.dcm",  # Wang^XiaoDong=王^小東 (ISO_IR 192)
    "chrI2.dcm",  # Hong^Gildong=洪^吉洞=홍^길동 (ISO 2022 IR 149)
)


@dataclass(frozen=True)
class Difference:
    """One way the archive's answer differs from a stock Orthanc's, and why."""

    what: str
    stock: str
    archive: str
    reason: str


KNOWN: dict[str, Difference] = {
    "qido-charset": Difference(
        "QIDO: SpecificCharacterSet (0008,0005) in results",
        "one value in every result, whatever the file says: 1.10 ISO_IR 100, 1.12 ISO_IR 192",
        "absent; with includefield=all in an instance search, the stored file's value "
        "(as metadata gives it), absent when the file has none",
        "DICOM JSON is UTF-8 (PS3.18 F.2); the catalog keeps decoded text; a header "
        "attribute is answered as stored",
    ),
    "qido-not-indexed": Difference(
        "QIDO: TimezoneOffsetFromUTC (0008,0201), PerformedProcedureStepStartDate/Time "
        "(0040,0244/0245) in results",
        "returned when in the file",
        "absent unless named in includefield (then read from the stored header)",
        "the catalog does not index them; PS3.18 Tables 10.6.3-3/-4 list them as "
        "returned when known, includefield gets them",
    ),
    "qido-computed": Difference(
        "QIDO: InstanceAvailability, AvailableTransferSyntaxUID, counts, "
        "ModalitiesInStudy and (includefield=all) SeriesDate, StudyDescription, "
        "IssuerOfPatientID in results",
        "absent (1.12: InstanceAvailability at instance level)",
        "returned",
        "PS3.18 Tables 10.6.3-3 to -5; a series or instance search not limited to a "
        "study also carries the study's attributes",
    ),
    "qido-media-type": Difference(
        "QIDO: Content-Type",
        "application/dicom+json",
        "application/dicom+json; charset=utf-8",
        "the same media type; DICOM JSON is UTF-8 either way",
    ),
    "qido-fuzzy": Difference(
        "QIDO: fuzzymatching=true",
        "ignored silently",
        "ignored, named in a 299 Warning header",
        "PS3.18 8.3.4.1: a server without fuzzy matching says so",
    ),
    "qido-empty": Difference(
        "QIDO: a returned attribute the file does not have (e.g. SeriesDescription)",
        "left out",
        "present and empty",
        "PS3.18 Tables 10.6.3-3 to -5 list them; empty and absent say the same",
    ),
    "qido-pn-stock-1.10": Difference(
        "QIDO: person names outside Latin-1 (Greek, Cyrillic, CJK groups) on Orthanc 1.10",
        "mangled ('ceyp') or empty",
        "the stored name, in Alphabetic/Ideographic/Phonetic groups (PS3.18 F.2.2)",
        "Orthanc 1.10/DICOMweb 1.7 defect, fixed in 1.12 (which answers as the archive)",
    ),
    "qido-includefield-instance": Difference(
        "QIDO: includefield of an instance attribute (InstitutionName) in a study or "
        "series search whose instances differ in it",
        "the value of one instance of its choice",
        "the value of the instance with the lowest SOP Instance UID",
        "PS3.18 8.3.4.3 does not say which instance; each side answers a stored value",
    ),
    "qido-includefield-series-value": Difference(
        "QIDO: includefield of an attribute Orthanc keeps as a series main tag "
        "(InstitutionName) in an instance search, two instances of one series differing in it",
        "1.10: each instance's own value; 1.12: the series' value (its first stored "
        "instance) for every instance",
        "each instance's own value, from its stored header",
        "an instance's attribute is the one in its file (PS3.18 10.6.3.3.3)",
    ),
    "qido-includefield-all": Difference(
        "QIDO: includefield=all in an instance search",
        "its default attributes and the tags it indexes",
        "every attribute of the stored header (no bulk data)",
        "PS3.18 8.3.4.3: all available attributes",
    ),
    "metadata-xml": Difference(
        "metadata with Accept: application/dicom+xml",
        "400",
        "multipart/related; type=application/dicom+xml (PS3.19 Native DICOM Model)",
        "PS3.18 8.7.3.2: XML is a media type of metadata",
    ),
    "qido-strict-params": Difference(
        "QIDO: unknown attribute, malformed value, key of a lower level, bad offset",
        "200 (matching nothing or ignoring it; bad offset: 500 on 1.10, 200 on 1.12)",
        "400 with a message naming the parameter",
        "PS3.18 8.3.4: a server may refuse what it cannot honour; guessing hides errors",
    ),
    "wado-j2k": Difference(
        "JPEG 2000 decoded (instance without transfer-syntax or as explicit VR little "
        "endian, frames as uncompressed, WADO-URI as DICOM or an image)",
        "500 (Orthanc without a JPEG 2000 decoder); WADO-URI DICOM: the stored file",
        "406 naming what is acceptable (WADO-URI image: 400)",
        "neither Orthanc decodes JPEG 2000 without the GDCM plugin; an error the client can act on",
    ),
    "wado-part-syntax": Difference(
        "WADO-RS instance parts: Content-Type",
        "application/dicom",
        "application/dicom; transfer-syntax=<the part's syntax>",
        "PS3.18 8.7.3.5: the part's syntax is stated, so clients need not parse it",
    ),
    "frames-default": Difference(
        "frames of a compressed instance, Accept absent or */*",
        "decompressed, application/octet-stream (JPEG 2000: 500)",
        "as stored, typed per PS3.18 Table 8.7.3-5 (image/jpeg, image/jls, image/jp2, "
        "image/dicom-rle)",
        "no decoding: the server's choice when any type is acceptable",
    ),
    "frames-any-syntax": Difference(
        'frames with type="application/octet-stream"; transfer-syntax=*',
        "compressed: the stored type (image/jls ...); 1.10 labels implicit VR frames "
        "1.2.840.10008.1.2 and fails big endian with 500",
        "application/octet-stream labelled with the stored syntax (uncompressed: "
        "1.2.840.10008.1.2.1, the frame bytes being the same)",
        "the type asked for; bytes equal",
    ),
    "frames-content-location": Difference(
        "Content-Location of bulk-data parts",
        "none (frame parts: the frame's URL)",
        "the bulk data URI (frame parts: the frame's public URL, as stock)",
        "PS3.18 8.7.3.3: each part may say what it is; never the archive's internal "
        "Orthanc address",
    ),
    "frames-no-pixels": Difference(
        "frames of an instance without pixel data (RT plan, SR)",
        "500",
        "404 saying there is no pixel data",
        "not a server error",
    ),
    "frames-out-of-range": Difference(
        "frames: a frame number past the last",
        "400",
        "404 naming how many frames there are",
        "the resource does not exist (PS3.18 8.3.3.1)",
    ),
    "wado-not-acceptable": Difference(
        "a media type the resource cannot be (instance as image/png, rendered as DICOM)",
        "400",
        "406",
        "HTTP: Not Acceptable is the answer to Accept (PS3.18 8.7.3)",
    ),
    "metadata-pixel-data": Difference(
        "metadata: Pixel Data of a compressed instance",
        "1.10: absent; 1.12: BulkDataURI",
        "BulkDataURI (vr from the stored syntax and Bits Allocated)",
        "PS3.18 F.2.7: bulk data are referenced",
    ),
    "metadata-pixel-vr": Difference(
        "metadata: Pixel Data vr of a native 8-bit image stored as OW",
        "OW (the file's)",
        "OB (computed)",
        "not an issue-11 item: follow-up (the vr should be the stored one)",
    ),
    "metadata-inline": Difference(
        "metadata: binary values up to 64 KiB",
        "BulkDataURI",
        "InlineBinary (the same bytes)",
        "PS3.18 F.2.7 lets the server choose; fewer round trips",
    ),
    "metadata-bulk-url": Difference(
        "metadata: BulkDataURI path",
        ".../bulk/{tag}",
        ".../bulkdata/{tag}",
        "bulk data URIs are opaque (PS3.18 10.4.1.1.5); both resolve to the same bytes",
    ),
    "metadata-numbers": Difference(
        "metadata: DS and IS values",
        "1.10: JSON numbers; 1.12: strings as in the file ('80.0000')",
        "JSON numbers",
        "PS3.18 F.2.3.1 allows both; equal as numbers",
    ),
    "bulkdata-compressed": Difference(
        "Pixel Data bulk data of a compressed instance",
        "1.10: no URI; 1.12: the offset table, then each fragment, as octet-stream parts",
        "one part per frame, typed as the frames resource types it",
        "PS3.18 8.7.3.3 leaves the bulk data parts' framing to the server; the bytes "
        "of each frame are equal",
    ),
    "metadata-empty": Difference(
        "metadata: empty sequence; empty value inside a multi-valued element",
        "no Value; null",
        'Value []; ""',
        "pydicom's DICOM JSON; PS3.18 F.2.5 wants null: not an issue-11 item, follow-up",
    ),
    "metadata-stock-quirks": Difference(
        "metadata: UT with a backslash; SpecificCharacterSet with an empty first value; "
        "Data Set Trailing Padding; empty PN groups",
        "split into values; empty value dropped; returned; Phonetic ''",
        "one value (UT is single-valued); kept as stored; absent (not in the header); left out",
        "Orthanc's JSON; the archive's follows PS3.5 6.2 and F.2",
    ),
    "wado-uri-default-type": Difference(
        "WADO-URI without contentType",
        "image/png",
        "image/jpeg",
        "PS3.18 9.1.2.1: image/jpeg is the default for single images",
    ),
    "wado-uri-default-syntax": Difference(
        "WADO-URI contentType=application/dicom without transferSyntax, stored "
        "compressed, implicit VR or big endian",
        "the stored file",
        "explicit VR little endian, converted (JPEG 2000: 406 naming the stored syntax)",
        "PS3.18 9 (WADO-URI): explicit VR little endian when transferSyntax is absent, "
        "as WADO-RS (PS3.18 8.7.3)",
    ),
    "wado-uri-transfer-syntax": Difference(
        "WADO-URI with transferSyntax other than the stored one",
        "the stored file, the parameter ignored",
        "converted by Orthanc, else 406",
        "PS3.18 9.1.2.5: the file in the syntax asked for, or an error",
    ),
    "stow-unreadable": Difference(
        "STOW-RS: a part that is not DICOM",
        "400 for the whole request",
        "409 with FailedSOPSequence, FailureReason 0xC000",
        "PS3.18 10.5.3: a Store Instances Response names each failed instance",
    ),
    "stow-type-missing": Difference(
        "STOW-RS: multipart/related without the type parameter",
        "415",
        "accepted, each part's own Content-Type checked",
        "liberal in what is accepted; the parts say what they are",
    ),
    "thumbnail-1.10": Difference(
        "thumbnail resources",
        "1.10: 404 (not implemented); 1.12: 200 image/jpeg",
        "200 image/jpeg (at most 128x128)",
        "PS3.18 10.4.1.1.6",
    ),
}

# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Sample:
    """One file as sent to both sides."""

    name: str
    path: Path
    syntax: str
    study: str
    series: str
    sop: str
    pixels: bool
    frames: int

    @property
    def url(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    @property
    def compressed(self) -> bool:
        return bool(pydicom.uid.UID(self.syntax).is_compressed)


def _source(name: str) -> str:
    if name.startswith("chr"):
        (found,) = (p for p in get_charset_files() if Path(p).name == name)
        return found
    found_file = get_testdata_file(name, download=False)
    assert found_file is not None, f"pydicom's test file {name} is missing"
    return str(found_file)


def write_samples(directory: Path) -> list[Sample]:
    """The files with UIDs of their own: a study per (original study, patient), a series
    per (original series, patient), a SOP Instance UID per file, all derived from the
    originals so a rerun makes the same; nothing else changes (elements not touched are
    written as read, in the file's own transfer syntax)."""
    samples = []
    for name in TEST_FILES + CHARSET_FILES:
        ds = pydicom.dcmread(_source(name))
        patient = str(ds.get("PatientID", ""))
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["vna", str(ds.StudyInstanceUID), patient])
        ds.SeriesInstanceUID = generate_uid(
            entropy_srcs=["vna", str(ds.SeriesInstanceUID), patient]
        )
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=["vna", name]
        )
        path = directory / name
        ds.save_as(path, enforce_file_format=False)
        samples.append(
            Sample(
                name,
                path,
                str(ds.file_meta.TransferSyntaxUID),
                str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID),
                str(ds.SOPInstanceUID),
                "PixelData" in ds,
                int(ds.get("NumberOfFrames") or 1),
            )
        )
    return samples


@dataclass
class Peers:
    """The archive (gateway) and a stock Orthanc holding the same samples."""

    archive: Archive
    stock: StockOrthanc
    token: str
    samples: dict[str, Sample]
    stock_version: tuple[int, ...]
    issuer: EmbeddedIssuer

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.archive.http_port}"

    def ours(self, path: str, query: Params = (), accept: str | None = None) -> Answer:
        headers = {"Authorization": f"Bearer {self.token}"}
        if accept is not None:
            headers["Accept"] = accept
        answer = requests.get(
            self.gateway + "/dicom-web" + path, params=list(query), headers=headers, timeout=120
        )
        return Answer(
            answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.content
        )

    def theirs(self, path: str, query: Params = (), accept: str | None = None) -> Answer:
        return raw_get(
            self.stock.http_port, "/dicom-web" + path, query, auth=self.stock.auth, accept=accept
        )

    def url_ours(self, url: str) -> Answer:
        answer = requests.get(url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        return Answer(
            answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.content
        )

    def url_theirs(self, url: str) -> Answer:
        assert url.startswith(self.stock.url), url
        path = url[len(self.stock.url) :]
        return raw_get(self.stock.http_port, path, auth=self.stock.auth, accept=None)

    def both_json(self, path: str, query: Params) -> tuple[list[Any], list[Any]]:
        ours, theirs = self.ours(path, query), self.theirs(path, query)
        assert ours.status == 200, ours.body[:300]
        assert theirs.status == 200, theirs.body[:300]
        return list(ours.json()), list(theirs.json())

    @property
    def modern(self) -> bool:
        """Orthanc 1.12 or later (Debian 13) on the stock side."""
        return self.stock_version >= (1, 12)


def _store_each_in_its_syntax(archive: Archive, samples: list[Sample]) -> None:
    by_syntax: dict[str, list[Path]] = {}
    for sample in samples:
        by_syntax.setdefault(sample.syntax, []).append(sample.path)
    for syntax, paths in by_syntax.items():
        sent = archive.storescu("HOSPA", *paths, extra=("-R", PROPOSE[syntax]))
        assert sent.returncode == 0, (syntax, sent.stderr)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    # an archive of its own: results are compared as whole sets, which another test's
    # studies in the session archive would change
    samples = write_samples(tmp_path_factory.mktemp("conformance-data"))
    arch = Archive(tmp_path_factory.mktemp("conformance-home"))
    arch.write_config({"Hospital A": ["HOSPA"], "Hospital B": ["HOSPB"]})
    arch.up()
    try:
        with stock_orthanc(tmp_path_factory.mktemp("conformance-stock")) as stock:
            stock.upload(*(s.path for s in samples))
            _store_each_in_its_syntax(arch, samples)
            url = f"http://127.0.0.1:{arch.http_port}"
            wait_until(lambda: requests.get(f"{url}/healthz", timeout=5).ok, "the gateway")
            issuer = EmbeddedIssuer.open_or_create(arch.home / "keys", url, f"{url}/dicom-web")
            token = issuer.mint(
                subject="conformance",
                institution="Hospital A",
                scopes=("dicom.read", "admin"),
                lifetime=3600,
            )
            found = Peers(
                arch,
                stock,
                token,
                {s.name: s for s in samples},
                orthanc_version(stock.url, stock.auth),
                issuer,
            )

            def indexed() -> bool:
                answer = found.ours("/instances")
                return answer.status == 200 and len(answer.json()) == len(samples)

            wait_until(indexed, "the catalog to index every instance")
            assert len(found.theirs("/instances").json()) == len(samples)
            yield found
    finally:
        arch.down()


def _images() -> list[str]:
    """Names of the samples with pixel data (the parameter list of per-image tests)."""
    return [n for n in TEST_FILES + CHARSET_FILES if n not in ("rtplan.dcm", "test-SR.dcm")]


def _syntax_of(data: bytes) -> str:
    return str(
        pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
    )


def _dataset(data: bytes) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(data))
    for element in list(ds):
        # group lengths are retired and dropped on the network; trailing padding likewise
        if element.tag.element == 0 or element.tag == 0xFFFCFFFC:
            del ds[element.tag]
    if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_encapsulated:
        # two of pydicom's files say OW for encapsulated Pixel Data; dcmtk's storescu
        # sends OB, as PS3.5 A.4 requires, so the C-STORE copy differs in that VR only
        ds["PixelData"].VR = "OB"
    return ds


# --------------------------------------------------------------------------- QIDO-RS

OURS_ONLY = {
    # KNOWN["qido-computed"]
    "studies": {"00080056"},
    "series": {"00080056", "00080061", "00201206", "00201208"},
    "instances": {"00080056", "00080061", "00083002", "00201206", "00201208", "00201209"},
}
INCLUDE_ALL_ONLY = {"00080021", "00081030", "00100021"}  # KNOWN["qido-computed"]
# KNOWN["qido-charset"], KNOWN["qido-not-indexed"]
THEIRS_ONLY = {"00080005", "00080201", "00400244", "00400245"}
PN = "00100010"


def _latin1(element: dict[str, Any]) -> bool:
    text = "".join(str(v) for value in element.get("Value", []) for v in value.values())
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _qido_skip(peers: Peers) -> Any:
    def skip(tag: str, ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
        if tag == "00080005":
            return True  # KNOWN["qido-charset"]: test_qido_charset_with_includefield_all
        if ours.get("vr") != "PN":
            return False
        return not peers.modern and not _latin1(ours)  # KNOWN["qido-pn-stock-1.10"]

    return skip


QIDO_CASES = [
    (level, query)
    for level in ("studies", "series", "instances")
    for query in (
        "",
        "includefield=all",
        "PatientID=4MR1",
        "Modality=MR",
        "StudyDate=20040101-20041231",
    )
    if not (level == "studies" and query == "Modality=MR")
]


@pytest.mark.parametrize(("level", "query"), QIDO_CASES, ids=[f"{lv}?{q}" for lv, q in QIDO_CASES])
def test_qido_same_results_and_values(peers: Peers, level: str, query: str) -> None:
    """Per level: the same matches, equal values for every attribute both return, and
    nothing returned by one side only but the listed differences."""
    ours, theirs = peers.both_json(f"/{level}", params(query))
    ours_only: set[str] | None = OURS_ONLY[level]
    if "all" in query:
        # KNOWN["qido-includefield-all"]: an instance search answers the whole header
        ours_only = None if level == "instances" else OURS_ONLY[level] | INCLUDE_ALL_ONLY
    uids = compare(
        f"/{level}",
        ours,
        theirs,
        theirs_only=THEIRS_ONLY,
        ours_only=ours_only,
        skip=_qido_skip(peers),
    )
    assert uids, "the query matched nothing on either side: it compares nothing"


def test_qido_charset_with_includefield_all(peers: Peers) -> None:
    """KNOWN["qido-charset"]: no SpecificCharacterSet in the archive's default results;
    with includefield=all an instance answers its stored file's (as metadata does), the
    stock Orthanc ISO_IR 100 for every instance."""
    assert all("00080005" not in r for r in peers.ours("/instances").json())
    ours, theirs = peers.both_json("/instances", params("includefield=all"))
    mine, other = by_uid(ours, "00080018"), by_uid(theirs, "00080018")
    for sample in peers.samples.values():
        stored = pydicom.dcmread(sample.path, stop_before_pixels=True).get("SpecificCharacterSet")
        found = mine[sample.sop].get("00080005", {}).get("Value")
        if stored is None:
            assert found is None, sample.name
        else:
            values = list(stored) if isinstance(stored, pydicom.multival.MultiValue) else [stored]
            assert found == values, sample.name
        # Orthanc answers one character set for every instance: 1.10 Latin-1, 1.12 UTF-8
        stock = "ISO_IR 192" if peers.modern else "ISO_IR 100"
        assert other[sample.sop]["00080005"]["Value"] == [stock], sample.name


def test_qido_scoped_searches(peers: Peers) -> None:
    """Searches inside a study and a series (the MR series holds six instances)."""
    mr = peers.samples["MR_small.dcm"]
    for path in (
        f"/studies/{mr.study}/series",
        f"/studies/{mr.study}/instances",
        f"/studies/{mr.study}/series/{mr.series}/instances",
    ):
        ours, theirs = peers.both_json(path, ())
        level = path.rsplit("/", 1)[-1]
        # in a scoped search the stock Orthanc repeats the study's attributes; PS3.18
        # 10.6.3.3 asks for them only when the search is not limited to one study
        uids = compare(path, ours, theirs, theirs_only=THEIRS_ONLY | _study_tags(theirs))
        assert len(uids) == (1 if level == "series" else 6), path


def _study_tags(results: list[Any]) -> set[str]:
    return {t for r in results for t in r} & {
        "00080020",
        "00080030",
        "00080050",
        "00080090",
        PN,
        "00100020",
        "00100030",
        "00100040",
        "00200010",
    }


@pytest.mark.parametrize(("path", "size"), [("/studies", 4), ("/series", 5), ("/instances", 6)])
def test_qido_paging(peers: Peers, path: str, size: int) -> None:
    check_paging(peers.both_json, path, size)


def test_qido_media_type(peers: Peers) -> None:
    """KNOWN["qido-media-type"]."""
    ours, theirs = peers.ours("/studies"), peers.theirs("/studies")
    assert ours.media_type == theirs.media_type == "application/dicom+json"
    assert ours.headers["content-type"] == "application/dicom+json; charset=utf-8"


def test_qido_fuzzy_matching_is_declined_openly(peers: Peers) -> None:
    """KNOWN["qido-fuzzy"]: the same results; the archive says it did not fuzzy-match."""
    query = params("PatientName=Lestrade*&fuzzymatching=true")
    ours, theirs = peers.ours("/studies", query), peers.theirs("/studies", query)
    assert ours.headers["warning"] == '299 vna "not supported, ignored: fuzzymatching"'
    assert "warning" not in theirs.headers
    assert compare("/studies", ours.json(), theirs.json(), theirs_only=THEIRS_ONLY)


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrX1.dcm", "chrI2.dcm"])
def test_person_name_groups_in_qido(peers: Peers, name: str) -> None:
    """QIDO answers a name's groups as metadata does (PS3.18 F.2.2): Alphabetic,
    Ideographic, Phonetic; Orthanc 1.12 answers the same (1.10 mangles them:
    KNOWN["qido-pn-stock-1.10"])."""
    sample = peers.samples[name]
    query = params(f"SOPInstanceUID={sample.sop}")
    (found,) = peers.ours("/instances", query).json()
    (metadata,) = peers.ours(sample.url + "/metadata").json()
    assert found[PN] == metadata[PN]
    if peers.modern:
        (theirs,) = peers.theirs("/instances", query).json()
        strip = [{k: v for k, v in g.items() if v} for g in theirs[PN]["Value"]]
        assert found[PN]["Value"] == strip


@pytest.mark.parametrize("keyword", ["InstitutionName", "PatientWeight"])
def test_includefield_of_attributes_the_catalog_does_not_index(peers: Peers, keyword: str) -> None:
    """Both answer them from the stored files: per instance the same values; per study
    the value of one of its instances, the same where its instances agree
    (KNOWN["qido-includefield-instance"]: the NM study's two instances name two
    institutions, and each side picks another)."""
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    query = params(f"includefield={keyword}")
    ours, theirs = peers.both_json("/instances", query)
    qido_skip = _qido_skip(peers)

    def skip(key: str, mine: dict[str, Any], other: dict[str, Any]) -> bool:
        # KNOWN["qido-includefield-series-value"]: Orthanc 1.12 answers the series' value
        return (peers.modern and key == "00080080") or qido_skip(key, mine, other)

    assert compare("/instances", ours, theirs, theirs_only=THEIRS_ONLY, skip=skip)
    assert any("Value" in r.get(tag, {}) for r in theirs)
    if peers.modern and keyword == "InstitutionName":
        # ours: each instance's own value, as its metadata says
        for result in ours:
            uids = (result[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
            study, series, sop = uids
            meta = peers.ours(f"/studies/{study}/series/{series}/instances/{sop}/metadata").json()
            assert result.get(tag, {}).get("Value") == meta[0].get(tag, {}).get("Value"), sop

    def first(result: dict[str, Any]) -> Any:
        value = result.get(tag, {}).get("Value", [None])[0]
        if result.get(tag, {}).get("vr") == "DS" and value is not None:
            return float(value)  # 0, 0.0, or Orthanc 1.12's "0.000000"
        return value

    per_study: dict[str, set[Any]] = {}
    for result in ours:
        per_study.setdefault(result["0020000D"]["Value"][0], set()).add(first(result))
    ours, theirs = peers.both_json("/studies", query)
    mine, other = by_uid(ours, "0020000D"), by_uid(theirs, "0020000D")
    for uid, result in other.items():
        if "Value" not in result.get(tag, {}):
            continue
        assert first(mine[uid]) in per_study[uid], uid
        assert first(result) in per_study[uid], uid
        if len(per_study[uid]) == 1:
            assert normalised(tag, mine[uid][tag]) == normalised(tag, result[tag]), uid


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("chrGerm.dcm", "äneas^rüdiger"),
        ("chrGerm.dcm", "ÄNEAS*"),
        ("chrGreek.dcm", "διονυσιος"),
        ("chrRuss.dcm", "люк*"),
    ],
)
def test_person_name_matching_ignores_case_in_every_script(
    peers: Peers, name: str, value: str
) -> None:
    """PN matching is case-insensitive for non-ASCII letters too (the stock Orthanc 1.10
    cannot be asked: it does not percent-decode the query)."""
    found = peers.ours("/studies", (("PatientName", value),)).json()
    assert [r["0020000D"]["Value"][0] for r in found] == [peers.samples[name].study]


@pytest.mark.parametrize("resource", ["/studies", "{instance}/metadata"])
def test_dicom_xml(peers: Peers, resource: str) -> None:
    """Accept: application/dicom+xml: QIDO answers multipart XML on both sides;
    metadata too on the archive's, 400 on the stock's (KNOWN["metadata-xml"])."""
    path = resource.format(instance=peers.samples["CT_small.dcm"].url)
    theirs = peers.theirs(path, accept="application/dicom+xml")
    if resource == "/studies":
        assert theirs.status == 200
        assert media_params(theirs.headers["content-type"])[1]["type"] == "application/dicom+xml"
    else:
        assert theirs.status == 400
    ours = peers.ours(path, accept="application/dicom+xml")
    assert ours.status == 200
    media, found = media_params(ours.headers["content-type"])
    assert (media, found["type"]) == ("multipart/related", "application/dicom+xml")
    parts = multipart(ours.headers["content-type"], ours.body)
    assert parts and all(b"NativeDicomModel" in data for _, data in parts)


# --------------------------------------------------------------------------- WADO-RS instances

MULTIPART_DICOM = f'multipart/related; type="{DICOM}"'


def _instance_parts(answer: Answer) -> list[tuple[str, bytes]]:
    """(the part's stated transfer-syntax, bytes) of a multipart/related DICOM answer."""
    assert answer.status == 200, answer.body[:300]
    media, found = media_params(answer.headers["content-type"])
    assert (media, found.get("type")) == ("multipart/related", DICOM)
    out = []
    for headers, data in multipart(answer.headers["content-type"], answer.body):
        part_media, part = media_params(headers["content-type"])
        assert part_media == DICOM
        out.append((part.get("transfer-syntax", ""), data))
    return out


@pytest.mark.parametrize("name", TEST_FILES + CHARSET_FILES)
@pytest.mark.parametrize(
    "syntax", ["", f"; transfer-syntax={EXPLICIT_LE}"], ids=["default", "explicit-le"]
)
def test_retrieve_instance_as_explicit_little_endian(peers: Peers, name: str, syntax: str) -> None:
    """No transfer-syntax, or explicit VR little endian asked for: both send explicit VR
    little endian (PS3.18 8.7.3), converting what is stored otherwise, with the same data
    set and pixel data; the archive states the syntax in the part's Content-Type
    (KNOWN["wado-part-syntax"]). JPEG 2000 neither can decode (KNOWN["wado-j2k"])."""
    sample = peers.samples[name]
    accept = MULTIPART_DICOM + syntax
    ours, theirs = peers.ours(sample.url, accept=accept), peers.theirs(sample.url, accept=accept)
    if sample.syntax in J2K:
        assert (ours.status, theirs.status) == (406, 500)
        assert b"transfer-syntax=*" in ours.body  # the 406 says how to get it as stored
        return
    ((label, mine),) = _instance_parts(ours)
    ((_, other),) = _instance_parts_stock(theirs)
    assert label == _syntax_of(mine) == _syntax_of(other) == EXPLICIT_LE
    a, b = pydicom.dcmread(io.BytesIO(mine)), pydicom.dcmread(io.BytesIO(other))
    if sample.pixels:
        assert a.PixelData == b.PixelData
    if not sample.compressed:
        assert _dataset(mine) == _dataset(other)


def _instance_parts_stock(answer: Answer) -> list[tuple[str, bytes]]:
    """The stock Orthanc's parts say only application/dicom (KNOWN["wado-part-syntax"])."""
    assert answer.status == 200, answer.body[:300]
    parts = multipart(answer.headers["content-type"], answer.body)
    assert all(h["content-type"] == DICOM for h, _ in parts)
    return [("", data) for _, data in parts]


@pytest.mark.parametrize("name", TEST_FILES + CHARSET_FILES)
def test_retrieve_instance_as_stored(peers: Peers, name: str) -> None:
    """transfer-syntax=*: both send the stored syntax and the same data set."""
    sample = peers.samples[name]
    accept = f"{MULTIPART_DICOM}; transfer-syntax=*"
    ((label, ours),) = _instance_parts(peers.ours(sample.url, accept=accept))
    ((_, theirs),) = _instance_parts_stock(peers.theirs(sample.url, accept=accept))
    assert label == _syntax_of(ours) == _syntax_of(theirs) == sample.syntax
    assert _dataset(ours) == _dataset(theirs)


def test_retrieve_series_and_studies_as_stored(peers: Peers) -> None:
    """Every series and study: the same instances, each in its stored syntax."""
    accept = f"{MULTIPART_DICOM}; transfer-syntax=*"
    resources = {f"/studies/{s.study}" for s in peers.samples.values()}
    resources |= {f"/studies/{s.study}/series/{s.series}" for s in peers.samples.values()}
    for path in sorted(resources):
        ours = _instance_parts(peers.ours(path, accept=accept))
        theirs = _instance_parts_stock(peers.theirs(path, accept=accept))

        def found(parts: list[tuple[str, bytes]]) -> dict[str, str]:
            out = {}
            for _, data in parts:
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                out[str(ds.SOPInstanceUID)] = str(ds.file_meta.TransferSyntaxUID)
            return out

        assert found(ours) == found(theirs), path
        assert all(
            label == syntax for (label, _), syntax in zip(ours, found(ours).values(), strict=True)
        )


# --------------------------------------------------------------------------- metadata


def _normalise_metadata(element: dict[str, Any]) -> dict[str, Any]:
    """KNOWN["metadata-empty"], ["metadata-stock-quirks"], ["metadata-bulk-url"]."""
    out = dict(element)
    value = out.get("Value")
    if out.get("vr") == "SQ":
        items = [
            {k: _normalise_metadata(v) for k, v in i.items() if k != "FFFCFFFC"}
            for i in value or []
        ]
        out.pop("Value", None)
        if items:
            out["Value"] = items
    elif value is not None:
        if out.get("vr") == "PN":
            value = [{k: v for k, v in group.items() if v} for group in value]
        elif out.get("vr") in ("UT", "ST", "LT") and len(value) > 1:
            value = ["\\".join("" if v is None else str(v) for v in value)]
        elif out.get("vr") in ("DS", "IS"):  # KNOWN["metadata-numbers"]
            value = [None if v in ("", None) else float(v) for v in value]
        else:
            value = [None if v == "" else v for v in value]
        if out.get("vr") == "CS" and value and value[0] is None and len(value) > 1:
            value = value[1:]  # SpecificCharacterSet: Orthanc drops the empty first value
        out["Value"] = value
    if "BulkDataURI" in out:
        out["BulkDataURI"] = "<uri>"
    return out


@pytest.mark.parametrize("name", TEST_FILES + CHARSET_FILES)
def test_metadata(peers: Peers, name: str) -> None:
    """Instance metadata: the same attributes and values, after the listed differences."""
    sample = peers.samples[name]
    ours, theirs = peers.ours(sample.url + "/metadata"), peers.theirs(sample.url + "/metadata")
    assert ours.media_type == theirs.media_type == "application/dicom+json"
    (mine,), (other,) = ours.json(), theirs.json()
    other.pop("FFFCFFFC", None)  # KNOWN["metadata-stock-quirks"]
    pixel = other.pop("7FE00010", None)
    assert "7FE00010" in mine if sample.pixels else "7FE00010" not in mine
    if sample.pixels and (peers.modern or not sample.compressed):
        assert pixel is not None  # KNOWN["metadata-pixel-data"]: 1.10 omits compressed
        if not (pixel["vr"] == "OW" and mine["7FE00010"]["vr"] == "OB"):  # "metadata-pixel-vr"
            assert mine["7FE00010"]["vr"] == pixel["vr"]
    mine.pop("7FE00010", None)
    assert mine.keys() == other.keys(), (
        sorted(mine.keys() - other.keys()),
        sorted(other.keys() - mine.keys()),
    )
    for tag in sorted(mine):
        a, b = mine[tag], other[tag]
        if "InlineBinary" in a and "BulkDataURI" in b:  # KNOWN["metadata-inline"]
            bulk = peers.url_theirs(b["BulkDataURI"])
            ((_, data),) = multipart(bulk.headers["content-type"], bulk.body)
            assert base64.b64decode(a["InlineBinary"]) == data, tag
            continue
        assert _normalise_metadata(a) == _normalise_metadata(b), tag


# --------------------------------------------------------------------------- frames, bulk data

ANY_OCTETS = f'multipart/related; type="{OCTETS}"; transfer-syntax=*'
RAW_OCTETS = f'multipart/related; type="{OCTETS}"'


def _frames(answer: Answer) -> list[tuple[dict[str, str], bytes]]:
    assert answer.status == 200, answer.body[:300]
    assert media_params(answer.headers["content-type"])[0] == "multipart/related"
    return multipart(answer.headers["content-type"], answer.body)


@pytest.mark.parametrize("name", _images())
def test_frames_as_stored(peers: Peers, name: str) -> None:
    """Every frame with transfer-syntax=*: the same bytes on both sides
    (KNOWN["frames-any-syntax"] for the part types)."""
    sample = peers.samples[name]
    numbers = ",".join(str(n) for n in range(1, sample.frames + 1))
    ours = _frames(peers.ours(f"{sample.url}/frames/{numbers}", accept=ANY_OCTETS))
    assert len(ours) == sample.frames
    stored_label = EXPLICIT_LE if not sample.compressed else sample.syntax
    for headers, _ in ours:
        assert media_params(headers["content-type"]) == (OCTETS, {"transfer-syntax": stored_label})
    theirs = peers.theirs(f"{sample.url}/frames/{numbers}", accept=ANY_OCTETS)
    if sample.syntax == EXPLICIT_BE and not peers.modern:
        assert theirs.status == 500
        return
    assert [d for _, d in ours] == [d for _, d in _frames(theirs)]


@pytest.mark.parametrize("name", _images())
def test_frames_uncompressed(peers: Peers, name: str) -> None:
    """type="application/octet-stream" without a syntax: uncompressed frames, converted
    where stored compressed; the same bytes and labels on both sides (JPEG 2000:
    KNOWN["wado-j2k"])."""
    sample = peers.samples[name]
    ours, theirs = (
        peers.ours(f"{sample.url}/frames/1", accept=RAW_OCTETS),
        peers.theirs(f"{sample.url}/frames/1", accept=RAW_OCTETS),
    )
    if sample.syntax in J2K:
        assert (ours.status, theirs.status) == (406, 500)
        return
    mine, other = _frames(ours), _frames(theirs)
    assert [d for _, d in mine] == [d for _, d in other]
    assert [media_params(h["content-type"]) for h, _ in mine] == [
        media_params(h["content-type"]) for h, _ in other
    ]
    assert media_params(mine[0][0]["content-type"]) == (OCTETS, {"transfer-syntax": EXPLICIT_LE})


@pytest.mark.parametrize(
    "name", [n for n in _images() if n.startswith(("MR_", "JPEG", "SC_", "ex"))]
)
def test_frames_default_accept(peers: Peers, name: str) -> None:
    """No Accept: KNOWN["frames-default"] (stock decompresses, the archive sends what it
    stores, typed per PS3.18 Table 8.7.3-5)."""
    sample = peers.samples[name]
    ((headers, _),) = _frames(peers.ours(f"{sample.url}/frames/1", accept=None))
    media, found = media_params(headers["content-type"])
    assert found["transfer-syntax"] == (sample.syntax if sample.compressed else EXPLICIT_LE)
    assert (media == OCTETS) == (not sample.compressed)
    theirs = peers.theirs(f"{sample.url}/frames/1", accept=None)
    if sample.syntax in J2K:
        assert theirs.status == 500
    else:
        ((headers, _),) = _frames(theirs)
        assert media_params(headers["content-type"]) == (OCTETS, {"transfer-syntax": EXPLICIT_LE})


@pytest.mark.parametrize(
    ("name", "accept"),
    [
        ("MR_small_bigendian.dcm", None),
        ("MR_small_RLE.dcm", RAW_OCTETS),
        ("MR_small.dcm", None),
        ("MR_small_RLE.dcm", ANY_OCTETS),
    ],
    ids=["big-endian", "decoded", "native", "compressed-as-stored"],
)
def test_frame_parts_never_name_orthanc(peers: Peers, name: str, accept: str | None) -> None:
    """Each frame part's Content-Location is the gateway's own URL of the frame, also
    when Orthanc converted it (big endian, decoded), as the stock Orthanc names its own."""
    sample = peers.samples[name]
    for headers, _ in _frames(peers.ours(f"{sample.url}/frames/1", accept=accept)):
        assert headers["content-location"] == f"{peers.gateway}/dicom-web{sample.url}/frames/1"
    for headers, _ in _frames(peers.theirs(f"{sample.url}/frames/1", accept=accept)):
        assert headers["content-location"].endswith(f"{sample.url}/frames/1")


def test_bulk_data_parts_carry_content_location(peers: Peers) -> None:
    """KNOWN["frames-content-location"]: bulk-data parts name their URL (the stock
    Orthanc's none)."""
    sample = peers.samples["MR_small.dcm"]
    (metadata,) = peers.ours(sample.url + "/metadata").json()
    uri = metadata["7FE00010"]["BulkDataURI"]
    ((headers, _),) = _frames(peers.url_ours(uri))
    assert headers.get("content-location") == uri
    (other,) = peers.theirs(sample.url + "/metadata").json()
    ((headers, _),) = _frames(peers.url_theirs(other["7FE00010"]["BulkDataURI"]))
    assert "content-location" not in headers


@pytest.mark.parametrize("name", [n for n in _images() if n not in ("rtdose.dcm",)])
def test_pixel_data_bulk_data(peers: Peers, name: str) -> None:
    """Pixel Data's BulkDataURI from each side's metadata: the same bytes per part
    (KNOWN["metadata-bulk-url"]; 1.10 gives none for compressed instances)."""
    sample = peers.samples[name]
    (mine,) = peers.ours(sample.url + "/metadata").json()
    (other,) = peers.theirs(sample.url + "/metadata").json()
    ours = _frames(peers.url_ours(mine["7FE00010"]["BulkDataURI"]))
    if "7FE00010" not in other:
        assert sample.compressed and not peers.modern  # KNOWN["metadata-pixel-data"]
        return
    theirs = _frames(peers.url_theirs(other["7FE00010"]["BulkDataURI"]))
    if sample.compressed:
        # KNOWN["bulkdata-compressed"]: 1.12 sends the offset table, then each fragment
        # (one per frame in these files) as octet-stream; the archive sends the frames
        theirs = theirs[1:]
        assert all(media_params(h["content-type"])[0] == OCTETS for h, _ in theirs)
    else:
        assert [media_params(h["content-type"])[0] for h, _ in ours] == [OCTETS]
        assert [media_params(h["content-type"])[0] for h, _ in theirs] == [OCTETS]
    assert [d for _, d in ours] == [d for _, d in theirs]


# --------------------------------------------------------------------------- rendered


def _image(answer: Answer) -> tuple[str, tuple[int, int]]:
    assert answer.status == 200, answer.body[:300]
    assert answer.media_type.startswith("image/"), answer.headers["content-type"]
    with Image.open(io.BytesIO(answer.body)) as image:
        return answer.media_type, image.size


@pytest.mark.parametrize("name", TEST_FILES + CHARSET_FILES)
def test_rendered_instance(peers: Peers, name: str) -> None:
    """The same status; where rendered, a JPEG of the same size (both ask Orthanc)."""
    sample = peers.samples[name]
    ours, theirs = (
        peers.ours(sample.url + "/rendered"),
        peers.theirs(sample.url + "/rendered", accept=None),
    )
    assert ours.status == theirs.status
    if ours.status == 200:
        assert _image(ours) == _image(theirs)
        assert _image(ours)[0] == "image/jpeg"


@pytest.mark.parametrize("level", ["study", "series"])
def test_rendered_study_and_series_are_one_image(peers: Peers, level: str) -> None:
    """One image of the same type and size, as the stock Orthanc answers (PS3.18 10.4;
    what dicomweb-client's retrieve_series_rendered expects)."""
    sample = peers.samples["CT_small.dcm"]
    path = f"/studies/{sample.study}" + (f"/series/{sample.series}" if level == "series" else "")
    theirs = _image(peers.theirs(path + "/rendered", accept=None))
    assert _image(peers.ours(path + "/rendered")) == theirs


def test_thumbnail(peers: Peers) -> None:
    """KNOWN["thumbnail-1.10"]."""
    sample = peers.samples["CT_small.dcm"]
    media, size = _image(peers.ours(sample.url + "/thumbnail"))
    assert media == "image/jpeg" and max(size) <= 128
    theirs = peers.theirs(sample.url + "/thumbnail", accept=None)
    if peers.modern:
        assert _image(theirs)[0] == "image/jpeg"
    else:
        assert theirs.status == 404


# --------------------------------------------------------------------------- bad requests


def _status_cases() -> list[Any]:
    mr = "{MR_small.dcm}"
    cases = [
        # path, query, accept, ours, stock 1.10, stock 1.12, the difference
        ("/studies/1.2.3/metadata", "", None, 404, 404, 404, None),
        ("/studies/1.2.3", "", MULTIPART_DICOM, 404, 404, 404, None),
        ("/studies/1.2.3/series", "", None, 200, 200, 200, None),
        ("{MR_small.dcm:series}/instances/1.2.3", "", MULTIPART_DICOM, 404, 404, 404, None),
        (f"{mr}/frames/0", "", None, 400, 400, 400, None),
        (f"{mr}/frames/abc", "", None, 400, 400, 400, None),
        (f"{mr}/frames/2", "", None, 404, 400, 400, "frames-out-of-range"),
        ("{rtplan.dcm}/frames/1", "", None, 404, 500, 500, "frames-no-pixels"),
        (mr, "", "image/png", 406, 400, 400, "wado-not-acceptable"),
        (f"{mr}/frames/1", "", "image/png", 406, 400, 400, "wado-not-acceptable"),
        (f"{mr}/rendered", "", DICOM, 406, 400, 400, "wado-not-acceptable"),
        (f"{mr}/rendered", "quality=500", None, 400, 400, 400, None),
        ("/studies", "limit=abc", None, 400, 400, 400, None),
        ("/studies", "offset=-1", None, 400, 500, 200, "qido-strict-params"),
        ("/studies", "NoSuchKey=1", None, 400, 200, 200, "qido-strict-params"),
        ("/studies", "StudyDate=garbage", None, 400, 200, 200, "qido-strict-params"),
        ("/series", "SOPInstanceUID=1.2.3", None, 400, 200, 200, "qido-strict-params"),
        ("/studies", "includefield=NoSuch", None, 400, 200, 200, "qido-strict-params"),
    ]
    return [pytest.param(*case, id=f"{case[0]}?{case[1]} {case[2] or ''}") for case in cases]


@pytest.mark.parametrize(
    ("path", "query", "accept", "ours", "stock_1_10", "stock_1_12", "known"), _status_cases()
)
def test_status_of_bad_requests(
    peers: Peers,
    path: str,
    query: str,
    accept: str | None,
    ours: int,
    stock_1_10: int,
    stock_1_12: int,
    known: str | None,
) -> None:
    """The status of each bad request on both sides; where they differ, ``known`` names
    the difference."""
    for name, sample in peers.samples.items():
        path = path.replace("{" + name + "}", sample.url)
        path = path.replace(
            "{" + name + ":series}", f"/studies/{sample.study}/series/{sample.series}"
        )
    stock = stock_1_12 if peers.modern else stock_1_10
    assert ours == stock or known in KNOWN
    assert peers.ours(path, params(query), accept=accept).status == ours
    assert peers.theirs(path, params(query), accept=accept).status == stock


def test_unreachable_study_is_not_found_alike(peers: Peers) -> None:
    """A study of another institution answers as one that does not exist (the stock
    Orthanc has no institutions: it shows everything)."""
    sample = peers.samples["CT_small.dcm"]
    other = peers.issuer.mint(subject="other", institution="Hospital B", scopes=("dicom.read",))
    headers = {"Authorization": f"Bearer {other}"}
    for path in (sample.url, sample.url + "/metadata", sample.url + "/frames/1"):
        answer = requests.get(peers.gateway + "/dicom-web" + path, headers=headers, timeout=60)
        missing = requests.get(
            peers.gateway + "/dicom-web" + path.replace(sample.sop, "1.2.3"),
            headers=headers,
            timeout=60,
        )
        assert answer.status_code == missing.status_code == 404
    assert peers.theirs(sample.url + "/metadata").status == 200


def test_known_differences_are_documented() -> None:
    """Every entry of KNOWN is in docs/conformance.md's table, and the table lists
    nothing else."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text()
    table = text.split("## Differences from a stock Orthanc", 1)[1]
    listed = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert listed == set(KNOWN)


# --------------------------------------------------------------------------- WADO-URI, STOW-RS


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
@pytest.mark.parametrize(
    "extra",
    ["contentType=application/dicom", "", "contentType=image/png", f"transferSyntax={EXPLICIT_LE}"],
    ids=["dicom", "default", "png", "explicit-le"],
)
def test_wado_uri(peers: Peers, name: str, extra: str) -> None:
    """WADO-URI (PS3.18 9), which both serve at /wado."""
    sample = peers.samples[name]
    query = f"requestType=WADO&studyUID={sample.study}&seriesUID={sample.series}"
    query += f"&objectUID={sample.sop}"
    if extra.startswith("transferSyntax"):
        query += "&contentType=application/dicom"
    query += f"&{extra}" if extra else ""
    answer = requests.get(
        f"{peers.gateway}/wado?{query}",
        headers={"Authorization": f"Bearer {peers.token}"},
        timeout=60,
    )
    ours = Answer(
        answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.content
    )
    theirs = raw_get(peers.stock.http_port, f"/wado?{query}", auth=peers.stock.auth, accept=None)
    dicom = extra == "contentType=application/dicom" or extra.startswith("transferSyntax")
    if dicom and sample.syntax == EXPLICIT_LE:
        assert ours.media_type == theirs.media_type == DICOM
        assert _dataset(ours.body) == _dataset(theirs.body)
    elif dicom:  # KNOWN["wado-uri-default-syntax"], KNOWN["wado-uri-transfer-syntax"]
        assert _syntax_of(theirs.body) == sample.syntax
        if sample.syntax in J2K:
            assert ours.status == 406  # KNOWN["wado-j2k"]
            assert sample.syntax.encode() in ours.body  # names what can be sent
        else:
            assert _syntax_of(ours.body) == EXPLICIT_LE
            mine, other = (
                pydicom.dcmread(io.BytesIO(ours.body)),
                pydicom.dcmread(io.BytesIO(theirs.body)),
            )
            assert mine.pixel_array.tobytes() == other.pixel_array.tobytes()
    elif sample.syntax in J2K:  # KNOWN["wado-j2k"]: no decoder to render with
        assert (ours.status, theirs.status) == (400, 500)
    elif extra:
        assert _image(ours) == _image(theirs)
    else:  # KNOWN["wado-uri-default-type"]
        assert (_image(ours)[0], _image(theirs)[0]) == ("image/jpeg", "image/png")
        assert _image(ours)[1] == _image(theirs)[1]


NOT_DICOM = b"--XX\r\nContent-Type: application/dicom\r\n\r\nnot DICOM\r\n--XX--\r\n"


@pytest.mark.parametrize(
    ("content_type", "ours", "stock", "known"),
    [
        ("application/json", 415, 415, None),
        (f"{MULTIPART_DICOM}; boundary=XX", 409, 400, "stow-unreadable"),
        ("multipart/related; boundary=XX", 409, 415, "stow-type-missing"),
    ],
)
def test_stow_refusals(
    peers: Peers, content_type: str, ours: int, stock: int, known: str | None
) -> None:
    """Requests that store nothing: the status on each side (``known`` where they
    differ); the archive names the failed part in a Store Instances Response."""
    assert ours == stock or known in KNOWN
    writer = peers.issuer.mint(
        subject="conformance-stow", institution="Hospital A", scopes=("dicom.write",)
    )
    answer = requests.post(
        f"{peers.gateway}/dicom-web/studies",
        data=NOT_DICOM,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {writer}"},
        timeout=60,
    )
    assert answer.status_code == ours, answer.text
    if ours == 409:
        (failed,) = answer.json()["00081198"]["Value"]
        assert failed["00081197"]["Value"] == [0xC000]
    theirs = requests.post(
        f"{peers.stock.url}/dicom-web/studies",
        data=NOT_DICOM,
        headers={"Content-Type": content_type},
        auth=peers.stock.auth,
        timeout=60,
    )
    assert theirs.status_code == stock, theirs.text
