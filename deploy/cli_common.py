"""What the ``vna`` command groups share: the ``--home`` and ``--json`` options, the audit
user of a command-line change, and opening an archive home that has been started."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from archive.api import BlobStore, open_store
from compose.api import Settings, load_settings
from security.api import VnaError

__all__ = ["HomeOption", "JsonOption", "cli_user", "err", "open_home", "out"]

# emoji codes off: rich would turn ":CD:" in a certificate fingerprint (or ":cd:" anywhere
# in a name or path) into an emoji, so what an operator copies would not be what was meant
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)

HomeOption = Annotated[
    Path | None, typer.Option("--home", envvar="VNA_HOME", help="Archive home directory [./var].")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def cli_user() -> str:
    """The audit records' user for a change made from the shell."""
    return f"vna-cli:{getpass.getuser()}"


def open_home(home: Path | None) -> tuple[Settings, BlobStore]:
    """The settings and store of an archive home; a directory ``vna up`` has not initialised
    yet (no keys) is refused with a message saying so."""
    settings = load_settings(home)
    if not (settings.keys_dir / "dedup.key").exists():
        raise VnaError(
            f"{settings.home} is not an archive home yet: start it once with "
            f"`vna up --home {settings.home}`"
        )
    return settings, open_store(settings)
