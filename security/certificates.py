"""X.509 certificates the archive makes itself: one builder for the DICOM TLS CA and the
leaves it issues (security/dicom_tls.py) and the gateway's self-signed HTTPS certificate
(security/tls.py)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)

__all__ = ["host_names", "key_usage", "private_key_pem", "sign_certificate"]

# a certificate starts a little in the past, so a peer whose clock is behind accepts it
_BACKDATE = datetime.timedelta(minutes=5)


def sign_certificate(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    signing_key: CertificateIssuerPrivateKeyTypes,
    lifetime: datetime.timedelta,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """A v3 certificate for ``public_key``, valid from five minutes before ``now`` (default:
    the current time) for ``lifetime`` after it, with a random serial number and the
    ``(extension, critical)`` pairs in the order given, signed with SHA-256 by
    ``signing_key`` (the subject's own key for a self-signed certificate)."""
    start = now if now is not None else datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + lifetime)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    """A KeyUsage extension with only the given bits set (the ones this archive uses)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names for ``hosts``: an address as an IP address, anything else
    as a DNS name; in the order given, each name once."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        name: x509.GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host)
        if name not in names:
            names.append(name)
    return names


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """``key`` as unencrypted PKCS #8 PEM (it goes into a 0600 file)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
