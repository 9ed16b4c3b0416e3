"""Ingest benchmark: C-STORE into plain Orthanc and into the archive, side by side.

Four targets, each fresh in its own temporary home on free ports: plain Orthanc with its
default file storage, plain Orthanc with ``StorageCompression``, the VNA archive, and a
ceiling: Orthanc with the smallest Python storage area (:data:`MINIMAL_STORAGE_AREA`). For
each: one storescu association, then a re-send of the same files from a second AE (after a
restart, so the bytes at rest can be measured in between), and into a second fresh target
``--associations`` parallel storescu processes on disjoint file sets. Results go to a rich
table and a section of ``bench/RESULTS.md``. Servers and storescu run with ``TCP_NODELAY=1``
unless ``--no-tcp-nodelay`` (see :func:`bench.common.dicom_env`).

    .venv/bin/python -m bench.ingest [--studies N] [--slices N] [--runs K] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.common import (
    BENCH_DIR,
    BenchError,
    DiskUsage,
    PlainOrthanc,
    SendResult,
    Target,
    VnaArchive,
    command_line,
    disk_breakdown,
    disk_usage,
    git_head,
    machine_facts,
    partition,
    send_parallel,
    source_fingerprint,
    terminate_on_sigterm,
    write_section,
)
from compose.api import load_settings
from synthetic import StudySpec, generate_studies, write_study

__all__ = ["MINIMAL_STORAGE_AREA", "TARGETS", "TargetRun", "main", "run_benchmark"]

# The least a Python storage area can do: no split, hash, compression, encryption or
# catalog, each file written and fdatasynced as Orthanc's own storage does, and the copy of
# the header that Orthanc 1.10 also asks a storage area without range reads to keep (the
# archive keeps it as catalog references to the header blob) held in memory. Its speed
# bounds what any storage area in Orthanc's Python plugin can reach on this machine. Kept
# as text, written into the target's home: the archive's one module importing ``orthanc``
# stays the only one.
MINIMAL_STORAGE_AREA = """\
import os
import orthanc

ROOT = {root!r}
HEADER_COPY = 3  # Orthanc's FileContentType_DicomUntilPixelData
in_memory = {{}}


def path(uuid):
    return os.path.join(ROOT, uuid[0:2], uuid[2:4], uuid)


def create(uuid, content_type, data):
    if int(content_type) == HEADER_COPY:
        in_memory[uuid] = bytes(data)
        return
    target = path(uuid)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read(uuid, content_type):
    if uuid in in_memory:
        return in_memory[uuid]
    with open(path(uuid), "rb") as handle:
        return handle.read()


def remove(uuid, content_type):
    if in_memory.pop(uuid, None) is None:
        try:
            os.unlink(path(uuid))
        except FileNotFoundError:
            pass


orthanc.RegisterStorageArea(create, read, remove)
"""


class MinimalPythonStorage(PlainOrthanc):
    """Debian's Orthanc with :data:`MINIMAL_STORAGE_AREA` as its storage (the ceiling)."""

    kind = "orthanc-python-minimal"

    def config(self) -> dict[str, Any]:
        config = super().config()
        script = self.home / "minimal_storage_area.py"
        script.write_text(MINIMAL_STORAGE_AREA.format(root=str(self.home / "storage")))
        plugins = load_settings(self.home).orthanc_plugin_dir
        config["Plugins"] = [str(plugins / "libOrthancPython.so")]
        config["PythonScript"] = str(script)
        config["StoreMD5ForAttachments"] = False  # as in the archive's Orthanc
        return config


