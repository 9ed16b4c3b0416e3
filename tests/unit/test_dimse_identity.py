"""DICOM identity without Orthanc: the modality list Orthanc gets (host binding, exact AE
titles, TLS settings), the plugin keeping it in step with the catalog, the archive's CA,
and the reading of Orthanc's refusal lines into audit records."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from archive.catalog import Institution
from archive.credentials import OrthancCredentials
from archive.plugin import ArchivePlugin, LoopbackRest, register
from archive.scp import modality_entries, modality_entry, peer_address
from archive.settings import DicomSecurity, StorageSettings
from compose.settings import load_settings
from deploy.dimse_access import RefusalAuditor, RefusalParser
from deploy.orthanc_config import orthanc_config
from security.audit import AuditLog
from security.dicom_tls import client_files, ensure_server_pki, export_client, issue_client
from security.errors import NotFound
from tests.catalogdb import migrated
from tests.unit.support import FakeSdk

pytestmark = pytest.mark.usefixtures("restore_root_logger")

# --------------------------------------------------------------------------- modality list


def test_an_ae_without_a_host_is_left_out_when_hosts_are_checked() -> None:
    aes = [("HOSPA", "10.0.0.5", None), ("HOSPA_CT", None, None), ("WS", "10.0.0.6", 11112)]
    bound = modality_entries(aes, allow_get=False, check_host=True)
    assert set(bound) == {"HOSPA", "WS"}
    assert bound["HOSPA"]["Host"] == "10.0.0.5" and bound["WS"]["Port"] == 11112
    assert set(modality_entries(aes, allow_get=False, check_host=False)) == set(aes_names(aes))


def aes_names(aes: list[tuple[str, str | None, int | None]]) -> list[str]:
    return [a for a, _, _ in aes]


def test_a_host_name_is_handed_to_orthanc_as_its_address() -> None:
    # Orthanc compares the peer's address with the modality's Host as strings
    assert peer_address("localhost") == "127.0.0.1"
    assert peer_address(" 10.1.2.3 ") == "10.1.2.3"
    assert peer_address("no-such-host.invalid") is None
    entries = modality_entries([("WS", "localhost", 104)], allow_get=False, check_host=True)
    assert entries["WS"]["Host"] == "127.0.0.1"


def test_orthanc_checks_host_called_ae_and_exact_titles_for_every_service(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    inst = Institution(1, "Hospital A", (("HOSPA", "10.0.0.5", None),))
    config = orthanc_config(settings, OrthancCredentials("u", "p"), [inst])
    assert config["DicomCheckModalityHost"] is True
    assert config["DicomCheckCalledAet"] is True
    assert config["StrictAetComparison"] is True
    # C-STORE too goes through Orthanc's list (and the host check) before the filter
    assert config["DicomAlwaysAllowStore"] is False
    assert not any(config[f"DicomAlwaysAllow{s}"] for s in ("Find", "Get", "Move"))
    assert config["DicomTlsEnabled"] is False
    loose = load_settings(tmp_path, dicom=DicomSecurity(check_host=False, check_called_aet=False))
    config = orthanc_config(loose, OrthancCredentials("u", "p"), [inst])
    assert config["DicomCheckModalityHost"] is False and config["DicomCheckCalledAet"] is False


def test_dicom_tls_settings_name_the_archives_files(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, dicom=DicomSecurity(tls=True))
    tls = ensure_server_pki(tmp_path / "tls", ["vna.example.org"])
    config = orthanc_config(settings, OrthancCredentials("u", "p"), [], tls)
    assert config["DicomTlsEnabled"] is True
    assert config["DicomTlsRemoteCertificateRequired"] is True
    assert config["DicomTlsTrustedCertificates"] == str(tmp_path / "tls" / "ca.pem")
    assert config["DicomTlsCertificate"] == str(tmp_path / "tls" / "server.pem")
    assert config["DicomTlsPrivateKey"] == str(tmp_path / "tls" / "server.key")
    # C-MOVE sub-associations to registered destinations use DICOM TLS as well
    inst = Institution(1, "Hospital A", (("WS", "10.0.0.5", 104),))
    config = orthanc_config(settings, OrthancCredentials("u", "p"), [inst], tls)
    assert config["DicomModalities"]["WS"]["UseDicomTls"] is True


def test_tls_is_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VNA_DICOM__TLS", "true")
    assert load_settings(tmp_path).dicom.tls is True


# --------------------------------------------------------------------------- plugin sync


class ModalitySdk(FakeSdk):
    """The fake SDK with Orthanc's /modalities REST resource."""

    def __init__(self, listed: dict[str, Any]) -> None:
        super().__init__()
        self.modalities = dict(listed)
        self.writes: list[tuple[str, str]] = []

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802
        if uri == "/modalities":
            return json.dumps(sorted(self.modalities)).encode()
        return super().RestApiGet(uri)

    def RestApiPut(self, uri: str, body: str) -> bytes:  # noqa: N802
        name = uri.removeprefix("/modalities/")
        self.modalities[name] = json.loads(body)
        self.writes.append(("PUT", name))
        return b"{}"

    def RestApiDelete(self, uri: str) -> None:  # noqa: N802
        name = uri.removeprefix("/modalities/")
        del self.modalities[name]
        self.writes.append(("DELETE", name))


