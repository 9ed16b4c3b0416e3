"""The generated account the archive's own processes use on Orthanc's loopback HTTP port."""

from __future__ import annotations

import contextlib
import json
import secrets

from archive.settings import ArchiveSettings
from security.api import write_secret_file

__all__ = ["OrthancCredentials", "credentials"]


class OrthancCredentials:
    """The generated account the archive's own tools use on Orthanc's loopback HTTP port."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:  # never print the password
        return f"OrthancCredentials({self.username!r}, '***')"


def credentials(settings: ArchiveSettings) -> OrthancCredentials:
    """Load, or on first start generate (0600), the Orthanc account."""
    path = settings.home / "secrets" / "orthanc-credentials.json"
    if not path.exists():
        data = {"username": "vna-admin", "password": secrets.token_urlsafe(32)}
        with contextlib.suppress(FileExistsError):
            write_secret_file(path, json.dumps(data).encode())
    data = json.loads(path.read_text())
    return OrthancCredentials(data["username"], data["password"])
