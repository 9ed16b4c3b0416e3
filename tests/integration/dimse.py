"""What the DIMSE tests share: an archive of their own in which Hospital A has stored a
study, with a registered move destination (a storage SCP) per institution, and the dcmtk
and pynetdicom calls they make on it."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from synthetic import StudySpec, generate_study
from tests.integration.harness import INSTITUTIONS, Archive, free_port


@dataclass
class Receiver:
    """A storage SCP standing for an institution's workstation (a C-MOVE destination)."""

    ae_title: str
    port: int = field(default_factory=free_port)
    received: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_store(self, event: evt.Event) -> int:
        # the data set exactly as it came over the network (no decoding, no re-encoding)
        raw = event.request.DataSet.getvalue()
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            self.received[sop_uid] = raw
        return 0x0000

    def start(self) -> object:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        return ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)]
        )

    def take(self) -> dict[str, bytes]:
        with self.lock:
            got = dict(self.received)
            self.received.clear()
        return got


@dataclass
class Setup:
    archive: Archive
    study: list[Dataset]
    files: dict[str, bytes]  # SOP Instance UID -> Part 10 bytes as sent
    dest_a: Receiver
    dest_b: Receiver

    @property
    def study_uid(self) -> str:
        return str(self.study[0].StudyInstanceUID)


def dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part 10 file, without preamble and file meta."""
    fp = io.BytesIO(part10)
    pydicom.filereader.read_preamble(fp, False)
    pydicom.filereader._read_file_meta_info(fp)
    return fp.read()


@contextmanager
def dimse_setup(
    tmp_path_factory: pytest.TempPathFactory, name: str, spec: StudySpec
) -> Iterator[Setup]:
    """An archive of its own in which Hospital A (AE HOSPA) has stored ``spec``'s study,
    with a registered move destination per institution (added while it runs)."""
    home = tmp_path_factory.mktemp(name)
    arch = Archive(home / "home")
    arch.write_config(INSTITUTIONS)  # dicom_allow_get left at its default: off
    arch.up()
    servers = []
    try:
        dest_a, dest_b = Receiver("HOSPA_WS"), Receiver("HOSPB_WS")
        for institution, dest in (("Hospital A", dest_a), ("Hospital B", dest_b)):
            servers.append(dest.start())
            arch.vna(
                "institution", "add", institution, "--ae", dest.ae_title,
                "--host", "127.0.0.1", "--port", str(dest.port),
            )  # fmt: skip
        study = list(generate_study(spec))
        files: dict[str, bytes] = {}
        paths = []
        for i, ds in enumerate(study):
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            files[str(ds.SOPInstanceUID)] = buffer.getvalue()
            path = home / f"{i}.dcm"
            path.write_bytes(buffer.getvalue())
            paths.append(path)
        proc = arch.storescu("HOSPA", *paths)
        assert proc.returncode == 0, proc.stderr
        arch.stats()  # indexed: the catalog answers C-FIND
        yield Setup(arch, study, files, dest_a, dest_b)
    finally:
        for server in servers:
            server.shutdown()
        arch.down()


def findscu(
    arch: Archive, aet: str, level: str, keys: list[str], out: Path, model: str = "-S"
) -> list[Dataset]:
    """dcmtk findscu; the answers it wrote to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    args = [a for k in [f"QueryRetrieveLevel={level}", *keys] for a in ("-k", k)]
    proc = subprocess.run(
        ["findscu", model, "-aet", aet, "-aec", arch.aet, "-X", "-od", str(out), *args,
         "127.0.0.1", str(arch.dicom_port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def movescu(
    arch: Archive, aet: str, dest: str, keys: list[str]
) -> subprocess.CompletedProcess[str]:
    args = [a for k in keys for a in ("-k", k)]
    return subprocess.run(
        ["movescu", "-v", "-S", "-aet", aet, "-aec", arch.aet, "-aem", dest, *args,
         "127.0.0.1", str(arch.dicom_port)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def audit_records(arch: Archive) -> list[dict[str, object]]:
    with sqlite3.connect(arch.home / "catalog.db") as db:
        return [json.loads(b) for (b,) in db.execute("select body from audit_events order by seq")]


REFUSED_MOVE = 0xB000


def move_statuses(
    arch: Archive, aet: str, dest: str, study_uid: str, *, source: str = ""
) -> list[int] | None:
    """The statuses of one study-level C-MOVE sent from ``source`` (an address of this
    machine; any when empty), or None when the association is refused."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title=arch.aet, bind_address=(source, 0))
    if not assoc.is_established:
        return None
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    statuses = [
        int(status.Status)
        for status, _ in assoc.send_c_move(query, dest, StudyRootQueryRetrieveInformationModelMove)
        if status
    ]
    if assoc.is_established:
        assoc.release()
    return statuses


def move_status(arch: Archive, aet: str, dest: str, study_uid: str) -> int | None:
    statuses = move_statuses(arch, aet, dest, study_uid)
    assert statuses is not None
    return statuses[-1] if statuses else None
