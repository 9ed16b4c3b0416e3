"""Envelope encryption of blobs: seal / open / rewrap and every tamper case (security.envelope)."""

from __future__ import annotations

import hashlib
import os
import secrets

import blake3
import pytest

from security.envelope import (
    HEADER_SIZE,
    MAGIC,
    BlobNamer,
    Sealed,
    blob_mac,
    open_sealed,
    rewrap,
    seal,
)
from security.errors import IntegrityError, VnaError

BODY = b"DICOM header bytes, or a frame, or a trailer " * 20
DEDUP_KEY = bytes(range(32))


@pytest.fixture
def kek() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def blob_id() -> bytes:
    return blob_mac(DEDUP_KEY, BODY)


@pytest.fixture
def sealed(kek: bytes, blob_id: bytes) -> Sealed:
    return seal(BODY, 0x01, blob_id, "0a1b2c3d", kek)


# --------------------------------------------------------------------- MAC


@pytest.mark.parametrize("algorithm", ["blake3", "blake2b"])
def test_blob_mac_is_a_keyed_256_bit_hash(algorithm: str) -> None:
    mac = blob_mac(DEDUP_KEY, BODY, algorithm)
    assert len(mac) == 32
    assert mac == blob_mac(DEDUP_KEY, memoryview(BODY), algorithm)
    assert mac != blob_mac(bytes(32), BODY, algorithm), "the dedup key must change the name"
    assert mac != blob_mac(DEDUP_KEY, BODY + b"\x00", algorithm)


def test_blob_mac_algorithms_are_the_standard_ones() -> None:
    """Names must stay reproducible by any BLAKE3 / BLAKE2b implementation (fsck, audits)."""
    assert blob_mac(DEDUP_KEY, BODY) == blake3.blake3(BODY, key=DEDUP_KEY).digest()
    assert (
        blob_mac(DEDUP_KEY, BODY, "blake2b")
        == hashlib.blake2b(BODY, digest_size=32, key=DEDUP_KEY).digest()
    )
    assert blob_mac(DEDUP_KEY, BODY, "blake3") != blob_mac(DEDUP_KEY, BODY, "blake2b")
    with pytest.raises(ValueError, match="unknown blob MAC"):
        blob_mac(DEDUP_KEY, BODY, "md5")
    with pytest.raises(ValueError, match="unknown blob MAC"):
        BlobNamer(DEDUP_KEY, "sha1")


@pytest.mark.parametrize("algorithm", ["blake3", "blake2b"])
def test_namer_verify(algorithm: str) -> None:
    namer = BlobNamer(DEDUP_KEY, algorithm)
    mac = namer(BODY)
    assert namer.verify(BODY, mac)
    assert not namer.verify(BODY[:-1], mac)
    assert not BlobNamer(os.urandom(32), algorithm).verify(BODY, mac)
    assert DEDUP_KEY.hex() not in repr(namer), "the key must not show in logs"


# --------------------------------------------------------------------- round trip


def test_round_trip(sealed: Sealed, kek: bytes, blob_id: bytes) -> None:
    assert sealed.kek_id == "0a1b2c3d"
    assert sealed.payload[:4] == MAGIC
    assert sealed.payload[4] == 0x01
    assert len(sealed.wrapped_key) == 40  # RFC 3394 wrap of a 256-bit key
    assert BODY not in sealed.payload
    assert len(sealed.payload) == HEADER_SIZE + len(BODY) + 16
    assert open_sealed(sealed.payload, blob_id, sealed.wrapped_key, kek) == (0x01, BODY)


@pytest.mark.parametrize("body", [b"", b"x", os.urandom(70_000)], ids=["empty", "1B", "70kB"])
def test_round_trip_sizes(body: bytes, kek: bytes) -> None:
    blob_id = blob_mac(DEDUP_KEY, body)
    s = seal(body, 0, blob_id, "k", kek)
    assert open_sealed(s.payload, blob_id, s.wrapped_key, kek) == (0, body)


def test_every_seal_uses_a_fresh_nonce_and_data_key(kek: bytes, blob_id: bytes) -> None:
    a = seal(BODY, 0, blob_id, "k", kek)
    b = seal(BODY, 0, blob_id, "k", kek)
    assert a.payload[5:HEADER_SIZE] != b.payload[5:HEADER_SIZE]
    assert a.wrapped_key != b.wrapped_key
    assert a.payload != b.payload


# --------------------------------------------------------------------- tampering


