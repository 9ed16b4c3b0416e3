"""A push parser for a streamed multipart body (RFC 2046 5.1), for answers from Orthanc
whose part headers the gateway rewrites before passing the parts on.

Pure code: :meth:`MultipartParser.feed` takes bytes as they arrive and returns events;
a part's body is handed out in pieces, never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MultipartParser", "PartData", "PartEnd", "PartHeaders"]

_MAX_HEADERS = 16 * 1024


@dataclass(frozen=True, slots=True)
class PartHeaders:
    """A part begins; header names in lower case."""

    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete (:attr:`MultipartParser.done` tells if it was the last)."""


Event = PartHeaders | PartData | PartEnd


class MultipartParser:
    """Feed bytes, get :data:`Event` s; :attr:`done` once the closing delimiter is seen."""

    def __init__(self, boundary: str) -> None:
        self._first = b"--" + boundary.encode("latin-1")
        self._delimiter = b"\r\n" + self._first
        self._buffer = b""
        self._state = "preamble"  # preamble, headers, body, after, done
        self.done = False

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while True:
            if self._state == "preamble":
                at = self._buffer.find(self._first)
                if at < 0:
                    self._buffer = self._buffer[-len(self._first) :]
                    return events
                self._buffer = self._buffer[at + len(self._first) :]
                self._state = "after"
            elif self._state == "after":  # right after a delimiter: "--" or CRLF
                if len(self._buffer) < 2:
                    return events
                if self._buffer.startswith(b"--"):
                    self._state, self.done, self._buffer = "done", True, b""
                    return events
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return events
                self._buffer = self._buffer[end + 2 :]  # transport padding, then CRLF
                self._state = "headers"
            elif self._state == "headers":
                if len(self._buffer) < 2:
                    return events
                if self._buffer.startswith(b"\r\n"):  # a part without headers
                    events.append(PartHeaders({}))
                    self._buffer = self._buffer[2:]
                    self._state = "body"
                    continue
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > _MAX_HEADERS:
                        raise ValueError("multipart part headers are too long")
                    return events
                events.append(PartHeaders(_headers(self._buffer[:end])))
                self._buffer = self._buffer[end + 4 :]
                self._state = "body"
            elif self._state == "body":
                at = self._buffer.find(self._delimiter)
                if at < 0:
                    keep = len(self._delimiter) - 1
                    if len(self._buffer) > keep:
                        events.append(PartData(self._buffer[:-keep]))
                        self._buffer = self._buffer[-keep:]
                    return events
                if at:
                    events.append(PartData(self._buffer[:at]))
                events.append(PartEnd())
                self._buffer = self._buffer[at + len(self._delimiter) :]
                self._state = "after"
            else:
                return events


def _headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            out[name.strip().lower()] = value.strip()
    return out
