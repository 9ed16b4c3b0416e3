"""The gateway's TLS: a generated self-signed pair for the embedded default, the SSL
context every gateway process serves with, and the certificate's fingerprint.

The pair lives in ``keys/gateway-tls.key`` (EC P-256, 0600) and ``keys/gateway-tls.crt``;
an operator's own certificate and key (``gateway.tls_cert_file``/``tls_key_file``) are
used as they are. Clients that cannot be given a CA check the printed SHA-256
fingerprint, or trust the certificate file itself (it is its own issuer).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.certificates import host_names, key_usage, private_key_pem, sign_certificate
from security.keys import write_secret_file

__all__ = [
    "SELF_SIGNED_CERT",
    "SELF_SIGNED_KEY",
    "ensure_self_signed",
    "fingerprint",
    "server_context",
]

SELF_SIGNED_CERT = "gateway-tls.crt"
SELF_SIGNED_KEY = "gateway-tls.key"
_LIFETIME = datetime.timedelta(days=825)  # the longest publicly trusted leaf life allowed
_RENEW_BEFORE = datetime.timedelta(days=30)


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    candidates = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *hosts]
    # a listen address is not a name
    return host_names(h for h in candidates if h and h not in ("0.0.0.0", "::"))  # noqa: S104


def _still_good(cert_path: Path, now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (FileNotFoundError, ValueError):
        return False
    return cert.not_valid_after_utc - now > _RENEW_BEFORE


def ensure_self_signed(keys_dir: Path, hosts: list[str]) -> tuple[Path, Path]:
    """The self-signed certificate and key of this home, made on first use (or when the
    certificate ends within 30 days) for ``localhost``, loopback, this machine's name and
    ``hosts`` (the listen and public host names); returns (certificate, key)."""
    cert_path, key_path = keys_dir / SELF_SIGNED_CERT, keys_dir / SELF_SIGNED_KEY
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # several processes may start at once (vna up and a gateway started by hand): one makes
    # the pair, the others find it made
    with os.fdopen(os.open(keys_dir / ".gateway-tls.lock", os.O_RDWR | os.O_CREAT, 0o600)) as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        now = datetime.datetime.now(datetime.UTC)
        if key_path.exists() and _still_good(cert_path, now):
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(key_path, private_key_pem(key))
        _write_private(cert_path, _certificate(key, hosts, now).public_bytes(_PEM))
    return cert_path, key_path


_PEM = serialization.Encoding.PEM


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` by a 0600 file holding ``data`` (written, synced, renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    write_secret_file(tmp, data)
    tmp.replace(path)


def _certificate(
    key: ec.EllipticCurvePrivateKey, hosts: list[str], now: datetime.datetime
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VNA gateway (self-signed)")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # a server leaf that is its own issuer, with the extensions strict verifiers (Python
    # 3.13's VERIFY_X509_STRICT) want, so clients can trust the file itself
    return sign_certificate(
        subject=subject,
        public_key=key.public_key(),
        issuer=subject,
        signing_key=key,
        lifetime=_LIFETIME,
        now=now,
        extensions=[
            (x509.SubjectAlternativeName(_names(hosts)), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (ski, False),
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        ],
    )


def fingerprint(cert_path: Path) -> str:
    """The certificate's SHA-256 fingerprint as colon-separated hex (what browsers and
    ``openssl x509 -fingerprint -sha256`` show)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context with Python's defaults (TLS 1.2 and later, no compression)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context
