"""dicomweb/http/multipart.py: the framing every multipart/related answer of the gateway uses."""

from __future__ import annotations

from dicomweb.http.multipart import Multipart


def test_parts_are_framed_per_rfc_2046() -> None:
    message = Multipart("application/dicom", boundary="b0")
    body = (
        message.head("application/dicom; transfer-syntax=1.2", first=True, length=3)
        + b"one"
        + message.head(first=False, location="https://h/x")
        + b"two"
        + message.end()
    )
    assert message.content_type == 'multipart/related; type="application/dicom"; boundary=b0'
    assert body == (
        b"--b0\r\nContent-Type: application/dicom; transfer-syntax=1.2\r\n"
        b"Content-Length: 3\r\n\r\none"
        b"\r\n--b0\r\nContent-Type: application/dicom\r\nContent-Location: https://h/x\r\n\r\n"
        b"two\r\n--b0--\r\n"
    )


def test_each_message_has_its_own_boundary() -> None:
    first, second = Multipart("image/jpeg"), Multipart("image/jpeg")
    assert first.boundary != second.boundary and len(first.boundary) == 32
