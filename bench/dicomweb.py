"""DICOMweb benchmark: the gateway against Orthanc's own DICOMweb plugin, side by side.

The same synthetic CT studies go (C-STORE) into a fresh VNA archive and into a fresh plain
Orthanc with the DICOMweb plugin (file storage, ``StudiesMetadata: Full`` as in the
archive's own Orthanc). Then, alternating the two servers scenario by scenario:

* WADO-RS study retrieval (``multipart/related; type="application/dicom";
  transfer-syntax=*``): MB/s of DICOM body received and time to first body byte, with 1
  and ``--clients`` concurrent clients, each fetching every study ``--rounds`` times;
* WADO-RS study metadata (``application/dicom+json``), the same way;
* QIDO-RS latency p50/p95 for a few typical study searches (PatientID, date range,
  name wildcard, limit), one client;
* QIDO-RS at ``--big`` studies: a separate home whose catalog tables are filled directly
  (bulk inserts, no Orthanc), served by a gateway alone; p50/p95 per query.

Results go to a rich table and the ``bench.dicomweb`` section of ``bench/RESULTS.md``.

    .venv/bin/python -m bench.dicomweb [--quick] [--studies N] [--clients C] [--big N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zstandard
from rich.console import Console
from rich.table import Table
from sqlalchemy import MetaData

from archive.api import Catalog, open_store, pn_fold_values
from bench.common import (
    BENCH_DIR,
    PROJECT_ROOT,
    BenchError,
    PlainOrthanc,
    VnaArchive,
    command_line,
    free_ports,
    git_head,
    machine_facts,
    send_parallel,
    source_fingerprint,
    stop_process,
    terminate_on_sigterm,
    write_section,
)
from bench.link import ThrottledLink
from bench.replay import save_index
from compose.api import load_settings, resolve_workers, usable_cpus
from security.identity import EmbeddedIssuer
from synthetic import StudySpec, generate_studies, write_study

__all__ = ["OrthancDicomWeb", "main"]

SECTION_KEY = "bench.dicomweb"
AET, INSTITUTION = "BENCHA", "Bench Hospital"
DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# what Chromium sends (and what urllib3 sends with zstd support installed); --identity: none
BROWSER_ENCODINGS = "gzip, deflate, br, zstd"
JSON_ACCEPT = "application/dicom+json"
OURS, THEIRS = "gateway", "orthanc"
LABELS = {OURS: "VNA gateway", THEIRS: "Orthanc DICOMweb"}

console = Console(width=None if sys.stdout.isatty() else 150)


class OrthancDicomWeb(PlainOrthanc):
    """Plain Orthanc (file storage) with Debian's DICOMweb plugin and no other."""

    kind = "orthanc-dicomweb"

    def config(self) -> dict[str, Any]:
        config = super().config()
        plugins = load_settings(self.home).orthanc_plugin_dir
        config["Plugins"] = [str(plugins / "libOrthancDicomWeb.so")]
        config["DicomWeb"] = {
            "Enable": True,
            "Root": "/dicom-web/",
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        }
        return config


# --------------------------------------------------------------------------- HTTP client


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one server's DICOMweb root answers, and the headers it needs."""

    name: str
    port: int
    root: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Fetch:
    """One timed GET: seconds to the first body byte and to the last, body bytes."""

    ttfb: float
    seconds: float
    bytes: int


_local = threading.local()


