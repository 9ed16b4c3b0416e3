"""Who a DICOM peer is, checked on every association by a real archive: an AE title counts
only from its registered host (spoofing from another loopback address is refused for
C-STORE, C-FIND and C-MOVE), the called AE must be the archive's, registrations made while
the archive runs count at once for every service (and changes and removals too), Orthanc's
own refusals are audited, and with DICOM TLS only certificates the archive issued get in.

All of 127.0.0.0/8 is loopback on Linux: a client bound to 127.0.0.9 reaches the archive
from another address than its registered 127.0.0.1.
"""

from __future__ import annotations

import copy
import datetime
import io
import os
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from archive.catalog import Catalog
from synthetic import StudySpec, generate_study
from tests.integration.dimse import (
    Receiver,
    Setup,
    audit_records,
    dimse_setup,
    findscu,
    move_statuses,
)
from tests.integration.harness import INSTITUTIONS, Archive, free_port, wait_until

SPOOF = "127.0.0.9"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    spec = StudySpec(series=1, slices=2, rows=32, columns=32, seed=11)
    with dimse_setup(tmp_path_factory, "vna-dimse-identity", spec) as s:
        yield s


def _new_instance(setup: Setup) -> Dataset:
    ds = copy.deepcopy(setup.study[0])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _store(arch: Archive, aet: str, source: str, ds: Dataset) -> int | None:
    """C-STORE one data set from ``source``; the status, or None if refused before one."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title=arch.aet, bind_address=(source, 0))
    if not assoc.is_established:
        return None
    status = assoc.send_c_store(ds)
    if assoc.is_established:
        assoc.release()
    return int(status.Status) if status else None


def _find(arch: Archive, aet: str, source: str, study_uid: str = "") -> list[tuple[Any, Any]]:
    """C-FIND studies from ``source``: (status, identifier) pairs as received."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title=arch.aet, bind_address=(source, 0))
    if not assoc.is_established:
        return []
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    answers = [
        (int(status.Status) if status else None, ds)
        for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
    ]
    if assoc.is_established:
        assoc.release()
    return answers


def _found(answers: list[tuple[Any, Any]]) -> set[str]:
    return {str(ds.StudyInstanceUID) for status, ds in answers if status in (0xFF00, 0xFF01)}


def _move(arch: Archive, aet: str, source: str, dest: str, study_uid: str) -> list[int]:
    return move_statuses(arch, aet, dest, study_uid, source=source) or []


# --------------------------------------------------------------------------- host binding


def test_a_spoofed_ae_from_another_address_is_refused_for_store_find_and_move(
    setup: Setup,
) -> None:
    arch, uid = setup.archive, setup.study_uid
    intruder = _new_instance(setup)
    assert _store(arch, "HOSPA", SPOOF, intruder) != 0x0000
    assert _found(_find(arch, "HOSPA", SPOOF)) == set()
    assert 0x0000 not in _move(arch, "HOSPA", SPOOF, "HOSPA_WS", uid)
    assert setup.dest_a.take() == {}
    arch.stats()
    assert arch.lookup(str(intruder.SOPInstanceUID)) is None  # nothing stored

    # the same AE from its registered host works for all three
    genuine = _new_instance(setup)
    assert _store(arch, "HOSPA", "127.0.0.1", genuine) == 0x0000
    assert _found(_find(arch, "HOSPA", "127.0.0.1")) == {uid}
    assert _move(arch, "HOSPA", "127.0.0.1", "HOSPA_WS", uid)[-1] == 0x0000
    assert set(setup.files) <= set(setup.dest_a.take())


def test_the_called_ae_title_must_be_the_archives(setup: Setup) -> None:
    arch = setup.archive
    ae = AE(ae_title="HOSPA")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title="NOT_THE_VNA")
    # Orthanc sends A-ASSOCIATE-RJ and closes at once; pynetdicom sometimes sees the close
    # first and reports an abort (seen in a full run, with Orthanc's log saying "Rejected
    # association, because of a bad called AET")
    assert not assoc.is_established
    assert assoc.is_rejected or assoc.is_aborted


def test_orthancs_refusals_are_audited(setup: Setup) -> None:
    arch = setup.archive
    assert _found(_find(arch, "HOSPB", SPOOF)) == set()
    assert _store(arch, "STRANGER", "127.0.0.1", _new_instance(setup)) != 0x0000

    def alerts() -> list[dict[str, Any]]:
        return [
            r for r in audit_records(arch)
            if r["event"] == "security-alert" and r["detail"].get("change") == "dimse-refused"
        ]  # fmt: skip

    def seen(user: str, address: str, service: str) -> bool:
        return any(
            (r["user"], r["network_address"], r["detail"]["service"]) == (user, address, service)
            for r in alerts()
        )

    wait_until(lambda: seen("HOSPB", SPOOF, "C-FIND"), "the spoofed C-FIND's audit record")
    wait_until(lambda: seen("STRANGER", "127.0.0.1", "C-STORE"), "the stranger's audit record")
    spoofed = next(r for r in alerts() if r["user"] == "HOSPB")
    assert spoofed["outcome"] == 4
    assert spoofed["detail"]["reason"] == "address is not the AE's registered host"
    stranger = next(r for r in alerts() if r["user"] == "STRANGER")
    assert "not registered" in stranger["detail"]["reason"]