SECTION_KEY = "bench.ingest"
SECTION_KEY_NAGLE = "bench.ingest.nagle"  # --no-tcp-nodelay: dcmtk's stock socket setting
FIRST_AE, SECOND_AE = "BENCHA", "BENCHB"
FIRST_INSTITUTION, SECOND_INSTITUTION = "Bench Hospital", "Second Hospital"
BASELINE = "orthanc"
# key -> (label, factory(name, home, tcp_nodelay))
TARGETS: dict[str, tuple[str, Callable[[str, Path, bool], Target]]] = {
    "orthanc": ("plain Orthanc", lambda n, h, nd: PlainOrthanc(n, h, tcp_nodelay=nd)),
    "orthanc-zip": (
        "plain Orthanc + StorageCompression",
        lambda n, h, nd: PlainOrthanc(n, h, compression=True, tcp_nodelay=nd),
    ),
    "vna": ("VNA archive", lambda n, h, nd: VnaArchive(n, h, tcp_nodelay=nd)),
    "python-minimal": (
        "ceiling: smallest Python storage area",
        lambda n, h, nd: MinimalPythonStorage(n, h, tcp_nodelay=nd),
    ),
}

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass(slots=True)
class TargetRun:
    """Everything measured on one target in one run."""

    single: SendResult
    parallel: SendResult
    resend: SendResult
    cpu_single: float  # CPU seconds of the Orthanc process during the send
    cpu_parallel: float
    cpu_resend: float
    disk_live: DiskUsage  # right after the 1-association ingest, server still running
    disk: DiskUsage  # at rest (stopped) after the 1-association ingest
    disk_parallel: DiskUsage  # at rest after the parallel ingest
    disk_resend: DiskUsage  # at rest after the re-send
    breakdown: dict[str, DiskUsage] = field(default_factory=dict)
    stats: dict[str, Any] | None = None
    stats_resend: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- measuring


def generate(
    directory: Path, studies: int, series: int, slices: int, on_study: Callable[[], None]
) -> list[Path]:
    """Write the synthetic CT studies once; every target gets the same files."""
    base = StudySpec(
        modality="CT",
        series=series,
        slices=slices,
        rows=512,
        columns=512,
        patient_id="BENCH0001",
        patient_name="Bench^Patient",
        institution=FIRST_INSTITUTION,
        seed=1000,
    )
    files: list[Path] = []
    for k, spec in enumerate(generate_studies(studies, base)):
        files.extend(write_study(spec, directory / f"study{k:03d}"))
        on_study()
    return files


def _check_count(target: Target, expected: int, what: str) -> None:
    found = target.count_instances()
    if found != expected:
        raise BenchError(
            f"{target.name}: {what}: Orthanc counts {found} instances, "
            f"{expected} files were sent; see {target.home}"
        )


def _prepare(target: Target) -> None:
    if isinstance(target, VnaArchive):
        target.add_institution(FIRST_INSTITUTION, FIRST_AE)
        target.add_institution(SECOND_INSTITUTION, SECOND_AE)


def _grant_resend(target: Target, data_dir: Path) -> None:
    """The second institution may store into the first's studies only with a read+report
    grant (the ownership rule C-STORE shares with STOW-RS): give it one per study."""
    if not isinstance(target, VnaArchive):
        return
    study_uids = {
        str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            .StudyInstanceUID)
        for path in sorted(data_dir.rglob("*.dcm"))
    }  # fmt: skip
    for study_uid in sorted(study_uids):
        target.vna(
            "grant", "add", study_uid, "--from", FIRST_INSTITUTION, "--to", SECOND_INSTITUTION,
            "--permission", "read+report",
        )  # fmt: skip


def _timed_send(
    target: Target, groups: Sequence[Sequence[Path]], aet: str, log_dir: Path
) -> tuple[SendResult, float]:
    cpu = target.cpu_seconds()
    result = send_parallel(groups, calling_aet=aet, target=target, log_dir=log_dir)
    return result, target.cpu_seconds() - cpu


