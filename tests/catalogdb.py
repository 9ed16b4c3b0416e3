"""Catalog databases for tests, made as a home's is: by the migrations.

Nothing creates tables on open (``archive.migrations.upgrade`` does, in ``open_store``
and the indexer), so a test that opens the catalog, or a store of security or sharing on
its engine, first gets its database from :func:`migrated`.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from sqlalchemy import make_url

from archive import migrations

__all__ = ["migrated"]

_lock = threading.Lock()
_template: Path | None = None


def migrated(url: str) -> str:
    """Bring the database at ``url`` to the current schema and return ``url``.

    A new SQLite file is a copy of one that the migrations made in this process (an
    upgrade from nothing costs a few hundred milliseconds); anything else is upgraded.
    """
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or Path(path).exists():
        migrations.upgrade(url)
        return url
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_template(), path)
    return url


def _migrated_template() -> Path:
    global _template
    with _lock:
        if _template is None:
            folder = tempfile.mkdtemp(prefix="vna-catalog-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            made = Path(folder) / "catalog.db"
            migrations.upgrade(f"sqlite:///{made}")
            _template = made
        return _template
