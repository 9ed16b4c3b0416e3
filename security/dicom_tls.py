"""The archive's own certificate authority for DICOM TLS (PS3.15 B.1).

The archive issues every certificate its DICOM port trusts: the server certificate Orthanc
presents, and one client certificate per institution that asks for TLS. Orthanc trusts only
this CA (``DicomTlsTrustedCertificates``), so a peer is admitted only if it holds a
certificate the archive issued; which institution it speaks for is still decided by its AE
title and registered host (Orthanc does not show the peer's certificate to plugins).

Layout under ``<home>/tls`` (directories 0700, every file 0600)::

    ca.pem ca.key                         the archive's CA
    server.pem server.key                 what Orthanc presents
    clients/<slug>/client.pem client.key  one pair per institution
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.certificates import host_names, key_usage, private_key_pem, sign_certificate
from security.errors import InvalidInput, NotFound
from security.keys import write_secret_file

__all__ = ["TlsFiles", "client_files", "ensure_server_pki", "export_client", "issue_client"]

# RSA keeps every DICOM TLS profile of PS3.15 B.1-B.9 (and dcmtk's default BCP 195 set) open
_KEY_BITS = 2048
_CA_LIFETIME = datetime.timedelta(days=20 * 365)
_LEAF_LIFETIME = datetime.timedelta(days=5 * 365)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A certificate, its private key and the CA that issued it (PEM files)."""

    certificate: Path
    private_key: Path
    ca: Path


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "VNA archive"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _load_ca(tls_dir: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((tls_dir / "ca.key").read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInput(f"{tls_dir / 'ca.key'} is not the archive's RSA CA key")
    return cert, key


def _ensure_ca(tls_dir: Path) -> None:
    if (tls_dir / "ca.pem").exists():
        return
    key = _new_key()
    name = _name("VNA DICOM TLS CA")
    cert = sign_certificate(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        signing_key=key,
        lifetime=_CA_LIFETIME,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (key_usage(key_cert_sign=True, crl_sign=True), True),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        ],
    )
    # the key first: a CA certificate without its key would block every later issue
    write_secret_file(tls_dir / "ca.key", private_key_pem(key))
    write_secret_file(tls_dir / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    tls_dir: Path,
    directory: Path,
    stem: str,
    common_name: str,
    alt_names: Sequence[x509.GeneralName] = (),
) -> TlsFiles:
    files = TlsFiles(directory / f"{stem}.pem", directory / f"{stem}.key", tls_dir / "ca.pem")
    if files.certificate.exists():
        return files
    ca_cert, ca_key = _load_ca(tls_dir)
    key = _new_key()
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        # a DICOM node is both SCU and SCP: the archive's certificate opens its C-MOVE
        # sub-associations, a hospital's serves as its node's when it receives them
        (
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            False,
        ),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ]
    if alt_names:
        extensions.append((x509.SubjectAlternativeName(alt_names), False))
    cert = sign_certificate(
        subject=_name(common_name),
        public_key=key.public_key(),
        issuer=ca_cert.subject,
        signing_key=ca_key,
        lifetime=_LEAF_LIFETIME,
        extensions=extensions,
    )
    _private_dir(directory)
    write_secret_file(files.private_key, private_key_pem(key))
    write_secret_file(files.certificate, cert.public_bytes(serialization.Encoding.PEM))
    return files


def ensure_server_pki(tls_dir: Path, hosts: Sequence[str]) -> TlsFiles:
    """The CA and Orthanc's server certificate (for ``hosts``: names or addresses),
    created on first use; returns the server's files."""
    _private_dir(tls_dir)
    _ensure_ca(tls_dir)
    alt = host_names(["localhost", "127.0.0.1", *hosts])
    return _issue(tls_dir, tls_dir, "server", "VNA DICOM", alt)


def _slug(institution: str) -> str:
    """A directory name for an institution: readable, and distinct for distinct names."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", institution).strip("-").lower()[:40] or "inst"
    return f"{readable}-{hashlib.sha256(institution.encode()).hexdigest()[:8]}"


def client_files(tls_dir: Path, institution: str) -> TlsFiles | None:
    """The institution's client certificate files, if one was issued."""
    directory = tls_dir / "clients" / _slug(institution)
    files = TlsFiles(directory / "client.pem", directory / "client.key", tls_dir / "ca.pem")
    return files if files.certificate.exists() else None


def issue_client(tls_dir: Path, institution: str) -> TlsFiles:
    """Issue (once) the client certificate an institution's DICOM nodes present."""
    _private_dir(tls_dir)
    _ensure_ca(tls_dir)
    directory = _private_dir(tls_dir / "clients") / _slug(institution)
    return _issue(tls_dir, directory, "client", institution)


def export_client(tls_dir: Path, institution: str, out_dir: Path) -> TlsFiles:
    """Copy an institution's certificate, key and the archive's CA to ``out_dir`` (0700
    directory, 0600 files) for the hospital's DICOM nodes; returns the copies."""
    files = client_files(tls_dir, institution)
    if files is None:
        raise NotFound(
            f"no client certificate for {institution!r}: issue one with "
            f"`vna institution add {institution!r} --tls`"
        )
    _private_dir(out_dir)
    copies = TlsFiles(out_dir / "client.pem", out_dir / "client.key", out_dir / "ca.pem")
    pairs = (
        (files.certificate, copies.certificate),
        (files.private_key, copies.private_key),
        (files.ca, copies.ca),
    )
    for source, target in pairs:
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
    return copies