def _flip(payload: bytes, index: int) -> bytes:
    changed = bytearray(payload)
    changed[index] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize(
    "where",
    ["magic", "flags", "nonce-first", "nonce-last", "ciphertext", "tag-first", "tag-last"],
)
def test_any_flipped_byte_fails(where: str, sealed: Sealed, kek: bytes, blob_id: bytes) -> None:
    n = len(sealed.payload)
    index = {
        "magic": 0,
        "flags": 4,
        "nonce-first": 5,
        "nonce-last": HEADER_SIZE - 1,
        "ciphertext": HEADER_SIZE + 100,
        "tag-first": n - 16,
        "tag-last": n - 1,
    }[where]
    with pytest.raises(IntegrityError):
        open_sealed(_flip(sealed.payload, index), blob_id, sealed.wrapped_key, kek)


def test_every_single_byte_flip_fails(sealed: Sealed, kek: bytes, blob_id: bytes) -> None:
    for index in range(len(sealed.payload)):
        with pytest.raises(IntegrityError):
            open_sealed(_flip(sealed.payload, index), blob_id, sealed.wrapped_key, kek)


def test_wrong_blob_id_is_rejected(sealed: Sealed, kek: bytes, blob_id: bytes) -> None:
    """The blob id is associated data: a payload swapped under another name fails."""
    other = blob_mac(DEDUP_KEY, b"other content")
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_sealed(sealed.payload, other, sealed.wrapped_key, kek)
    with pytest.raises(IntegrityError):
        open_sealed(sealed.payload, _flip(blob_id, 31), sealed.wrapped_key, kek)


def test_payload_of_another_blob_is_rejected(kek: bytes, blob_id: bytes) -> None:
    mine = seal(BODY, 0, blob_id, "k", kek)
    other_id = blob_mac(DEDUP_KEY, b"other")
    theirs = seal(b"other", 0, other_id, "k", kek)
    with pytest.raises(IntegrityError):
        open_sealed(theirs.payload, blob_id, mine.wrapped_key, kek)
    with pytest.raises(IntegrityError):
        open_sealed(theirs.payload, blob_id, theirs.wrapped_key, kek)


@pytest.mark.parametrize("keep", [0, 3, HEADER_SIZE, HEADER_SIZE + 15, -1, -16])
def test_truncated_payload_fails(keep: int, sealed: Sealed, kek: bytes, blob_id: bytes) -> None:
    with pytest.raises(IntegrityError):
        open_sealed(sealed.payload[:keep], blob_id, sealed.wrapped_key, kek)


def test_appended_bytes_fail(sealed: Sealed, kek: bytes, blob_id: bytes) -> None:
    with pytest.raises(IntegrityError):
        open_sealed(sealed.payload + b"\x00", blob_id, sealed.wrapped_key, kek)


def test_not_a_vna_blob(kek: bytes, blob_id: bytes, sealed: Sealed) -> None:
    with pytest.raises(IntegrityError, match="not a VNA blob"):
        open_sealed(b"XXXX" + sealed.payload[4:], blob_id, sealed.wrapped_key, kek)


def test_wrong_kek_fails(sealed: Sealed, blob_id: bytes) -> None:
    with pytest.raises(IntegrityError, match="does not unwrap"):
        open_sealed(sealed.payload, blob_id, sealed.wrapped_key, secrets.token_bytes(32))


def test_tampered_wrapped_key_fails(sealed: Sealed, kek: bytes, blob_id: bytes) -> None:
    with pytest.raises(IntegrityError):
        open_sealed(sealed.payload, blob_id, _flip(sealed.wrapped_key, 0), kek)


def test_integrity_error_is_a_vna_error() -> None:
    assert issubclass(IntegrityError, VnaError)


# --------------------------------------------------------------------- rotation


def test_rewrap_moves_the_data_key_to_the_new_kek(
    sealed: Sealed, kek: bytes, blob_id: bytes
) -> None:
    new_kek = secrets.token_bytes(32)
    wrapped = rewrap(sealed.wrapped_key, kek, new_kek)
    assert wrapped != sealed.wrapped_key
    assert len(wrapped) == 40
    # the payload itself is untouched: only the 40-byte wrapped key changes
    assert open_sealed(sealed.payload, blob_id, wrapped, new_kek) == (0x01, BODY)
    with pytest.raises(IntegrityError):
        open_sealed(sealed.payload, blob_id, wrapped, kek)


def test_rewrap_with_the_wrong_old_kek_fails(sealed: Sealed) -> None:
    with pytest.raises(IntegrityError, match="does not unwrap"):
        rewrap(sealed.wrapped_key, secrets.token_bytes(32), secrets.token_bytes(32))
