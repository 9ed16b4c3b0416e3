"""dicomweb.wado.frames.relay_parts: Orthanc's multipart answer relayed through aiohttp's
multipart reader, whatever pieces it arrives in, with its part headers rewritten."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import BodyPartReader, ClientSession, MultipartReader, web
from aiohttp.test_utils import TestServer

from dicomweb.http.orthanc import OrthancError
from dicomweb.wado.frames import relay_parts

ROOT = "https://pacs.example/dicom-web"
BOUNDARY = "b0undary-like-orthanc"
HEADERS = {"Content-Type": f"multipart/related; type=image/jpeg; boundary={BOUNDARY}"}
FRAMES = "/studies/1.2/series/1.3/instances/1.4/frames/"
FIRST = b"\x00\r\n--b0und\r\n\r\nframe one\r\n--b0undary-like-orthanX"
SECOND = b"\xff\xd8two"
BODY = (
    b"preamble\r\n"
    b"--" + BOUNDARY.encode() + b"\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: " + str(len(FIRST)).encode() + b"\r\n"
    b"Content-Location: http://127.0.0.1:8042/dicom-web" + FRAMES.encode() + b"1\r\n"
    b"MIME-Version: 1.0\r\n\r\n" + FIRST + b"\r\n"
    b"--" + BOUNDARY.encode() + b"\r\n"
    b"Content-Type: image/jpeg\r\n"
    b"Content-Location: /elsewhere/x\r\n\r\n" + SECOND + b"\r\n"
    b"--" + BOUNDARY.encode() + b"--\r\n"
)


async def _relay(body: bytes, size: int) -> tuple[bytes, int, BaseException | None]:
    """Serve ``body`` from a real HTTP server in pieces of ``size`` (each written and
    drained before the next), relay the client's answer; returns what the relay wrote,
    what it counted, and its error. Before its last piece the server waits until the
    relay has written the first part's bytes: a relay that held the body would hang."""
    out = bytearray()
    first_out = asyncio.Event()

    async def upstream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=HEADERS)
        await response.prepare(request)
        pieces = [body[start : start + size] for start in range(0, len(body), size)]
        for piece in pieces[:-1]:
            await response.write(piece)
        if body == BODY and len(body) - len(pieces[-1]) >= BODY.index(FIRST) + len(FIRST):
            await asyncio.wait_for(first_out.wait(), 60)  # a guard against a hang only
        await response.write(pieces[-1])
        await response.write_eof()
        return response

    async def write(data: bytes) -> None:
        out.extend(data)
        if FIRST in out:
            first_out.set()

    app = web.Application()
    app.router.add_get("/frames", upstream)
    async with TestServer(app) as server, ClientSession() as session:
        answer = await session.get(server.make_url("/frames"))
        try:
            sent = await relay_parts(answer.headers, answer.content, write, ROOT)
        except OrthancError as exc:
            return bytes(out), -1, exc
        finally:
            answer.release()
    return bytes(out), sent, None


async def _parts(body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """``body`` parsed by aiohttp's reader, as a client of the relay would."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=HEADERS)

    app = web.Application()
    app.router.add_get("/", serve)
    parts = []
    async with TestServer(app) as server, ClientSession() as session:
        answer = await session.get(server.make_url("/"))
        async for part in MultipartReader(answer.headers, answer.content):
            assert isinstance(part, BodyPartReader)
            parts.append((dict(part.headers), bytes(await part.read())))
    return parts


@pytest.mark.parametrize("size", [1, 2, 3, 7, 23, 24, 25, 64, 4096])
def test_any_chunking_relays_the_parts_with_public_locations(size: int) -> None:
    async def main() -> None:
        out, sent, error = await _relay(BODY, size)
        assert error is None
        assert sent == len(FIRST) + len(SECOND)
        assert await _parts(out) == [
            (
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(FIRST)),
                    "Content-Location": f"{ROOT}{FRAMES}1",
                },
                FIRST,
            ),
            # not a DICOMweb URL of Orthanc's: dropped
            ({"Content-Type": "image/jpeg"}, SECOND),
        ]

    asyncio.run(main())


@pytest.mark.parametrize("cut", [40, len(BODY) // 2, len(BODY) - 30, len(BODY) - 3])
def test_a_truncated_answer_is_an_error_and_never_looks_complete(cut: int) -> None:
    async def main() -> None:
        out, _sent, error = await _relay(BODY[:cut], 5)
        assert isinstance(error, OrthancError)
        assert f"--{BOUNDARY}--".encode() not in out

    asyncio.run(main())