@pytest.fixture
def plugin_and_sdk(tmp_path: Path) -> Iterator[tuple[ArchivePlugin, ModalitySdk]]:
    # Orthanc started with an AE the catalog no longer has
    sdk = ModalitySdk({"GONE": modality_entry("GONE", "10.9.9.9", 104, False)})
    plug = register(sdk, load_settings(tmp_path, storage=StorageSettings(fsync=False)))
    try:
        yield plug, sdk
    finally:
        plug.catalog.close()


def test_sync_makes_orthancs_list_the_catalogs(
    plugin_and_sdk: tuple[ArchivePlugin, ModalitySdk],
) -> None:
    plugin, sdk = plugin_and_sdk
    plugin.catalog.add_institution("Hospital A", "HOSPA", "10.0.0.5")
    plugin.catalog.add_institution("Hospital A", "HOSPA_CT")  # no host: refused
    assert plugin.sync_modalities() == {"changed": ["HOSPA"], "removed": ["GONE"]}
    assert sdk.modalities == {"HOSPA": modality_entry("HOSPA", "10.0.0.5", None, False)}

    sdk.writes.clear()
    assert plugin.sync_modalities() == {"changed": [], "removed": []}  # nothing rewritten
    assert sdk.writes == []

    plugin.catalog.add_institution("Hospital A", "HOSPA", "10.0.0.7")  # a change of host
    plugin.sync_modalities()
    assert sdk.modalities["HOSPA"]["Host"] == "10.0.0.7"
    plugin.catalog.remove_ae("HOSPA")
    plugin.sync_modalities()
    assert sdk.modalities == {}