# --------------------------------------------------------------------------- registration


def test_registration_change_and_removal_count_at_once(setup: Setup, tmp_path: Path) -> None:
    arch = setup.archive
    dest = Receiver("HOSPC_WS")
    server: Any = dest.start()
    try:
        arch.vna("institution", "add", "Hospital C", "--ae", "HOSPC", "--host", "127.0.0.1")
        arch.vna("institution", "add", "Hospital C", "--ae", "HOSPC_WS",
                 "--host", "127.0.0.1", "--port", str(dest.port))  # fmt: skip
        # no wait, no restart: C-STORE, C-FIND and C-MOVE from the new AE work now
        study = list(generate_study(StudySpec(series=1, slices=2, rows=32, columns=32, seed=12)))
        paths = []
        for i, ds in enumerate(study):
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            paths.append(tmp_path / f"c{i}.dcm")
            paths[-1].write_bytes(buffer.getvalue())
        proc = arch.storescu("HOSPC", *paths)
        assert proc.returncode == 0, proc.stderr
        arch.stats()
        uid = str(study[0].StudyInstanceUID)
        found = findscu(arch, "HOSPC", "STUDY", [f"StudyInstanceUID={uid}"], tmp_path / "f")
        assert [str(d.StudyInstanceUID) for d in found] == [uid]
        assert _move(arch, "HOSPC", "127.0.0.1", "HOSPC_WS", uid)[-1] == 0x0000
        assert set(dest.take()) == {str(d.SOPInstanceUID) for d in study}

        # change: HOSPC now connects from 127.0.0.9 only
        arch.vna("institution", "add", "Hospital C", "--ae", "HOSPC", "--host", SPOOF)
        assert _found(_find(arch, "HOSPC", "127.0.0.1", uid)) == set()
        assert _found(_find(arch, "HOSPC", SPOOF, uid)) == {uid}

        # removal: refused from everywhere, for every service
        arch.vna("institution", "remove-ae", "HOSPC")
        assert _found(_find(arch, "HOSPC", SPOOF, uid)) == set()
        assert _move(arch, "HOSPC", SPOOF, "HOSPC_WS", uid) == []
        assert _store(arch, "HOSPC", SPOOF, _new_instance(setup)) != 0x0000
        assert dest.take() == {}
    finally:
        server.shutdown()


def test_a_registration_made_by_another_process_is_picked_up(setup: Setup) -> None:
    """Another node or tool writing the shared catalog, without telling this Orthanc: the
    plugin's periodic sync admits the AE (a readiness wait, no timing asserted)."""
    arch = setup.archive
    catalog = Catalog(f"sqlite:///{arch.home / 'catalog.db'}")
    try:
        assert _find(arch, "HOSPE", "127.0.0.1") in ([], [(None, None)])
        catalog.add_institution("Hospital E", "HOSPE", "127.0.0.1")
        wait_until(lambda: _find(arch, "HOSPE", "127.0.0.1") == [(0x0000, None)], "HOSPE admitted")
        catalog.remove_ae("HOSPE")
        wait_until(lambda: _find(arch, "HOSPE", "127.0.0.1") != [(0x0000, None)], "HOSPE refused")
    finally:
        catalog.close()


def test_an_ae_registered_without_a_host_is_refused(setup: Setup) -> None:
    arch = setup.archive
    proc = arch.vna("institution", "add", "Hospital D", "--ae", "HOSPD")
    assert "no --host" in proc.stderr
    assert _store(arch, "HOSPD", "127.0.0.1", _new_instance(setup)) != 0x0000
    assert _found(_find(arch, "HOSPD", "127.0.0.1")) == set()


# --------------------------------------------------------------------------- DICOM TLS


