"""Run the indexer: ``python -m compose.indexer --home DIR [--parent PID]``, started by ``vna up``.

The indexer's composition root: it loads the settings, opens the catalog and the audit
log, and runs :class:`archive.indexer.Indexer` (a process of its own, so that its Python
work stays off the interpreter lock Orthanc's DICOM threads need) until SIGTERM/SIGINT,
or until the process ``--parent`` names ends (the supervisor passes its own pid).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from types import FrameType

from archive import migrations
from archive.catalog import Catalog
from archive.indexer import Indexer
from compose.lifeline import die_with_parent
from compose.settings import load_settings
from security.api import AuditLog, restrict_umask

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m compose.indexer", description=__doc__)
    parser.add_argument("--home", default=None, help="archive home [VNA_HOME or ./var]")
    parser.add_argument(
        "--parent", type=int, default=None, help="stop when the process with this pid ends"
    )
    args = parser.parse_args(argv)
    restrict_umask()  # the catalog's WAL and anything else it creates: the owner's only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s indexer %(levelname)s %(message)s")
    settings = load_settings(args.home)
    # ingest first: the index may lag a moment, a C-STORE should not wait for it
    os.nice(10)
    migrations.upgrade(settings.resolved_catalog_url)
    catalog = Catalog(settings.resolved_catalog_url, durable=settings.storage.durable_catalog)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.parent is not None:  # after the handler: its SIGTERM then stops cleanly
        die_with_parent(args.parent)
    logger.info("indexing %s", settings.home)
    try:
        audit = AuditLog.open(catalog.engine, settings.keys_dir, settings.audit_syslog)
        Indexer(catalog, audit=audit).run(stop)
    finally:
        catalog.close()


if __name__ == "__main__":
    main()
