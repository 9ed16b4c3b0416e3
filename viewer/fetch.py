"""Fetch the pinned OHIF release from npm and unpack its ``dist/``: ``python -m viewer.fetch``.

Idempotent: when ``<dest>/release.json`` names the pinned version and integrity, nothing is
downloaded. Otherwise ``npm pack`` fetches the package tarball (npm's own client, its
cache and registry configuration), its SHA-512 is checked against the pinned
``dist.integrity`` before anything is unpacked, and only ``package/dist/`` is extracted
(regular files and folders; no links, no paths outside). The new tree replaces the old
one only once complete; ``release.json`` is written last.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from viewer.bundle import OHIF, BundleError, OhifRelease, default_bundle_dir

__all__ = ["extract_dist", "fetch", "integrity_of", "is_current", "main"]

MARKER = "release.json"
_PREFIX = ("package", "dist")


def integrity_of(path: Path) -> str:
    """Subresource-integrity string (``sha512-<base64>``) of a file, as npm records it."""
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def is_current(dest: Path, release: OhifRelease = OHIF) -> bool:
    """Whether ``dest`` holds a complete unpack of ``release``."""
    try:
        recorded = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return False
    expected = {"package": release.package, "version": release.version}
    expected["integrity"] = release.integrity
    return bool(recorded == expected and (dest / "dist" / "index.html").is_file())


def extract_dist(tarball: Path, target: Path) -> int:
    """Extract ``package/dist/**`` of an npm tarball into ``target``; returns the file count.

    Raises
    ------
    BundleError
        On a member that is a link or device, or whose path would leave ``target``, or
        when the tarball has no ``package/dist/index.html``.
    """
    count = 0
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            parts = PurePosixPath(member.name).parts
            if parts[: len(_PREFIX)] != _PREFIX or len(parts) == len(_PREFIX):
                continue
            inner = parts[len(_PREFIX) :]
            if any(p in ("..", ".", "") or "\\" in p for p in inner) or member.name.startswith("/"):
                raise BundleError(f"unsafe path in the OHIF tarball: {member.name!r}")
            destination = target.joinpath(*inner)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise BundleError(f"unexpected member type in the OHIF tarball: {member.name!r}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is None:  # pragma: no cover - isfile() members always have data
                raise BundleError(f"unreadable member {member.name!r}")
            with source, destination.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.chmod(destination, 0o644)
            count += 1
    if not (target / "index.html").is_file():
        raise BundleError("the OHIF tarball has no package/dist/index.html")
    return count


def _npm_pack(release: OhifRelease, workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise BundleError("npm is not installed (deploy/install-system.sh installs it)")
    done = subprocess.run(
        [npm, "pack", release.spec, "--json", "--silent"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BundleError(f"npm pack {release.spec} failed: {done.stderr.strip()[-2000:]}")
    try:
        filename = json.loads(done.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError) as exc:
        raise BundleError(f"npm pack printed no file name: {done.stdout[:500]!r}") from exc
    tarball = workdir / PurePosixPath(str(filename)).name
    if not tarball.is_file():
        raise BundleError(f"npm pack did not write {tarball.name}")
    return tarball


def install_tarball(tarball: Path, dest: Path, release: OhifRelease = OHIF) -> None:
    """Verify ``tarball`` against ``release`` and make ``dest`` its unpacked ``dist/``."""
    got = integrity_of(tarball)
    if got != release.integrity:
        raise BundleError(
            f"{release.spec}: tarball integrity {got} does not match the pinned "
            f"{release.integrity}; nothing was unpacked"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ohif-", dir=dest.parent))
    try:
        extract_dist(tarball, staging / "dist")
        marker = {"package": release.package, "version": release.version}
        marker["integrity"] = release.integrity
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def fetch(dest: Path, release: OhifRelease = OHIF) -> bool:
    """Make ``dest`` hold ``release``'s ``dist/``; returns whether anything was fetched."""
    if is_current(dest, release):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ohif-pack-", dir=dest.parent) as work:
        tarball = _npm_pack(release, Path(work))
        install_tarball(tarball, dest, release)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viewer.fetch", description=__doc__)
    parser.add_argument(
        "--dest",
        type=Path,
        default=default_bundle_dir().parent,
        help="folder for dist/ and release.json [viewer/ohif]",
    )
    args = parser.parse_args(argv)
    try:
        fetched = fetch(args.dest)
    except BundleError as exc:
        print(f"viewer: {exc}", file=sys.stderr)
        return 1
    state = "fetched and verified" if fetched else "already present"
    print(f"viewer: OHIF {OHIF.version} {state} in {args.dest / 'dist'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
