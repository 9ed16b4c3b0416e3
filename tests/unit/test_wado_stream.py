"""WADO-RS study streaming over a real aiohttp server (dicomweb.wado.retrieve.stream_instances)."""

from __future__ import annotations

import asyncio
import os
import queue
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
import zstandard
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from archive.blobstore import BlobStore
from archive.catalog import Catalog
from archive.settings import StorageSettings
from archive.split import pixel_data_offset
from dicomweb.wado.instance_reader import ContentCache, InstanceReader
from dicomweb.wado.retrieve import AcceptedDicom, accepts_zstd, stream_instances
from query.api import StoredInstance
from security.keys import KeyRing
from tiering.fs import FileStore, Journal

ANY = AcceptedDicom((), True)


def _items(uuids: Sequence[str]) -> list[StoredInstance]:
    return [
        StoredInstance("1.2", "1.2.3", f"1.2.3.{n}", "1.2.840.10008.1.2.1", uuid)
        for n, uuid in enumerate(uuids)
    ]


async def _get(
    store: BlobStore, uuids: Sequence[str], read_ahead: int = 1 << 20, zstd: bool = False
) -> tuple[int, dict[str, str], bytes | None]:
    """Serve ``uuids`` as one retrieval; status, headers, body (None if it broke off).
    With ``zstd`` the answer is zstd-encoded and the body returned is the wire bytes."""
    reader = InstanceReader(store, ContentCache(0), threads=2, read_ahead=read_ahead)

    async def handler(request: web.Request) -> web.StreamResponse:
        response, _sent = await stream_instances(request, _items(uuids), reader, ANY, zstd=zstd)
        return response

    app = web.Application()
    app.router.add_get("/study", handler)
    try:
        async with TestClient(TestServer(app), auto_decompress=False) as client:
            answer = await client.get("/study")
            try:
                body: bytes | None = await answer.read()
            except aiohttp.ClientPayloadError:
                body = None
            return answer.status, dict(answer.headers), body
    finally:
        reader.close()


def _unzstd(wire: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(wire)


def _parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    boundary = content_type.split("boundary=")[1].encode()
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")  # complete, closing boundary
    chunks = body[: -len(b"\r\n--" + boundary + b"--\r\n")].split(b"\r\n--" + boundary + b"\r\n")
    first = chunks[0]
    assert first.startswith(b"--" + boundary + b"\r\n")
    chunks[0] = first[len(b"--" + boundary + b"\r\n") :]
    out = []
    for chunk in chunks:
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        out.append((headers, data))
    return out


def test_a_study_is_sent_whole_in_order_with_lengths(
    store: BlobStore, small_ct: list[bytes], big_ct: bytes
) -> None:
    files = [big_ct, *small_ct, big_ct[:-2] + b"\x00\x00"]
    for n, data in enumerate(files):
        store.put(f"u{n}", 1, data)
    uuids = [f"u{n}" for n in range(len(files))]
    # a small read-ahead: several batches, most of them read while earlier ones are sent
    status, headers, body = asyncio.run(_get(store, uuids, read_ahead=1))
    assert status == 200 and body is not None
    assert int(headers["Content-Length"]) == len(body)
    assert "Transfer-Encoding" not in headers
    parts = _parts(headers["Content-Type"], body)
    assert [data for _, data in parts] == files
    for part_headers, data in parts:
        assert int(part_headers["Content-Length"]) == len(data)
        assert part_headers["Content-Type"] == (
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        )


def test_an_instance_still_journaled_is_sent_chunked(
    catalog: Catalog, keys: KeyRing, tmp_path: Path, small_ct: list[bytes], big_ct: bytes
) -> None:
    behind = BlobStore(
        catalog,
        keys,
        FileStore(tmp_path / "wb-tier", fsync=False),
        StorageSettings(fsync=False, write_behind_min_bytes=1024),
        Journal(tmp_path / "journal", fsync=False),
    )
    behind.put("digested", 1, small_ct[0])
    behind._digest_queue = queue.Queue()  # journal large files, never digest them
    behind.put("journaled", 1, big_ct)
    assert behind.catalog.pending("journaled") is not None
    status, headers, body = asyncio.run(_get(behind, ["digested", "journaled"]))
    assert status == 200 and body is not None
    assert "Content-Length" not in headers  # a size was unknown up front
    assert [data for _, data in _parts(headers["Content-Type"], body)] == [small_ct[0], big_ct]


def _tamper(store: BlobStore, uuid: str) -> None:
    pixels = max(store.parts(uuid), key=lambda p: p.end - p.start)
    assert pixels.blob is not None
    path = store.hot.path(pixels.blob.id.hex())
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))


