"""The framing of the gateway's ``multipart/related`` answers (RFC 2387, PS3.18 8.7.1).

Bodies are streamed by their writers (read ahead, from the blob store or from Orthanc);
this says only what goes between them. A part's head starts with the CRLF that ends the
previous part's body, so a writer sends head, body, head, body, ..., end.

aiohttp's ``MultipartWriter`` is not used: it holds every part's payload until the whole
message is written, and the answers here are sent while the next part is still read.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

__all__ = ["Multipart"]


@dataclass(frozen=True, slots=True)
class Multipart:
    """One ``multipart/related`` message whose parts are of ``part_type``."""

    part_type: str
    boundary: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def content_type(self) -> str:
        """The message's ``Content-Type``."""
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def head(
        self,
        content_type: str | None = None,
        *,
        first: bool,
        length: int | None = None,
        location: str | None = None,
    ) -> bytes:
        """The delimiter and headers before a part's body (``content_type`` defaults to
        the message's part type); ``first`` is False for every part after the first."""
        lines = [
            "\r\n" if not first else "",
            f"--{self.boundary}\r\nContent-Type: {content_type or self.part_type}\r\n",
        ]
        if length is not None:
            lines.append(f"Content-Length: {length}\r\n")
        if location is not None:
            lines.append(f"Content-Location: {location}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("ascii")

    def end(self) -> bytes:
        """The CRLF ending the last body and the closing delimiter."""
        return f"\r\n--{self.boundary}--\r\n".encode("ascii")