def _connection(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection per thread and port (a client reuses its connection)."""
    conns: dict[int, http.client.HTTPConnection] = _local.__dict__.setdefault("conns", {})
    if port not in conns:
        conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    return conns[port]


def fetch(
    endpoint: Endpoint, path: str, accept: str, sink: Callable[[bytes], None] | None = None
) -> Fetch:
    """GET ``root + path`` (query strings are sent as given: Orthanc 1.10 does not
    percent-decode them), read the whole body in 1 MiB reads, time it."""
    conn = _connection(endpoint.port)
    start = time.perf_counter()
    try:
        conn.request("GET", endpoint.root + path, headers={**endpoint.headers, "Accept": accept})
        answer = conn.getresponse()
        # a client that asked for zstd decodes it, as a browser does: sizes and times are
        # of the DICOM bytes it ends up with
        decoder = (
            zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
            if answer.getheader("Content-Encoding", "").lower() == "zstd"
            else None
        )
        first: float | None = None
        size = 0
        while chunk := answer.read1(1 << 20):
            if first is None:
                first = time.perf_counter()
            if decoder is not None:
                chunk = decoder.decompress(chunk)
            size += len(chunk)
            if sink is not None:
                sink(chunk)
        # read1 leaves a Content-Length response open at its end: close it, so the
        # connection takes the next request
        size += len(answer.read())
    except (OSError, http.client.HTTPException):
        conn.close()
        raise
    end = time.perf_counter()
    if answer.status != 200:
        raise BenchError(f"{endpoint.name}: GET {path} answered {answer.status}")
    return Fetch((first or end) - start, end - start, size)


def close_connections() -> None:
    for conn in _local.__dict__.get("conns", {}).values():
        conn.close()
    _local.__dict__["conns"] = {}


@dataclass(slots=True)
class Throughput:
    """Many GETs by ``clients`` concurrent clients: wall time, bytes, per-request times."""

    clients: int
    wall: float
    fetches: list[Fetch]

    @property
    def mb_per_s(self) -> float:
        return sum(f.bytes for f in self.fetches) / 1e6 / self.wall

    @property
    def per_s(self) -> float:
        return len(self.fetches) / self.wall

    @property
    def ttfb_ms(self) -> float:
        return 1000 * statistics.median(f.ttfb for f in self.fetches)

    @property
    def latency_ms(self) -> float:
        return 1000 * statistics.median(f.seconds for f in self.fetches)


def run_clients(
    endpoint: Endpoint, paths: Sequence[str], accept: str, clients: int, rounds: int
) -> Throughput:
    """Each client fetches every path ``rounds`` times (starting at a different one)."""

    def client(k: int) -> list[Fetch]:
        try:
            order = [paths[(k + i) % len(paths)] for i in range(len(paths))]
            return [fetch(endpoint, p, accept) for _ in range(rounds) for p in order]
        finally:
            close_connections()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    return Throughput(clients, wall, [f for r in results for f in r])


def latencies(endpoint: Endpoint, path: str, repeats: int) -> list[float]:
    """Sequential GETs of one QIDO query (one warm-up first); milliseconds each."""
    fetch(endpoint, path, JSON_ACCEPT)
    out = [1000 * fetch(endpoint, path, JSON_ACCEPT).seconds for _ in range(repeats)]
    close_connections()
    return out


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --------------------------------------------------------------------------- data


def generate(directory: Path, args: argparse.Namespace) -> tuple[list[Path], list[StudySpec]]:
    """Synthetic CT studies: patients BENCH0001..., one day apart from 2024-01-01."""
    base = StudySpec(
        modality="CT",
        series=args.series,
        slices=args.slices,
        rows=512,
        columns=512,
        patient_id="BENCH0001",
        patient_name="Bench^Patient",
        institution=INSTITUTION,
        study_date="20240101",
        seed=2000,
    )
    specs = list(generate_studies(args.studies, base))
    files: list[Path] = []
    for k, spec in enumerate(specs):
        files.extend(write_study(spec, directory / f"study{k:03d}"))
    return files, specs


def _study_uids(files: Sequence[Path]) -> list[str]:
    import pydicom

    seen: dict[str, None] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        seen.setdefault(str(ds.StudyInstanceUID))
    return list(seen)


def _token(home: Path, url: str) -> str:
    issuer = EmbeddedIssuer.open_or_create(home / "keys", url, f"{url}/dicom-web")
    return issuer.mint(subject="bench", institution=INSTITUTION, scopes=("dicom.read",))


def _wait(check: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            if check():
                return
        if time.monotonic() > deadline:
            raise BenchError(f"gave up waiting for {what}")
        time.sleep(0.3)


def _count(endpoint: Endpoint, path: str) -> int:
    chunks: list[bytes] = []
    fetch(endpoint, path, JSON_ACCEPT, chunks.append)
    return len(json.loads(b"".join(chunks)))


# --------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Results:
    """Everything measured; keyed by side (gateway / orthanc) where there are two."""

    wado: dict[str, dict[int, Throughput]] = field(default_factory=dict)
    metadata: dict[str, dict[int, Throughput]] = field(default_factory=dict)
    qido: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    big: dict[str, list[float]] = field(default_factory=dict)
    big_rows: int = 0
    big_fill_seconds: float = 0.0
    study_bytes: dict[str, int] = field(default_factory=dict)
    # --ceiling: each side's saved study answers sent again by bench/replay.py
    ceiling: dict[str, dict[int, Throughput]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def qido_queries(specs: Sequence[StudySpec]) -> dict[str, str]:
    """Typical study searches on the loaded data (label -> query string)."""
    middle = specs[len(specs) // 2]
    last = specs[-1].study_date
    return {
        "PatientID exact": f"PatientID={middle.patient_id}",
        "StudyDate range": f"StudyDate={specs[0].study_date}-{last}",
        "PatientName wildcard": "PatientName=Bench*",
        "limit=2": "limit=2",
    }


def measure_side_by_side(
    work: Path, args: argparse.Namespace, results: Results, step: Callable[[str], None]
) -> None:
    """Load the data into both servers, then measure WADO-RS, metadata and QIDO."""
    step("generating studies")
    files, specs = generate(work / "data", args)
    uids = _study_uids(files)
    archive = VnaArchive("VNA archive", work / "vna")
    if args.blob_cache_mb is not None:
        archive.env["VNA_GATEWAY__BLOB_CACHE_MB"] = str(args.blob_cache_mb)
    if args.gateway_workers is not None:
        archive.env["VNA_GATEWAY__WORKERS"] = str(args.gateway_workers)
    orthanc = OrthancDicomWeb("Orthanc + DICOMweb", work / "orthanc")
    with archive, orthanc:
        archive.add_institution(INSTITUTION, AET)
        for target in (orthanc, archive):
            step(f"C-STORE into {target.name}")
            send_parallel([[work / "data"]], calling_aet=AET, target=target, log_dir=work / "logs")
        url = f"http://127.0.0.1:{archive.gateway_port}"
        encodings = {"Accept-Encoding": "identity" if args.identity else BROWSER_ENCODINGS}
        ours = Endpoint(
            LABELS[OURS],
            archive.gateway_port,
            "/dicom-web",
            {"Authorization": f"Bearer {_token(archive.home, url)}", **encodings},
        )
        theirs = Endpoint(LABELS[THEIRS], orthanc.http_port, "/dicom-web", encodings)
        links = contextlib.ExitStack()
        if args.link_mbps:
            # both servers behind their own emulated link of the same bandwidth
            ours = replace(
                ours, port=links.enter_context(ThrottledLink(ours.port, args.link_mbps)).port
            )
            theirs = replace(
                theirs, port=links.enter_context(ThrottledLink(theirs.port, args.link_mbps)).port
            )
        with links:
            step("waiting for the catalog to index every instance")

            def indexed() -> bool:
                stats = archive.stats()
                idle = stats.get("pending") == 0 and stats.get("index_backlog") == 0
                return idle and stats.get("instances") == len(files)

            _wait(indexed, "the catalog")
            for endpoint in (ours, theirs):
                if _count(endpoint, "/studies") != len(uids):
                    raise BenchError(f"{endpoint.name} does not list every study")
            sides = {OURS: ours, THEIRS: theirs}
            study_paths = [f"/studies/{uid}" for uid in uids]
            meta_paths = [f"{p}/metadata" for p in study_paths]
            for side, endpoint in sides.items():  # warm-up, and the byte counts to compare
                results.study_bytes[side] = sum(
                    fetch(endpoint, p, DICOM_ACCEPT).bytes for p in study_paths
                )
                for p in meta_paths:
                    fetch(endpoint, p, JSON_ACCEPT)
                close_connections()
                # every gateway worker process has its own metadata cache, and a connection
                # stays with one worker: warm them all, over as many connections as clients
                run_clients(endpoint, meta_paths, JSON_ACCEPT, args.clients, 1)
            ratio = results.study_bytes[OURS] / max(1, results.study_bytes[THEIRS])
            if not 0.98 < ratio < 1.02:
                results.warnings.append(
                    f"study bodies differ in size: gateway {results.study_bytes[OURS]:,} B, "
                    f"Orthanc {results.study_bytes[THEIRS]:,} B"
                )
            for what, paths, accept, store in (
                ("WADO-RS study", study_paths, DICOM_ACCEPT, results.wado),
                ("WADO-RS metadata", meta_paths, JSON_ACCEPT, results.metadata),
            ):
                for clients in (1, args.clients):
                    for side in (THEIRS, OURS):  # alternate, so drift hits both
                        step(f"{what}, {clients} client(s): {LABELS[side]}")
                        store.setdefault(side, {})[clients] = run_clients(
                            sides[side], paths, accept, clients, args.rounds
                        )
            if args.ceiling:
                measure_ceiling(work / "replay", sides, study_paths, args, results, step)
            for label, query in qido_queries(specs).items():
                for side in (THEIRS, OURS):
                    step(f"QIDO {label}: {LABELS[side]}")
                    results.qido.setdefault(side, {})[label] = latencies(
                        sides[side], f"/studies?{query}", args.qido_repeats
                    )


def _save_answer(endpoint: Endpoint, path: str, target: Path) -> tuple[str, str]:
    """GET one answer as sent (still content-coded) into ``target``; its type and coding."""
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=600)
    try:
        headers = {**endpoint.headers, "Accept": DICOM_ACCEPT}
        conn.request("GET", endpoint.root + path, headers=headers)
        answer = conn.getresponse()
        with open(target, "wb") as out:
            shutil.copyfileobj(answer, out, 1 << 20)
        if answer.status != 200:
            raise BenchError(f"{endpoint.name}: GET {path} answered {answer.status}")
        return answer.getheader("Content-Type", ""), answer.getheader("Content-Encoding", "")
    finally:
        conn.close()


def measure_ceiling(
    directory: Path,
    sides: dict[str, Endpoint],
    study_paths: Sequence[str],
    args: argparse.Namespace,
    results: Results,
    step: Callable[[str], None],
) -> None:
    """Each side's study answers, saved and sent again by a server that does no work.

    ``bench.replay`` answers from the page cache with ``sendfile``: what the clients get
    from it is what they can take in at most on this machine, so its ratio to the live
    Orthanc bounds the ratio any server can reach here with these clients.
    """
    directory.mkdir(parents=True, exist_ok=True)
    index: dict[str, tuple[str, str, str]] = {}
    for side, endpoint in sides.items():
        for i, path in enumerate(study_paths):
            name = f"{side}-{i}"
            content_type, encoding = _save_answer(endpoint, path, directory / name)
            index[f"/{side}{path}"] = (name, content_type, encoding)
    save_index(directory, index)
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.replay", str(port), str(directory)],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        replays = {side: replace(e, port=port, root=f"/{side}") for side, e in sides.items()}
        _wait(lambda: _replay_ready(replays[THEIRS], study_paths[0]), "the replay server", 30)
        for clients in (1, args.clients):
            for side in (THEIRS, OURS):
                step(f"ceiling, {clients} client(s): replay of the {LABELS[side]} answers")
                results.ceiling.setdefault(side, {})[clients] = run_clients(
                    replays[side], study_paths, DICOM_ACCEPT, clients, args.rounds
                )
    finally:
        stop_process(server, 30)


def _replay_ready(endpoint: Endpoint, path: str) -> bool:
    try:
        fetch(endpoint, path, DICOM_ACCEPT)
        return True
    except OSError:
        return False
    finally:
        close_connections()


# --------------------------------------------------------------------------- 100k studies

_FAMILY = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
]
_GIVEN = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hugo",
    "Ida",
    "Jonas",
    "Lena",
    "Max",
    "Nora",
    "Otto",
    "Paula",
]
_MODALITIES = ("CT", "MR", "CR", "US", "DX", "MG")
_FIRST_DAY = dt.date(2010, 1, 1)
_DAYS = 15 * 365


def fill_catalog(catalog: Catalog, n: int, institution_id: int, batch: int = 20_000) -> None:
    """``n`` studies (two per patient), one series and one instance each, as rows."""
    rng = random.Random(7)
    now = time.time()
    # the index's tables as the migrations made them, read from the database: only the
    # query package builds SQL on archive's own Table objects
    index = MetaData()
    index.reflect(catalog.engine, only=["patients", "studies", "series", "instances"])
    patients, studies, series, instances = (
        index.tables[name] for name in ("patients", "studies", "series", "instances")
    )
    with catalog.engine.begin() as conn:
        for start in range(0, n // 2 + n % 2, batch):
            rows = []
            for k in range(start, min(n // 2 + n % 2, start + batch)):
                name = f"{_FAMILY[k % len(_FAMILY)]}^{_GIVEN[k % len(_GIVEN)]}"
                rows.append(
                    {
                        "pk": k + 1,
                        "issuer": INSTITUTION,
                        "patient_id": f"P{k:07d}",
                        "patient_name": name,
                        # the folded groups PN matching reads (archive.names)
                        **pn_fold_values("patient_name", name),
                        "birth_date": f"{1930 + k % 80}0{1 + k % 9}1{k % 9}",
                        "sex": "FM"[k % 2],
                    }
                )
            conn.execute(patients.insert(), rows)
        for start in range(0, n, batch):
            study_rows, series_rows, instance_rows = [], [], []
            for k in range(start, min(n, start + batch)):
                uid = f"1.2.826.0.1.3680043.10.1{k:08d}"
                day = _FIRST_DAY + dt.timedelta(days=rng.randrange(_DAYS))
                study_rows.append(
                    {
                        "study_uid": uid,
                        "patient_pk": k // 2 + 1,
                        "study_date": day.strftime("%Y%m%d"),
                        "study_time": f"{8 + k % 10:02d}{k % 60:02d}00",
                        "accession_number": f"A{k:09d}",
                        "study_id": str(k % 100_000),
                        "description": "BENCH STUDY",
                        "referring_physician": "Referrer^Bench",
                        **pn_fold_values("referring_physician", "Referrer^Bench"),
                        "created_at": now,
                        "owner_institution_id": institution_id,
                    }
                )
                series_rows.append(
                    {
                        "series_uid": f"{uid}.1",
                        "study_uid": uid,
                        "modality": _MODALITIES[k % len(_MODALITIES)],
                        "series_number": 1,
                        "description": "BENCH SERIES",
                        "series_date": day.strftime("%Y%m%d"),
                    }
                )
                instance_rows.append(
                    {
                        "sop_uid": f"{uid}.1.1",
                        "series_uid": f"{uid}.1",
                        "study_uid": uid,
                        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                        "instance_number": 1,
                        "created_at": now,
                    }
                )
            conn.execute(studies.insert(), study_rows)
            conn.execute(series.insert(), series_rows)
            conn.execute(instances.insert(), instance_rows)
    if catalog.is_sqlite:  # statistics for the planner, as a long-lived catalog has them
        with catalog.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def big_queries(n: int) -> dict[str, Callable[[random.Random], str]]:
    """Label -> a query for one repetition (values vary, so no answer is cached)."""

    def day(rng: random.Random) -> dt.date:
        return _FIRST_DAY + dt.timedelta(days=rng.randrange(_DAYS - 40))

    return {
        "PatientID exact": lambda r: f"PatientID=P{r.randrange(n // 2):07d}",
        "AccessionNumber exact": lambda r: f"AccessionNumber=A{r.randrange(n):09d}",
        "StudyDate month, limit=100": lambda r: (
            f"StudyDate={day(r):%Y%m%d}-{day(r) + dt.timedelta(days=30):%Y%m%d}&limit=100"
        ),
        "PatientName prefix*, limit=100": lambda r: (
            f"PatientName={r.choice(_FAMILY)[:3]}*&limit=100"
        ),
        "StudyDate from + ModalitiesInStudy, limit=100": lambda r: (
            f"StudyDate={day(r):%Y%m%d}-&ModalitiesInStudy={r.choice(_MODALITIES)}&limit=100"
        ),
        "no filter, limit=100 (study list)": lambda r: "limit=100",
    }


@contextlib.contextmanager
def gateway_alone(home: Path) -> Iterator[Endpoint]:
    """The gateway of ``home`` with no Orthanc: QIDO is answered from the catalog."""
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VNA_")}
    env["VNA_HOME"] = str(home)
    env["VNA_GATEWAY__TLS"] = "false"  # plain HTTP, as the archive targets (bench/common.py)
    log = (home / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "compose.gateway", "--home", str(home), "--host", "127.0.0.1"]
        + ["--port", str(port), "--public-url", url],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        endpoint = Endpoint(
            "gateway", port, "/dicom-web", {"Authorization": f"Bearer {_token(home, url)}"}
        )

        def up() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"the gateway exited ({proc.returncode}); see {log.name}")
            return _count(endpoint, "/studies?limit=1") == 1

        _wait(up, "the gateway", 120)
        yield endpoint
    finally:
        close_connections()
        stop_process(proc, 60)
        log.close()


def measure_big(
    work: Path, args: argparse.Namespace, results: Results, step: Callable[[str], None]
) -> None:
    home = work / "big"
    home.mkdir(parents=True)
    step(f"filling a catalog with {args.big:,} studies")
    settings = load_settings(home)
    # as every process opens a home: the schema migrated and the keys made first (a home
    # whose catalog holds studies but has no keys is refused as one restored without them)
    catalog = open_store(settings).catalog
    try:
        institution = catalog.add_institution(INSTITUTION, AET)
        start = time.perf_counter()
        fill_catalog(catalog, args.big, institution.id)
        results.big_fill_seconds = time.perf_counter() - start
    finally:
        catalog.close()
    results.big_rows = args.big
    with gateway_alone(home) as endpoint:
        rng = random.Random(11)
        for label, make in big_queries(args.big).items():
            step(f"QIDO at {args.big:,} studies: {label}")
            fetch(endpoint, f"/studies?{make(rng)}", JSON_ACCEPT)
            results.big[label] = [
                1000 * fetch(endpoint, f"/studies?{make(rng)}", JSON_ACCEPT).seconds
                for _ in range(args.qido_repeats)
            ]


# --------------------------------------------------------------------------- reporting


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def _rows_transfer(results: Results, clients: Sequence[int]) -> list[list[str]]:
    rows = []
    for what, store in (("study (WADO-RS)", results.wado), ("metadata", results.metadata)):
        if not store:
            continue
        for c in clients:
            ours, theirs = store[OURS][c], store[THEIRS][c]
            rows.append(
                [
                    what,
                    str(c),
                    f"{ours.per_s:.1f}",
                    f"{theirs.per_s:.1f}",
                    _ratio(ours.per_s, theirs.per_s),
                    f"{ours.mb_per_s:.1f}",
                    f"{theirs.mb_per_s:.1f}",
                    f"{ours.ttfb_ms:.0f}",
                    f"{theirs.ttfb_ms:.0f}",
                    f"{ours.latency_ms:.0f}",
                    f"{theirs.latency_ms:.0f}",
                ]
            )
    return rows


TRANSFER_COLUMNS = [
    "retrieval",
    "clients",
    "gateway studies/s",
    "Orthanc studies/s",
    "ratio",
    "gateway MB/s",
    "Orthanc MB/s",
    "gateway TTFB ms",
    "Orthanc TTFB ms",
    "gateway ms/study",
    "Orthanc ms/study",
]


def _rows_ceiling(results: Results, clients: Sequence[int]) -> list[list[str]]:
    rows = []
    for c in clients:
        live = results.wado[THEIRS][c].per_s
        for side in (THEIRS, OURS):
            replay = results.ceiling[side][c]
            rows.append(
                [
                    f"the {LABELS[side]} answers",
                    str(c),
                    f"{replay.per_s:.1f}",
                    f"{replay.mb_per_s:.1f}",
                    _ratio(replay.per_s, live),
                    _ratio(results.wado[side][c].per_s, replay.per_s),
                ]
            )
    return rows


CEILING_COLUMNS = [
    "replayed",
    "clients",
    "studies/s",
    "MB/s",
    "ratio to live Orthanc",
    "live server / its replay",
]


def _rows_qido(results: Results) -> list[list[str]]:
    rows = []
    for label, ours in results.qido.get(OURS, {}).items():
        theirs = results.qido[THEIRS][label]
        p50, p95 = percentile(ours, 0.5), percentile(ours, 0.95)
        t50, t95 = percentile(theirs, 0.5), percentile(theirs, 0.95)
        rows.append(
            [label, f"{p50:.1f}", f"{p95:.1f}", f"{t50:.1f}", f"{t95:.1f}", _ratio(p95, t95)]
        )
    return rows


QIDO_COLUMNS = ["query", "gateway p50", "gateway p95", "Orthanc p50", "Orthanc p95", "p95 ratio"]


def _rows_big(results: Results) -> list[list[str]]:
    return [
        [
            label,
            f"{percentile(v, 0.5):.1f}",
            f"{percentile(v, 0.95):.1f}",
            "yes" if percentile(v, 0.95) < 50 else "**no**",
        ]
        for label, v in results.big.items()
    ]


BIG_COLUMNS = ["query", "p50 ms", "p95 ms", "p95 < 50 ms"]


def _table(title: str, columns: Sequence[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for k, col in enumerate(columns):
        table.add_column(col, justify="left" if k == 0 else "right")
    for row in rows:
        table.add_row(*(cell.replace("**", "") for cell in row))
    return table


def _md(columns: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|---" + "|--:" * (len(columns) - 1) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _cache_note(args: argparse.Namespace) -> str:
    if args.blob_cache_mb:
        return (
            f"`gateway.blob_cache_mb = {args.blob_cache_mb}` (plaintexts that passed "
            "verification kept in memory by blob id; hits skip the tier read)"
        )
    if args.identity:
        return (
            "defaults, identity encoding: every instance is read, decrypted, decompressed "
            "and verified against its keyed hash"
        )
    return (
        "defaults, zstd encoding (`gateway.zstd_transfer`): each stored part is read, "
        "decrypted (AES-GCM checked) and sent as the zstd frame the archive keeps; the "
        "client decompresses"
    )


def _workers_note(args: argparse.Namespace) -> str:
    setting = 0 if args.gateway_workers is None else args.gateway_workers
    count = resolve_workers(setting, usable_cpus())
    if args.gateway_workers is None:
        return f"`gateway.workers` default (0 = min(CPUs, 4): {count} here)"
    return f"`gateway.workers = {args.gateway_workers}` ({count})"


def _section(args: argparse.Namespace) -> str:
    if args.link_mbps:
        return f"{SECTION_KEY}.link"
    if args.blob_cache_mb:
        return f"{SECTION_KEY}.blobcache"
    return f"{SECTION_KEY}.identity" if args.identity else SECTION_KEY


def render_markdown(
    results: Results, meta: dict[str, Any], args: argparse.Namespace, command: str
) -> str:
    facts = meta["facts"]
    clients = (1, args.clients)
    lines = [
        "## DICOMweb: VNA gateway vs Orthanc's own DICOMweb plugin"
        + (f", gateway blob cache {args.blob_cache_mb} MB" if args.blob_cache_mb else ""),
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, "
        f"kernel {facts['kernel']}, {facts['filesystem']}; load average at start "
        f"{meta['load']}",
        f"- software: Orthanc {facts['orthanc']} with orthanc-dicomweb (Debian), "
        f"Python {facts['python']}",
        f"- code: HEAD {(meta.get('head') or 'unknown')[:12]}, sources "
        f"{meta['sources_before']}"
        + ("" if meta["sources_before"] == meta["sources_after"] else " (changed during run!)"),
    ]
    if args.studies:
        lines.append(
            f"- data: {args.studies} synthetic CT studies x {args.series} series x "
            f"{args.slices} slices, 512x512 int16, Explicit VR Little Endian "
            f"({meta['files']} instances, {meta['bytes'] / 1e6:,.1f} MB of DICOM files)"
        )
    if args.note:
        lines.append(f"- **{args.note}**")
    lines += [
        "",
        "How: both servers fresh in temporary homes on free ports, loaded with the same files "
        "over C-STORE; the archive runs as `vna up` (Orthanc + storage area + indexer + "
        "gateway), Orthanc is Debian's with file storage, `HttpCompressionEnabled` false and "
        "only the DICOMweb plugin (`StudiesMetadata`/`SeriesMetadata` `Full`, as in the "
        "archive's own Orthanc). The client is Python `http.client` with one keep-alive "
        "connection per client thread, reading 1 MiB at a time, on the same machine, "
        + (
            "sending `Accept-Encoding: identity`. "
            if args.identity
            else f"sending `Accept-Encoding: {BROWSER_ENCODINGS}` as a browser does and "
            "decoding a zstd answer as it reads (sizes and MB/s are of decoded DICOM "
            "bytes; Orthanc, with HTTP compression off, answers uncompressed). "
        )
        + f"Each client fetches every study {args.rounds} time(s) (starting at a different "
        "study); studies/s = requests answered by all clients / wall time; MB/s = body "
        "bytes received by all clients / wall time; TTFB = time to the "
        "first body byte (median); ms/study = median time per request. Study retrieval "
        f"asks for `{DICOM_ACCEPT}`, metadata for `{JSON_ACCEPT}`. Servers alternate "
        "scenario by scenario, Orthanc first. Ratio = gateway / Orthanc studies/s (> 1: "
        "gateway faster; the metadata documents differ in size, so not MB/s); target >= 2. "
        + (
            f"Both servers are reached through an emulated link of {args.link_mbps:g} Mbit/s "
            "(bench/link.py: a local TCP proxy per server pacing what the server sends, "
            "shared by all of its connections), as a reading centre reaches the archive. "
            if args.link_mbps
            else ""
        )
        + f"Gateway read path: {_cache_note(args)}. Gateway processes: {_workers_note(args)}. "
        "QIDO: one client, "
        f"{args.qido_repeats} sequential requests per query after one warm-up; query strings "
        "are sent unencoded (Orthanc 1.10 does not percent-decode them).",
        "",
    ]
    transfer = _rows_transfer(results, clients)
    if transfer:
        lines += ["### WADO-RS study and metadata retrieval", ""]
        lines += _md(TRANSFER_COLUMNS, transfer) + [""]
        if results.study_bytes:
            lines.append(
                f"Body bytes of one pass over the studies: gateway "
                f"{results.study_bytes[OURS]:,}, Orthanc {results.study_bytes[THEIRS]:,}."
            )
            lines.append("")
    if results.ceiling:
        lines += [
            "### Ceiling: the same answers from a server that does no work",
            "",
            "Each server's study answers, saved as sent (the gateway's still zstd-coded when "
            "the client accepted that), are sent again by `bench/replay.py` from the page "
            "cache with `sendfile`, to the same clients, on loopback. *ratio to live "
            "Orthanc*: replay studies/s / Orthanc's studies/s above; the replay of "
            "Orthanc's answers bounds the ratio any server can reach here against it with "
            "these clients. *live server / its replay*: how close each server comes to "
            "sending its own answers for free.",
            "",
        ]
        lines += _md(CEILING_COLUMNS, _rows_ceiling(results, clients)) + [""]
    qido = _rows_qido(results)
    if qido:
        lines += ["### QIDO-RS study search latency (ms), same data", ""]
        lines += _md(QIDO_COLUMNS, qido) + [""]
    if results.big:
        lines += [
            f"### QIDO-RS at {results.big_rows:,} studies in the catalog (gateway alone, ms)",
            "",
            f"A separate home whose catalog (SQLite) got {results.big_rows:,} study rows "  # noqa: S608
            f"({results.big_rows // 2:,} patients, one series and one instance row per study, "
            f"dates over 15 years, 6 modalities) by bulk insert in "
            f"{results.big_fill_seconds:.1f} s, then `ANALYZE`; the gateway answers from it "
            "with no Orthanc. Every repetition uses other values (patient, date, name "
            "prefix). Target: p95 < 50 ms.",
            "",
        ]
        lines += _md(BIG_COLUMNS, _rows_big(results)) + [""]
    if results.warnings:
        lines += ["**Warnings:**", ""] + [f"- {w}" for w in results.warnings] + [""]
    raw = {
        "wado": {s: {c: _raw(t) for c, t in v.items()} for s, v in results.wado.items()},
        "metadata": {s: {c: _raw(t) for c, t in v.items()} for s, v in results.metadata.items()},
        "qido_ms": {
            s: {k: [round(x, 2) for x in v] for k, v in q.items()} for s, q in results.qido.items()
        },  # noqa: E501
        "big_ms": {k: [round(x, 2) for x in v] for k, v in results.big.items()},
        "ceiling": {s: {c: _raw(t) for c, t in v.items()} for s, v in results.ceiling.items()},
    }
    lines += [
        "<details><summary>raw measurements (JSON)</summary>",
        "",
        "```json",
        json.dumps(raw, separators=(",", ":")),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines) + "\n"


def _raw(t: Throughput) -> dict[str, Any]:
    return {
        "wall_s": round(t.wall, 3),
        "bytes": sum(f.bytes for f in t.fetches),
        "requests": len(t.fetches),
        "mb_per_s": round(t.mb_per_s, 1),
        "per_s": round(t.per_s, 2),
        "ttfb_ms_median": round(t.ttfb_ms, 1),
    }


def print_tables(results: Results, args: argparse.Namespace) -> None:
    transfer = _rows_transfer(results, (1, args.clients))
    if transfer:
        console.print(_table("WADO-RS retrieval (gateway vs Orthanc)", TRANSFER_COLUMNS, transfer))
    if results.ceiling:
        rows = _rows_ceiling(results, (1, args.clients))
        console.print(_table("Ceiling: replayed answers", CEILING_COLUMNS, rows))
    if results.qido:
        console.print(_table("QIDO-RS latency, ms", QIDO_COLUMNS, _rows_qido(results)))
    if results.big:
        title = f"QIDO-RS at {results.big_rows:,} studies, ms"
        console.print(_table(title, BIG_COLUMNS, _rows_big(results)))


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dicomweb",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--studies", type=int, default=4, help="synthetic CT studies [4]; 0: skip")
    parser.add_argument("--series", type=int, default=2, help="series per study [2]")
    parser.add_argument("--slices", type=int, default=50, help="slices per series [50]")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients [8]")
    parser.add_argument("--rounds", type=int, default=3, help="passes per client [3]")
    parser.add_argument("--qido-repeats", type=int, default=50, help="requests per query [50]")
    parser.add_argument(
        "--big", type=int, default=100_000, help="studies in the big catalog; 0: skip"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small run: 2 studies x 1 series x 20 slices, 1 round, 20 QIDO repeats",
    )
    parser.add_argument(
        "--blob-cache-mb",
        type=int,
        default=None,
        help="gateway.blob_cache_mb for the archive (default: its own default, off); "
        f"results then go to the {SECTION_KEY}.blobcache section",
    )
    parser.add_argument(
        "--identity",
        action="store_true",
        help="the client sends Accept-Encoding: identity (no zstd transfer); results go "
        f"to the {SECTION_KEY}.identity section",
    )
    parser.add_argument(
        "--link-mbps",
        type=float,
        default=0.0,
        help="reach both servers through an emulated link of this many Mbit/s (bench/link.py; "
        f"0: directly); results go to the {SECTION_KEY}.link section",
    )
    parser.add_argument(
        "--gateway-workers",
        type=int,
        default=None,
        help="gateway.workers for the archive (default: its own default, 0 = min(CPUs, 4))",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also send each server's saved study answers again from a server that does no "
        "work (bench/replay.py): the most these clients can take in on this machine",
    )
    parser.add_argument("--note", default="", help="a line for RESULTS.md (e.g. machine load)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="do not touch --out")
    parser.add_argument("--work-dir", help="parent of the temporary directory [system temp]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies, args.series, args.slices = min(args.studies, 2), 1, 20
        args.rounds, args.qido_repeats = 1, 20
    for name in ("series", "slices", "clients", "rounds", "qido_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.studies < 0 or args.big < 0:
        parser.error("--studies and --big must be >= 0")
    if args.ceiling and (args.link_mbps or not args.studies):
        parser.error("--ceiling measures on loopback: not with --link-mbps, and needs --studies")
    return args


def run(args: argparse.Namespace) -> tuple[Results, dict[str, Any]]:
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vna-bench-dicomweb-", dir=args.work_dir))
    results = Results()
    meta: dict[str, Any] = {
        "head": git_head(),
        "sources_before": source_fingerprint(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "files": 0,
        "bytes": 0,
    }

    def step(text: str) -> None:
        console.log(text)

    try:
        version = "unknown"
        if args.studies:
            with OrthancDicomWeb("version probe", work / "probe") as probe:
                version = str(probe.system().get("Version", "unknown"))
            measure_side_by_side(work, args, results, step)
            files = [p for p in (work / "data").rglob("*") if p.is_file()]
            meta["files"], meta["bytes"] = len(files), sum(f.stat().st_size for f in files)
        if args.big:
            measure_big(work, args, results, step)
        meta["facts"] = machine_facts(work, version)
        meta["sources_after"] = source_fingerprint()
    finally:
        if args.keep:
            console.print(f"kept the work directory {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results, meta


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        with terminate_on_sigterm():
            results, meta = run(args)
    except (KeyboardInterrupt, SystemExit) as exc:
        console.print("[yellow]interrupted; servers stopped and temporary files removed")
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    print_tables(results, args)
    for warning in results.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if not args.no_write:
        section = _section(args)
        write_section(
            args.out,
            section,
            render_markdown(results, meta, args, command_line("bench.dicomweb", argv)),
        )
        console.print(f"wrote the {section} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