def measure_target(
    key: str,
    root: Path,
    data_dir: Path,
    parts: list[Path],
    n_files: int,
    step: Callable[[str], None],
    tcp_nodelay: bool = True,
) -> TargetRun:
    """Fresh target: 1 association, restart, re-send; fresh target: parallel associations."""
    label, factory = TARGETS[key]
    logs = root / "logs"
    target = factory(f"{label} (1 assoc)", root / "single", tcp_nodelay)
    step(f"{label}: 1 association")
    with target:
        _prepare(target)
        single, cpu_single = _timed_send(target, [[data_dir]], FIRST_AE, logs)
        _check_count(target, n_files, "after the 1-association send")
        disk_live = disk_usage(target.home)
    disk = disk_usage(target.home)
    breakdown = disk_breakdown(target.home)
    stats = target.stats() if isinstance(target, VnaArchive) else None
    warnings = _catalog_warnings(label, stats, n_files, "after the 1-association ingest")

    step(f"{label}: re-send from {SECOND_AE}")
    with target:
        _grant_resend(target, data_dir)
        resend, cpu_resend = _timed_send(target, [[data_dir]], SECOND_AE, logs)
        _check_count(target, n_files, f"after the re-send from {SECOND_AE}")
    disk_resend = disk_usage(target.home)
    stats_resend = target.stats() if isinstance(target, VnaArchive) else None
    warnings += _catalog_warnings(label, stats_resend, n_files, "after the re-send")
    if stats and stats_resend and stats_resend.get("blobs") != stats.get("blobs"):
        warnings.append(
            f"{label}: the re-send added blobs ({stats.get('blobs')} -> "
            f"{stats_resend.get('blobs')}); equal content should be stored once"
        )
    shutil.rmtree(target.home)

    step(f"{label}: {len(parts)} associations")
    target = factory(f"{label} ({len(parts)} assoc)", root / "parallel", tcp_nodelay)
    with target:
        _prepare(target)
        parallel, cpu_parallel = _timed_send(target, [[p] for p in parts], FIRST_AE, logs)
        _check_count(target, n_files, f"after the {len(parts)}-association send")
    disk_parallel = disk_usage(target.home)
    shutil.rmtree(target.home)
    return TargetRun(
        single,
        parallel,
        resend,
        cpu_single,
        cpu_parallel,
        cpu_resend,
        disk_live,
        disk,
        disk_parallel,
        disk_resend,
        breakdown,
        stats,
        stats_resend,
        warnings,
    )


def _catalog_warnings(
    label: str, stats: dict[str, Any] | None, expected: int, when: str
) -> list[str]:
    """The archive's own count must match Orthanc's once it has stopped cleanly."""
    if stats is None or stats.get("instances") == expected:
        return []
    return [
        f"{label}: `vna stats` counts {stats.get('instances')} instances {when} (stopped), "
        f"Orthanc stored {expected}: the catalog lost or did not flush index rows"
    ]


def orthanc_version(work: Path) -> str:
    """Version of the plain Orthanc binary, from its ``/system``."""
    with PlainOrthanc("version probe", work / "probe") as probe:
        version = str(probe.system().get("Version", "unknown"))
    shutil.rmtree(work / "probe", ignore_errors=True)
    return version