def _foreign_client(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate the archive did not issue (a CA of the test's own)."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some other CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital A")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir()
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _dcmtk(tool: str, arch: Archive, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-aet", "HOSPA", "-aec", arch.aet, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dicom_tls_admits_only_certificates_the_archive_issued(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("vna-dimse-tls")
    arch = Archive(home / "home")
    arch.write_config(INSTITUTIONS, dicom={"tls": True})
    arch.up()
    try:
        proc = arch.vna("institution", "add", "Hospital A", "--ae", "HOSPA",
                        "--host", "127.0.0.1", "--tls")  # fmt: skip
        assert "vna institution cert" in proc.stdout
        exported = home / "for-hospital-a"
        proc = arch.vna("institution", "cert", "Hospital A", "--out", str(exported))
        key, cert, ca = exported / "client.key", exported / "client.pem", exported / "ca.pem"
        assert str(key) in proc.stdout and "PRIVATE KEY" not in proc.stdout
        for path in (key, cert, ca):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        tls_dir = arch.home / "tls"
        assert stat.S_IMODE(os.stat(tls_dir).st_mode) == 0o700
        for path in tls_dir.rglob("*"):
            assert stat.S_IMODE(os.stat(path).st_mode) == (0o700 if path.is_dir() else 0o600)

        ds = generate_study(StudySpec(series=1, slices=1, rows=32, columns=32, seed=13))
        first = next(iter(ds))
        dicom_file = home / "one.dcm"
        first.save_as(dicom_file, enforce_file_format=True)
        where = ("127.0.0.1", str(arch.dicom_port))

        # the institution's certificate: stored, then found
        proc = _dcmtk("storescu", arch, "+tls", key, cert, "+cf", ca, *where, dicom_file)
        assert proc.returncode == 0, proc.stderr
        arch.stats()
        out = home / "found"
        out.mkdir()
        query = ("-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID")
        proc = _dcmtk("findscu", arch, "-S", "+tls", key, cert, "+cf", ca, "-X", "-od", out,
                      *query, *where)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        found = [pydicom.dcmread(p) for p in out.glob("rsp*.dcm")]
        assert [str(d.StudyInstanceUID) for d in found] == [str(first.StudyInstanceUID)]

        # C-MOVE over TLS, and the sub-association to the hospital's node over TLS too
        # (the node presents the institution's certificate and checks the archive's)
        received = _tls_move(arch, key, cert, ca, str(first.StudyInstanceUID))
        assert received == [str(first.SOPInstanceUID)]

        # refused: a certificate of another CA, no certificate, no TLS at all
        other = _new_uid_copy(first, home / "other.dcm")
        foreign_key, foreign_cert = _foreign_client(home / "foreign")
        attempts = [
            ("+tls", foreign_key, foreign_cert, "+cf", ca),
            ("+tla", "+cf", ca),
            (),
        ]
        for attempt in attempts:
            proc = _dcmtk("storescu", arch, *attempt, *where, other)
            assert proc.returncode != 0, attempt
        proc = _dcmtk("findscu", arch, "-S", "+tls", foreign_key, foreign_cert, "+cf", ca,
                      *query, *where)  # fmt: skip
        assert proc.returncode != 0 or "Find Response" not in proc.stderr
        arch.stats()
        assert arch.lookup(str(first.SOPInstanceUID)) is not None
        assert arch.lookup(_sop_of(other)) is None
    finally:
        arch.down()


def _new_uid_copy(ds: Dataset, path: Path) -> Path:
    twin = copy.deepcopy(ds)
    twin.SOPInstanceUID = generate_uid()
    twin.file_meta.MediaStorageSOPInstanceUID = twin.SOPInstanceUID
    twin.save_as(path, enforce_file_format=True)
    return path


def _sop_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _tls_move(arch: Archive, key: Path, cert: Path, ca: Path, study_uid: str) -> list[str]:
    """C-MOVE a study over DICOM TLS to a TLS storage SCP registered as HOSPA_WS; the SOP
    Instance UIDs it received."""
    node = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    node.load_cert_chain(str(cert), str(key))
    node.verify_mode = ssl.CERT_REQUIRED
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    port = free_port()
    scp = AE(ae_title="HOSPA_WS")
    scp.supported_contexts = AllStoragePresentationContexts
    server: Any = scp.start_server(("127.0.0.1", port), block=False, ssl_context=node,
                                   evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    try:
        arch.vna("institution", "add", "Hospital A", "--ae", "HOSPA_WS",
                 "--host", "127.0.0.1", "--port", str(port))  # fmt: skip
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        client.load_cert_chain(str(cert), str(key))
        ae = AE(ae_title="HOSPA")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", arch.dicom_port, ae_title=arch.aet,
                             tls_args=(client, "localhost"))  # fmt: skip
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        model = StudyRootQueryRetrieveInformationModelMove
        statuses = [int(st.Status) for st, _ in assoc.send_c_move(query, "HOSPA_WS", model) if st]
        assoc.release()
        assert statuses and statuses[-1] == 0x0000, statuses
    finally:
        server.shutdown()
    return received