def test_a_damaged_first_instance_is_an_error_answer(store: BlobStore, big_ct: bytes) -> None:
    store.put("bad", 1, big_ct)
    _tamper(store, "bad")
    status, _headers, _body = asyncio.run(_get(store, ["bad"]))
    assert status == 500  # nothing was sent yet: an ordinary error


@pytest.mark.parametrize(("position", "status"), [(1, 500), (5, 200)])
def test_a_damaged_later_instance_breaks_the_body_off(
    store: BlobStore, big_ct: bytes, position: int, status: int
) -> None:
    uuids = []
    for n in range(6):
        data = big_ct[:-8] + n.to_bytes(8, "big")  # distinct pixel blobs
        store.put(f"u{n}", 1, data)
        uuids.append(f"u{n}")
    _tamper(store, uuids[position])
    got, _headers, body = asyncio.run(_get(store, uuids))
    # the first batch (about 1 MiB: instances 0 and 1) is read before the answer starts,
    # so damage there is still an error status; later damage cuts the body short of its
    # Content-Length, which a client never takes for a complete answer
    assert got == status
    if status == 200:
        assert body is None


def test_zstd_answer_decodes_to_the_same_instances(
    store: BlobStore, small_ct: list[bytes], big_ct: bytes
) -> None:
    offset = pixel_data_offset(big_ct)
    assert offset is not None
    # noise for pixels: stored uncompressed, so compressed (fast) when sent
    noise = big_ct[: offset + 12] + os.urandom(len(big_ct) - offset - 12)
    files = [big_ct, *small_ct, noise]
    for n, data in enumerate(files):
        store.put(f"u{n}", 1, data)
    flags = {p.blob.flags for p in store.parts("u0") + store.parts(f"u{len(files) - 1}") if p.blob}
    assert flags == {0, 1}  # both kinds of stored part are in the answer
    uuids = [f"u{n}" for n in range(len(files))]
    status, headers, wire = asyncio.run(_get(store, uuids, read_ahead=1, zstd=True))
    assert status == 200 and wire is not None
    assert headers["Content-Encoding"] == "zstd"
    assert headers["Vary"] == "Accept-Encoding"
    assert "Content-Length" not in headers  # frame sizes are known only as they are read
    assert len(wire) < sum(len(f) for f in files) - len(big_ct) / 2  # the CT part shrank
    body = _unzstd(wire)
    assert [data for _, data in _parts(headers["Content-Type"], body)] == files


def test_zstd_answer_of_a_damaged_stored_frame_breaks_off(store: BlobStore, big_ct: bytes) -> None:
    uuids = []
    for n in range(6):
        store.put(f"u{n}", 1, big_ct[:-8] + n.to_bytes(8, "big"))
        uuids.append(f"u{n}")
    _tamper(store, uuids[5])  # a compressed payload: sent as stored, GCM still checked
    status, _headers, body = asyncio.run(_get(store, uuids, zstd=True))
    assert status == 200
    assert body is None  # no terminating chunk: never a complete answer


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip, deflate", False),
        ("gzip, deflate, br, zstd", True),
        ("ZSTD", True),
        ("zstd;q=0.5", True),
        ("zstd; q=0", False),
        ("zstd;q=0.0, gzip", False),
        ("zstd;q=x", False),
        ("*", False),
        ("zstdx", False),
    ],
)
def test_accepts_zstd(header: str | None, expected: bool) -> None:
    assert accepts_zstd(header) is expected