def run_benchmark(args: argparse.Namespace) -> tuple[dict[str, list[TargetRun]], dict[str, Any]]:
    """Generate the data once, then measure every target ``args.runs`` times, interleaved."""
    keys = [k.strip() for k in args.targets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in TARGETS]
    if unknown:
        raise BenchError(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vna-bench-ingest-", dir=args.work_dir))
    runs: dict[str, list[TargetRun]] = {k: [] for k in keys}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            gen = progress.add_task("generating studies", total=args.studies)
            files = generate(
                work / "data", args.studies, args.series, args.slices, lambda: progress.advance(gen)
            )
            parts = partition(files, args.associations, work / "parts")
            meta: dict[str, Any] = {
                "files": len(files),
                "bytes": sum(f.stat().st_size for f in files),
                "facts": machine_facts(work, orthanc_version(work)),
                "work": str(work),
                "head": git_head(),
                "sources_before": source_fingerprint(),
            }
            total = args.runs * len(keys) * 3
            task = progress.add_task("measuring", total=total)
            started = False

            for run in range(args.runs):
                for key in keys:

                    def step(text: str, run: int = run) -> None:
                        nonlocal started
                        if started:
                            progress.advance(task)
                        started = True
                        progress.update(task, description=f"run {run + 1}/{args.runs} · {text}")

                    runs[key].append(
                        measure_target(
                            key,
                            work / f"run{run}-{key}",
                            work / "data",
                            parts,
                            len(files),
                            step,
                            args.tcp_nodelay,
                        )
                    )
            progress.advance(task)
            progress.update(task, description="measured")
            meta["sources_after"] = source_fingerprint()
    finally:
        if args.keep:
            console.print(f"kept the work directory {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return runs, meta


# --------------------------------------------------------------------------- reporting


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians over the runs of one target."""

    label: str
    rate: dict[str, float]  # scenario -> instances/s
    mbps: dict[str, float]
    seconds: dict[str, float]
    cpu_per_instance_ms: dict[str, float]
    allocated: float
    apparent: float
    allocated_live: float
    allocated_parallel: float
    resend_growth: float


SCENARIOS = ("single", "parallel", "resend")


def summarize(key: str, results: list[TargetRun]) -> Summary:
    def med(get: Callable[[TargetRun], float]) -> float:
        return _median([get(r) for r in results])

    sends = {s: [getattr(r, s) for r in results] for s in SCENARIOS}
    cpus = {s: [getattr(r, f"cpu_{s}") for r in results] for s in SCENARIOS}
    return Summary(
        label=TARGETS[key][0],
        rate={s: _median([x.instances_per_s for x in v]) for s, v in sends.items()},
        mbps={s: _median([x.mb_per_s for x in v]) for s, v in sends.items()},
        seconds={s: _median([x.seconds for x in v]) for s, v in sends.items()},
        cpu_per_instance_ms={
            s: 1000 * _median([c / x.files for c, x in zip(cpus[s], v, strict=True)])
            for s, v in sends.items()
        },
        allocated=med(lambda r: r.disk.allocated),
        apparent=med(lambda r: r.disk.apparent),
        allocated_live=med(lambda r: r.disk_live.allocated),
        allocated_parallel=med(lambda r: r.disk_parallel.allocated),
        resend_growth=med(lambda r: r.disk_resend.allocated - r.disk.allocated),
    )


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "n/a"


def render_markdown(
    runs: dict[str, list[TargetRun]], meta: dict[str, Any], args: argparse.Namespace, command: str
) -> str:
    """The RESULTS.md section of this benchmark."""
    sums = {k: summarize(k, v) for k, v in runs.items()}
    base = sums.get(BASELINE)
    facts = meta["facts"]
    n_assoc = args.associations
    lines = [
        "## Ingest (C-STORE): plain Orthanc vs VNA archive"
        + ("" if args.tcp_nodelay else ", stock dcmtk sockets (Nagle on)"),
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, "
        f"kernel {facts['kernel']}, {facts['filesystem']}",
        f"- software: Orthanc {facts['orthanc']} (Debian), Python {facts['python']}, "
        f"{facts['dcmtk']}",
        f"- code: HEAD {(meta.get('head') or 'unknown')[:12]}, {_sources_note(meta)}",
        f"- data: {args.studies} synthetic CT studies x {args.series} series x {args.slices} "
        f"slices, 512x512 int16, Explicit VR Little Endian = {meta['files']} instances, "
        f"{meta['bytes'] / 1e6:,.1f} MB (MB = 10^6 bytes of DICOM files sent)",
        f"- runs: {args.runs} (medians reported); every target fresh in its own temporary "
        "home on free ports, targets interleaved within a run",
        "- sockets: "
        + (
            "`TCP_NODELAY=1` in the environment of storescu and of every server (Orthanc's "
            "DICOM server is dcmtk too): dcmtk 3.6.7 otherwise leaves Nagle's algorithm on, "
            "and every C-STORE then waits for delayed ACKs (~40 ms each on Linux), which caps "
            "any server at ~20 instances/s per association; see the `bench.ingest.nagle` "
            "section for that case"
            if args.tcp_nodelay
            else "`TCP_NODELAY=0` (dcmtk's default, Nagle on): every C-STORE waits for delayed "
            "ACKs (~40 ms each on Linux), so these numbers measure that wait much more than "
            "the servers; compare the `bench.ingest` section"
        ),
        "",
        "How: `storescu +sd +r` from dcmtk (without `-nh`, so a refused instance "
        "fails the send with a non-zero exit); wall time from the first storescu start to the "
        f"last exit; storescu exit codes checked and `/statistics` CountInstances must equal the "
        f"files sent. *1 assoc*: one storescu ({FIRST_AE}) into a fresh target. *re-send*: the "
        f"same target is stopped (bytes at rest measured) and started again, then the same "
        f"files are sent again from {SECOND_AE} (for the archive a second registered "
        "institution); Orthanc 1.10 writes the attachments of an instance it already has, "
        "then removes them and answers success, so a re-send is not free for any target. "
        f"*{n_assoc} assoc*: {n_assoc} concurrent storescu processes on "
        f"{n_assoc} disjoint contiguous file sets into another fresh target. Bytes on disk: "
        "walk of the whole target home after a clean stop (plain Orthanc: storage + SQLite "
        "index + config + log; archive: blobs, catalog, keys, Orthanc index, config, logs); "
        "allocated = st_blocks x 512, apparent = st_size. Server CPU = user+system seconds "
        "of the Orthanc process during the send, per instance."
        + (
            " *ceiling*: Debian's Orthanc with the smallest possible storage area in its "
            "Python plugin (`MINIMAL_STORAGE_AREA` in bench/ingest.py: each file written and "
            "fdatasynced as Orthanc's own storage does, Orthanc's MD5 off as in the archive, "
            "the header copy Orthanc 1.10 also stores held in memory; no split, hash, "
            "compression, encryption or catalog): what any Python storage area can reach "
            "here, so its margin over plain Orthanc is all the time the archive's own work "
            "may take for parity."
            if "python-minimal" in sums
            else ""
        ),
        "",
        f"| target | 1 assoc inst/s | 1 assoc MB/s | {n_assoc} assoc inst/s | "
        f"{n_assoc} assoc MB/s | re-send inst/s | re-send MB/s | server CPU ms/inst "
        f"(1 / {n_assoc} / re-send) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in sums.values():
        cpu = " / ".join(f"{s.cpu_per_instance_ms[x]:.1f}" for x in SCENARIOS)
        lines.append(
            f"| {s.label} | {s.rate['single']:.1f} | {s.mbps['single']:.1f} | "
            f"{s.rate['parallel']:.1f} | {s.mbps['parallel']:.1f} | "
            f"{s.rate['resend']:.1f} | {s.mbps['resend']:.1f} | {cpu} |"
        )
    lines += [
        "",
        "| target | on disk (allocated) | apparent | live, right after ingest | "
        f"after {n_assoc}-assoc ingest | growth on re-send |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for s in sums.values():
        lines.append(
            f"| {s.label} | {_mib(s.allocated)} | {_mib(s.apparent)} | "
            f"{_mib(s.allocated_live)} | {_mib(s.allocated_parallel)} | "
            f"{_mib(s.resend_growth)} |"
        )
    if base is not None:
        lines += [
            "",
            "Ratios to plain Orthanc (default storage). Speed: target/plain instances per "
            "second, >1 means faster. Bytes: target/plain bytes on disk at rest (allocated), "
            "the archive's goal is < 0.5.",
            "",
            f"| target | speed 1 assoc | speed {n_assoc} assoc | speed re-send | "
            "bytes (allocated) | bytes (apparent) |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for key, s in sums.items():
            if key == BASELINE:
                continue
            lines.append(
                f"| {s.label} | {_ratio(s.rate['single'], base.rate['single'])} | "
                f"{_ratio(s.rate['parallel'], base.rate['parallel'])} | "
                f"{_ratio(s.rate['resend'], base.rate['resend'])} | "
                f"{_ratio(s.allocated, base.allocated)} | {_ratio(s.apparent, base.apparent)} |"
            )
    vna_runs = runs.get("vna")
    if vna_runs:
        last = vna_runs[-1]
        lines += [
            "",
            "Archive home at rest after the 1-association ingest (last run):",
            "",
            "| entry | allocated | apparent | files |",
            "|---|--:|--:|--:|",
        ]
        for name, usage in sorted(last.breakdown.items(), key=lambda kv: -kv[1].allocated):
            lines.append(
                f"| {name} | {_mib(usage.allocated)} | {_mib(usage.apparent)} | {usage.files} |"
            )
        if last.stats is not None:
            keep = (
                "instances",
                "attachments",
                "logical_bytes",
                "unique_bytes",
                "stored_bytes",
                "blobs",
                "dedup_ratio",
                "compression_ratio",
                "total_ratio",
            )
            after = last.stats_resend or {}
            lines += [
                "",
                "`vna stats --json` (last run), after the ingest and after the re-send:",
                "",
                "| field | after ingest | after re-send |",
                "|---|--:|--:|",
            ]
            for name in keep:
                lines.append(f"| {name} | {last.stats.get(name)} | {after.get(name)} |")
    warnings = all_warnings(runs, meta)
    if warnings:
        lines += ["", "**Warnings:**", ""] + [f"- {w}" for w in warnings]
    raw = {key: [_jsonable(r) for r in results] for key, results in runs.items()}
    lines += [
        "",
        "<details><summary>raw per-run measurements (JSON)</summary>",
        "",
        "```json",
        json.dumps(raw, indent=None, separators=(",", ":")),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines) + "\n"


def _sources_note(meta: dict[str, Any]) -> str:
    before, after = meta.get("sources_before"), meta.get("sources_after")
    if before == after:
        return f"working-tree sources {before} (sha256 of the *.py files, unchanged during the run)"
    return (
        f"working-tree sources changed during the run ({before} -> {after}): "
        "targets started later ran other code"
    )


def all_warnings(runs: dict[str, list[TargetRun]], meta: dict[str, Any]) -> list[str]:
    """Everything a reader must know before trusting the numbers."""
    found = [w for results in runs.values() for r in results for w in r.warnings]
    if meta.get("sources_before") != meta.get("sources_after"):
        found.append(
            "the project's sources changed while the benchmark ran "
            f"({meta.get('sources_before')} -> {meta.get('sources_after')}); run it again"
        )
    return list(dict.fromkeys(found))


def _jsonable(run: TargetRun) -> dict[str, Any]:
    data = asdict(run)
    for name in SCENARIOS:
        data[name]["seconds"] = round(data[name]["seconds"], 3)
        data[f"cpu_{name}"] = round(data[f"cpu_{name}"], 2)
    return data


def print_table(runs: dict[str, list[TargetRun]], associations: int) -> None:
    """The summary for the terminal."""
    sums = {k: summarize(k, v) for k, v in runs.items()}
    base = sums.get(BASELINE)
    table = Table(title="C-STORE ingest (medians)")
    for col in (
        "target",
        "1 assoc inst/s",
        "MB/s",
        f"{associations} assoc inst/s",
        "MB/s",
        "re-send inst/s",
        "MB/s",
        "on disk",
        "speed vs plain (1/N/re)",
        "bytes vs plain",
    ):
        table.add_column(col, justify="left" if col == "target" else "right")
    for s in sums.values():
        ratios = bytes_ratio = "-"
        if base is not None:
            ratios = " / ".join(
                _ratio(s.rate[x], base.rate[x]) for x in ("single", "parallel", "resend")
            )
            bytes_ratio = _ratio(s.allocated, base.allocated)
        table.add_row(
            s.label,
            f"{s.rate['single']:.1f}",
            f"{s.mbps['single']:.1f}",
            f"{s.rate['parallel']:.1f}",
            f"{s.mbps['parallel']:.1f}",
            f"{s.rate['resend']:.1f}",
            f"{s.mbps['resend']:.1f}",
            _mib(s.allocated),
            ratios,
            bytes_ratio,
        )
    console.print(table)


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--studies", type=int, default=4, help="synthetic CT studies [4]")
    parser.add_argument("--series", type=int, default=2, help="series per study [2]")
    parser.add_argument("--slices", type=int, default=50, help="slices per series [50]")
    parser.add_argument("--runs", type=int, default=1, help="repetitions, median kept [1]")
    parser.add_argument(
        "--associations", type=int, default=4, help="parallel storescu associations [4]"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR / "RESULTS.md",
        help="results file whose ingest section is replaced [bench/RESULTS.md]",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch --out")
    parser.add_argument("--work-dir", help="parent of the temporary directory [system temp]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--tcp-nodelay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TCP_NODELAY=1 for storescu and every server (dcmtk keeps Nagle's algorithm on "
        "otherwise and each C-STORE then waits ~40 ms for delayed ACKs) [on]",
    )
    args = parser.parse_args(argv)
    for name in ("studies", "series", "slices", "runs", "associations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        with terminate_on_sigterm():
            runs, meta = run_benchmark(args)
    except (KeyboardInterrupt, SystemExit) as exc:
        console.print("[yellow]interrupted; servers stopped and temporary files removed")
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
    except BenchError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}")
        return 1
    print_table(runs, args.associations)
    for warning in all_warnings(runs, meta):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if not args.no_write:
        key = SECTION_KEY if args.tcp_nodelay else SECTION_KEY_NAGLE
        write_section(
            args.out, key, render_markdown(runs, meta, args, command_line("bench.ingest", argv))
        )
        console.print(f"wrote the {key} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
