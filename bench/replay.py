"""A server that does no work: it answers GETs with answers saved earlier, by ``sendfile``.

``bench.dicomweb --ceiling`` saves the study answers of both servers (status line aside:
body, ``Content-Type`` and ``Content-Encoding``) and serves them again from here, from the
page cache, without reading them into Python. What the benchmark's clients get from this
server is the most any HTTP server can deliver to them on this machine: it bounds the
ratio a real server can reach against another.

    python -m bench.replay PORT DIR     # DIR/index.json: {"/path": [file, type, encoding]}
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
from pathlib import Path
from typing import Any

__all__ = ["save_index", "serve"]

INDEX = "index.json"


def save_index(directory: Path, answers: dict[str, tuple[str, str, str]]) -> None:
    """Write the index: request path -> (file name in ``directory``, type, encoding)."""
    (directory / INDEX).write_text(json.dumps(answers))


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline(65536)
            if not request_line:
                return
            while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                pass  # the headers do not change the saved answer
            parts = request_line.split()
            entry = self.server.answers.get(parts[1].decode() if len(parts) > 1 else "")
            if entry is None:
                self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            name, content_type, encoding = entry
            path = self.server.directory / name
            size = path.stat().st_size
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n"
            if encoding:
                head += f"Content-Encoding: {encoding}\r\n"
            self.wfile.write((head + "\r\n").encode())
            self.wfile.flush()
            with open(path, "rb") as body:
                sent = 0
                while sent < size:
                    sent += os.sendfile(self.connection.fileno(), body.fileno(), sent, size - sent)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, directory: Path) -> None:
        self.directory = directory
        self.answers: dict[str, Any] = json.loads((directory / INDEX).read_text())
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


def serve(port: int, directory: Path) -> None:
    with _Server(port, directory) as server:
        server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
