"""Files under an archive home are the owner's only: 0600 files, 0700 directories.

The home holds the catalog (patient names, IDs, birth dates, the audit log, password
hashes), keys, Orthanc's index and logs. SQLite, Orthanc and Python's ``open`` create
files with the process umask, so every process that writes there runs under
:data:`PRIVATE_UMASK` (:func:`restrict_umask`), ``vna up`` tightens a home made before
(:func:`tighten`), and ``vna fsck``/``vna status`` name anything still open to others
(:func:`exposed`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "Exposure", "exposed", "restrict_umask", "tighten"]

PRIVATE_UMASK = 0o077
_OTHERS = 0o077  # group and others: read, write, execute


@dataclass(frozen=True, slots=True)
class Exposure:
    """A path under the home that group or others may use."""

    path: Path
    mode: int

    def describe(self) -> str:
        want = 0o700 if self.is_dir else 0o600
        return f"{self.path} is {stat.S_IMODE(self.mode):04o} (want {want:04o})"

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def restrict_umask() -> int:
    """Make this process (and what it starts) create files 0600 and directories 0700;
    returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def _walk(home: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The home (followed, if it is a link) and everything under it, never following
    symbolic links inside (a link is not a file of the home, and its own mode means
    nothing on Linux)."""
    try:
        yield home, home.stat()
    except FileNotFoundError:
        return
    for root, dirs, files in os.walk(home, followlinks=False):
        for name in (*dirs, *files):
            path = Path(root, name)
            try:
                info = path.lstat()
            except FileNotFoundError:  # removed while we walk (a running archive)
                continue
            if not stat.S_ISLNK(info.st_mode):
                yield path, info


def exposed(home: Path) -> list[Exposure]:
    """Every file or directory under ``home`` (itself included) that group or others
    may read, write or enter, in walk order."""
    return [
        Exposure(path, info.st_mode)
        for path, info in _walk(home)
        if stat.S_IMODE(info.st_mode) & _OTHERS
    ]


def tighten(home: Path) -> list[Exposure]:
    """Take group and other permissions off everything under ``home`` (directories keep
    the owner's ``rwx``); returns what was changed, as it was. A path this user may not
    change (another owner's) is left for ``vna fsck`` to report."""
    changed = []
    for item in exposed(home):
        mode = stat.S_IMODE(item.mode) & ~_OTHERS
        if item.is_dir:
            mode |= 0o700
        try:
            os.chmod(item.path, mode)  # never a link: _walk leaves them out
        except (FileNotFoundError, PermissionError):
            continue
        changed.append(item)
    return changed
