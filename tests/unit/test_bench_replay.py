"""bench/replay.py, the do-nothing server of ``bench.dicomweb --ceiling``: it must send the
saved answers byte for byte, with their type and coding, over one keep-alive connection."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import free_ports
from bench.replay import _Server, save_index


@pytest.fixture
def replay(tmp_path: Path) -> Iterator[tuple[int, dict[str, bytes]]]:
    bodies = {"a": os.urandom(3 << 20), "b": b"tiny"}
    for name, body in bodies.items():
        (tmp_path / name).write_bytes(body)
    save_index(
        tmp_path,
        {
            "/x/studies/1": ("a", 'multipart/related; type="application/dicom"; boundary=B', ""),
            "/y/studies/1": ("b", "application/octet-stream", "zstd"),
        },
    )
    server = _Server(free_ports(1)[0], tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_saved_answers_are_sent_as_saved_on_one_connection(
    replay: tuple[int, dict[str, bytes]],
) -> None:
    port, bodies = replay
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(2):  # the same connection serves the next request
            conn.request("GET", "/x/studies/1", headers={"Accept": "*/*"})
            answer = conn.getresponse()
            assert answer.status == 200
            assert answer.getheader("Content-Type", "").endswith("boundary=B")
            assert answer.getheader("Content-Encoding") is None
            assert answer.read() == bodies["a"]
        conn.request("GET", "/y/studies/1")
        answer = conn.getresponse()
        assert answer.getheader("Content-Encoding") == "zstd"
        assert answer.read() == bodies["b"]
        conn.request("GET", "/nothing")
        missing = conn.getresponse()
        assert missing.status == 404
        assert missing.read() == b""
    finally:
        conn.close()
