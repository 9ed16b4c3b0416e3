"""Pure parts of what the archive exposes: home file modes, the gateway's self-signed
certificate, and who the client is behind forwarding proxies."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from dicomweb.http.transport import client_behind
from security.homefiles import exposed, tighten
from security.tls import ensure_self_signed, fingerprint, server_context


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_tighten_makes_everything_private_and_leaves_links(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "catalog.db").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the home's")
    (home / "link").symlink_to(outside)
    for path, mode in ((home, 0o755), (home / "sub", 0o775), (home / "sub" / "catalog.db", 0o664)):
        os.chmod(path, mode)
    os.chmod(outside, 0o644)
    assert {e.path for e in exposed(home)} == {home, home / "sub", home / "sub" / "catalog.db"}
    assert len(tighten(home)) == 3
    assert (_mode(home), _mode(home / "sub"), _mode(home / "sub" / "catalog.db")) == (
        0o700,
        0o700,
        0o600,
    )
    assert _mode(outside) == 0o644  # a link is not followed
    assert exposed(home) == []


def test_self_signed_pair_serves_tls_that_its_certificate_verifies(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "keys", ["127.0.0.1", "archive.example"])
    assert _mode(key) == 0o600 and _mode(cert) == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "archive.example" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    # the same pair is kept on the next start (the printed fingerprint stays valid)
    assert ensure_self_signed(tmp_path / "keys", ["127.0.0.1"]) == (cert, key)
    assert fingerprint(cert) == fingerprint(ensure_self_signed(tmp_path / "keys", [])[0])

    server = server_context(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")

        thread = threading.Thread(target=accept)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(5) == b"hello"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        thread.join()


PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("hops", "client"),
    [
        (["203.0.113.7"], "203.0.113.7"),
        # the client wrote the leftmost items itself: only the nearest untrusted hop counts
        (["1.2.3.4", "203.0.113.7", "10.1.1.1"], "203.0.113.7"),
        (["10.2.2.2", "10.1.1.1"], "10.2.2.2"),  # every hop a proxy: the farthest
        ([None, "203.0.113.7"], "203.0.113.7"),
        (["203.0.113.7", None], "unknown"),
    ],
)
def test_client_behind_trusted_proxies(hops: list[str | None], client: str) -> None:
    assert client_behind(hops, PROXIES) == client
