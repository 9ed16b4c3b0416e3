"""The certificates the archive makes: its DICOM TLS CA, the leaves that CA issues (Orthanc's
server certificate, an institution's client certificate) and the gateway's self-signed
HTTPS certificate. Every field, extension (order and criticality), key usage and lifetime
is pinned, so the shared builder in security/certificates.py changes none of them."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from security.dicom_tls import client_files, ensure_server_pki, issue_client
from security.tls import ensure_self_signed

BACKDATED = datetime.timedelta(minutes=5)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _names(cert_name: x509.Name) -> list[tuple[str, str]]:
    return [(attribute.oid.dotted_string, str(attribute.value)) for attribute in cert_name]


def _extensions(cert: x509.Certificate) -> list[tuple[x509.ObjectIdentifier, bool]]:
    return [(extension.oid, extension.critical) for extension in cert.extensions]


def _key_usage(cert: x509.Certificate) -> set[str]:
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    )
    return {flag for flag in flags if getattr(usage, flag)}


def _check_lifetime(cert: x509.Certificate, days: int, before: datetime.datetime) -> None:
    after = datetime.datetime.now(datetime.UTC)
    # backdated by five minutes against clock skew; the seconds' fraction is dropped
    start = cert.not_valid_before_utc + BACKDATED
    assert before - datetime.timedelta(seconds=1) <= start <= after
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == BACKDATED + datetime.timedelta(
        days=days
    )


@pytest.fixture(scope="module")
def dicom_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime.datetime]:
    tls_dir = tmp_path_factory.mktemp("tls")
    before = datetime.datetime.now(datetime.UTC)
    ensure_server_pki(tls_dir, ["archive.example", "10.0.0.7", "localhost"])
    issue_client(tls_dir, "Hospital A")
    return tls_dir, before


def test_the_dicom_ca(dicom_pki: tuple[Path, datetime.datetime]) -> None:
    tls_dir, before = dicom_pki
    ca = _load(tls_dir / "ca.pem")
    subject = [
        (NameOID.ORGANIZATION_NAME.dotted_string, "VNA archive"),
        (NameOID.COMMON_NAME.dotted_string, "VNA DICOM TLS CA"),
    ]
    assert _names(ca.subject) == subject
    assert _names(ca.issuer) == subject
    key = ca.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert key.public_numbers().e == 65537
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    assert ca.version is x509.Version.v3
    _check_lifetime(ca, 20 * 365, before)
    assert _extensions(ca) == [
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
    ]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value == (
        x509.BasicConstraints(ca=True, path_length=0)
    )
    assert _key_usage(ca) == {"key_cert_sign", "crl_sign"}
    assert ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(key)
    )
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize(
    ("leaf", "common_name", "alt_names"),
    [
        (
            "server",
            "VNA DICOM",
            [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("archive.example"),
                x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
            ],
        ),
        ("client", "Hospital A", None),
    ],
)
def test_the_leaves_the_dicom_ca_issues(
    dicom_pki: tuple[Path, datetime.datetime],
    leaf: str,
    common_name: str,
    alt_names: list[x509.GeneralName] | None,
) -> None:
    tls_dir, before = dicom_pki
    files = client_files(tls_dir, common_name) if leaf == "client" else None
    ca = _load(tls_dir / "ca.pem")
    cert = _load(files.certificate if files else tls_dir / "server.pem")
    assert _names(cert.subject) == [
        (NameOID.ORGANIZATION_NAME.dotted_string, "VNA archive"),
        (NameOID.COMMON_NAME.dotted_string, common_name),
    ]
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.serial_number != ca.serial_number
    _check_lifetime(cert, 5 * 365, before)
    expected = [
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.EXTENDED_KEY_USAGE, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
    ]
    if alt_names is not None:
        expected.append((ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(san) == alt_names
    assert _extensions(cert) == expected
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value == (
        x509.BasicConstraints(ca=False, path_length=None)
    )
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    ]
    assert cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value == (
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key())
    )


def test_the_gateways_self_signed_certificate(tmp_path: Path) -> None:
    before = datetime.datetime.now(datetime.UTC)
    listen_all = "0.0.0.0"  # noqa: S104 - a listen address, which the certificate must not name
    cert_path, _ = ensure_self_signed(tmp_path, [listen_all, "archive.example", "127.0.0.1"])
    cert = _load(cert_path)
    subject = [(NameOID.COMMON_NAME.dotted_string, "VNA gateway (self-signed)")]
    assert _names(cert.subject) == subject
    assert _names(cert.issuer) == subject
    cert.verify_directly_issued_by(cert)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    _check_lifetime(cert, 825, before)
    assert _extensions(cert) == [
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False),
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.EXTENDED_KEY_USAGE, False),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
    ]
    san = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    expected: list[x509.GeneralName] = []
    for host in ["localhost", "127.0.0.1", "::1", socket.gethostname(), "archive.example"]:
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host)
        if name not in expected:
            expected.append(name)
    assert san == expected  # the listen-all address is no name; duplicates once
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value == (
        x509.BasicConstraints(ca=False, path_length=None)
    )
    assert _key_usage(cert) == {"digital_signature"}
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key)
    assert cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value == (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    )
