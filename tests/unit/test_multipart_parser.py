"""dicomweb.multipart: a streamed multipart body parsed whatever the chunking."""

from __future__ import annotations

import pytest

from dicomweb.multipart import MultipartParser, PartData, PartEnd, PartHeaders

BOUNDARY = "b0undary-73-chars-like-orthanc"
BODY = (
    b"preamble\r\n"
    b"--" + BOUNDARY.encode() + b"\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Location: http://127.0.0.1:8042/dicom-web/x/frames/1\r\n\r\n"
    b"\x00\r\n--b0und\r\n\r\nframe one\r\n"
    b"--" + BOUNDARY.encode() + b"\r\n"
    b"Content-Type: image/jpeg\r\n\r\n"
    b"\xff\xd8two"
    b"\r\n--" + BOUNDARY.encode() + b"--\r\n"
)
EXPECTED = [
    (
        {
            "content-type": "application/octet-stream",
            "content-location": "http://127.0.0.1:8042/dicom-web/x/frames/1",
        },
        b"\x00\r\n--b0und\r\n\r\nframe one",
    ),
    ({"content-type": "image/jpeg"}, b"\xff\xd8two"),
]


def _parse(chunks: list[bytes]) -> tuple[list[tuple[dict[str, str], bytes]], int]:
    parser = MultipartParser(BOUNDARY)
    parts: list[tuple[dict[str, str], bytes]] = []
    ends = 0
    for chunk in chunks:
        for event in parser.feed(chunk):
            if isinstance(event, PartHeaders):
                parts.append((event.headers, b""))
            elif isinstance(event, PartData):
                headers, data = parts[-1]
                parts[-1] = (headers, data + event.data)
            elif isinstance(event, PartEnd):
                ends += 1
    assert parser.done
    return parts, ends


@pytest.mark.parametrize("size", [1, 2, 3, 7, 31, 32, 33, 1000])
def test_any_chunking_gives_the_same_parts(size: int) -> None:
    chunks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    parts, ends = _parse(chunks)
    assert parts == EXPECTED
    assert ends == 2


def test_every_split_point() -> None:
    for cut in range(len(BODY) + 1):
        parts, _ends = _parse([BODY[:cut], BODY[cut:]])
        assert parts == EXPECTED, cut


def test_incomplete_body_is_not_done() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(BODY[:-10])
    assert not parser.done