def test_the_background_sync_goes_over_loopback_http_not_the_sdk(
    plugin_and_sdk: tuple[ArchivePlugin, ModalitySdk],
) -> None:
    """The plugin's own threads reach Orthanc's REST API over HTTP (LoopbackRest): an SDK
    call from a Python thread holds the GIL while Orthanc's plugin-service lock may be
    held by a request waiting for the GIL in the storage area (a deadlock seen in the
    conformance run). A real HTTP server stands in for Orthanc's /modalities here."""
    plugin, sdk = plugin_and_sdk
    plugin.catalog.add_institution("Hospital A", "HOSPA", "10.0.0.5")
    seen: list[tuple[str, str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bytes) -> None:
            seen.append((self.command, self.path, self.headers.get("Authorization", "")))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(sdk.RestApiGet(self.path))

        def do_PUT(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            self._answer(sdk.RestApiPut(self.path, body))

        def do_DELETE(self) -> None:  # noqa: N802
            sdk.RestApiDelete(self.path)
            self._answer(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rest = LoopbackRest(server.server_address[1], "vna-admin", "secret")
        assert plugin.sync_modalities(rest) == {"changed": ["HOSPA"], "removed": ["GONE"]}
    finally:
        server.shutdown()
        server.server_close()
    assert sdk.modalities == {"HOSPA": modality_entry("HOSPA", "10.0.0.5", None, False)}
    assert [(m, p) for m, p, _ in seen] == [
        ("GET", "/modalities"),
        ("DELETE", "/modalities/GONE"),
        ("PUT", "/modalities/HOSPA"),
    ]
    assert {auth for _, _, auth in seen} == {"Basic dm5hLWFkbWluOnNlY3JldA=="}


def test_the_sync_endpoint_answers_post_only(
    plugin_and_sdk: tuple[ArchivePlugin, ModalitySdk],
) -> None:
    plugin, sdk = plugin_and_sdk
    assert sdk.rest_callbacks["/vna/modalities/sync"] == plugin.on_sync_request

    class Output:
        answer: tuple[str, str] | None = None
        refused: str | None = None

        def AnswerBuffer(self, body: str, mime: str) -> None:  # noqa: N802
            self.answer = (body, mime)

        def SendMethodNotAllowed(self, allowed: str) -> None:  # noqa: N802
            self.refused = allowed

    get = Output()
    plugin.on_sync_request(get, "/vna/modalities/sync", method="GET")
    assert get.refused == "POST" and get.answer is None and "GONE" in sdk.modalities
    post = Output()
    plugin.on_sync_request(post, "/vna/modalities/sync", method="POST")
    assert post.answer is not None and json.loads(post.answer[0])["removed"] == ["GONE"]


def test_removing_an_unknown_ae_says_so(
    plugin_and_sdk: tuple[ArchivePlugin, ModalitySdk],
) -> None:
    with pytest.raises(NotFound, match="vna institution list"):
        plugin_and_sdk[0].catalog.remove_ae("NOBODY")


# --------------------------------------------------------------------------- the CA


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_archive_issues_server_and_client_certificates(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    server = ensure_server_pki(tls_dir, ["10.0.0.1", "vna.example.org"])
    client = issue_client(tls_dir, "Hospital A")
    ca = x509.load_pem_x509_certificate(server.ca.read_bytes())
    for files, usage in ((server, ExtendedKeyUsageOID.SERVER_AUTH),
                         (client, ExtendedKeyUsageOID.CLIENT_AUTH)):  # fmt: skip
        cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        cert.verify_directly_issued_by(ca)
        assert usage in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    names = x509.load_pem_x509_certificate(server.certificate.read_bytes()).extensions
    alt = names.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "vna.example.org" in alt.get_values_for_type(x509.DNSName)
    # issued once: asking again returns the same files, unchanged
    before = client.certificate.read_bytes()
    assert issue_client(tls_dir, "Hospital A") == client == client_files(tls_dir, "Hospital A")
    assert client.certificate.read_bytes() == before
    assert client_files(tls_dir, "Hospital B") is None
    for path in [tls_dir, *tls_dir.rglob("*")]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_export_copies_certificate_key_and_ca_privately(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    ensure_server_pki(tls_dir, [])
    issued = issue_client(tls_dir, "Hospital A")
    copies = export_client(tls_dir, "Hospital A", tmp_path / "out")
    assert copies.private_key.read_bytes() == issued.private_key.read_bytes()
    assert copies.ca.read_bytes() == issued.ca.read_bytes()
    assert _mode(tmp_path / "out") == 0o700
    assert {_mode(p) for p in (copies.certificate, copies.private_key, copies.ca)} == {0o600}
    with pytest.raises(NotFound, match="--tls"):
        export_client(tls_dir, "Hospital B", tmp_path / "out2")


# --------------------------------------------------------------------------- refusals

LINES = """\
W1207 16:09:35.104732 main.cpp:415] DICOM authorization rejected for AET HOSPA on IP 127.0.0.9: \
Its IP address should be 127.0.0.1 according to configuration option "DicomModalities"
W1207 16:09:35.104780 CommandDispatcher.cpp:828] Rejected Find request from remote DICOM \
modality with AET "HOSPA" and hostname "127.0.0.9"
W1207 16:09:35.112094 main.cpp:404] DICOM authorization rejected  for AET STRANGER on IP \
127.0.0.1: This AET is not listed in configuration option "DicomModalities"
W1207 16:09:35.112140 CommandDispatcher.cpp:828] Rejected Store request from remote DICOM \
modality with AET "STRANGER" and hostname "127.0.0.1"
W1207 16:09:35.117391 CommandDispatcher.cpp:602] Rejected association, because of a bad \
called AET in the request (WRONG)
E1207 16:14:19.362267 CommandDispatcher.cpp:284] Receiving Association failed: TLS error: \
certificate verify failed
I1207 16:14:19.362267 main.cpp:10] Incoming connection from AET HOSPA on IP 127.0.0.1
"""


def test_orthancs_refusal_lines_become_refusals() -> None:
    parser = RefusalParser()
    found = [r for line in LINES.splitlines() if (r := parser.feed(line)) is not None]
    assert [(r.calling_ae, r.address, r.service) for r in found] == [
        ("HOSPA", "127.0.0.9", "C-FIND"),
        ("STRANGER", "127.0.0.1", "C-STORE"),
        (None, None, "association"),
        (None, None, "association"),
    ]
    assert found[0].reason == "address is not the AE's registered host"
    assert found[1].reason.startswith("AE title not registered")
    assert "WRONG" in found[2].reason and "certificate verify failed" in found[3].reason


GET_LINES = """\
W1207 16:20:01.000000 main.cpp:415] DICOM authorization rejected for AET HOSPA on IP 127.0.0.1: \
The DICOM command Get is not allowed for this modality according to configuration option \
"DicomModalities"
W1207 16:20:01.000001 CommandDispatcher.cpp:828] Rejected Get request from remote DICOM \
modality with AET "HOSPA" and hostname "127.0.0.1"
W1207 16:20:02.000000 main.cpp:404] DICOM authorization rejected for AET STRANGER on IP \
127.0.0.1: This AET is not listed in configuration option "DicomModalities"
W1207 16:20:02.000001 CommandDispatcher.cpp:828] Rejected Get request from remote DICOM \
modality with AET "STRANGER" and hostname "127.0.0.1"
"""


def test_a_refused_c_get_is_told_to_use_c_move_or_wado_rs() -> None:
    parser = RefusalParser()
    off, stranger = [r for line in GET_LINES.splitlines() if (r := parser.feed(line))]
    assert (off.calling_ae, off.service) == ("HOSPA", "C-GET")
    assert "dicom_allow_get" in off.reason and "C-MOVE" in off.reason
    assert stranger.reason.startswith("AE title not registered")  # not the C-GET advice


def test_the_auditor_follows_the_log_from_where_it_was(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    log = tmp_path / "orthanc.log"
    log.write_text("W1207 old line\n" + LINES.splitlines()[1] + "\n")  # before the start
    audit = AuditLog.open(
        create_engine(migrated(f"sqlite:///{tmp_path / 'a.db'}")), tmp_path / "keys"
    )
    auditor = RefusalAuditor(log, audit)
    assert auditor.poll() == 0  # what was logged before the supervisor started is not new
    text = LINES.splitlines()
    with log.open("a") as out:
        out.write("\n".join(text[:3]) + "\n" + text[3][:40])  # the last line half written
    assert auditor.poll() == 1
    with log.open("a") as out:
        out.write(text[3][40:] + "\n")
    assert auditor.poll() == 1
    records = [json.loads(e.canonical()) for _, e in audit.records()]
    assert [(r["event"], r["outcome"], r["user"], r["network_address"]) for r in records] == [
        ("security-alert", 4, "HOSPA", "127.0.0.9"),
        ("security-alert", 4, "STRANGER", "127.0.0.1"),
    ]
    assert records[1]["detail"]["service"] == "C-STORE"
