"""The composition layer's public face for ``deploy/`` and ``bench/``: the root settings
model and how many gateway worker processes a setting means on this machine.

The processes themselves are started by module name (``python -m compose.gateway``,
``python -m compose.indexer``; Orthanc loads ``compose/orthanc_entry.py``), not imported.
"""

from compose.gateway_workers import resolve_workers, usable_cpus
from compose.settings import Settings, load_settings

__all__ = ["Settings", "load_settings", "resolve_workers", "usable_cpus"]
