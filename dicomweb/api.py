"""The gateway's public face for the composition root (``compose/``), ``deploy/`` and ``bench/``.

:func:`create_app` builds the aiohttp application for an archive home;
:class:`GatewaySettings` is its ``[gateway]`` section of the settings; the rest is what
serving it needs (TLS files, the access log, metrics; gunicorn runs the worker processes
in ``compose/gateway_workers.py``). Everything else in ``dicomweb`` is private: import
from here.

The settings section is also public as ``dicomweb.settings`` on its own: the root
settings model (``compose/settings.py``) is loaded inside Orthanc's embedded interpreter,
which must not load the web stack this module brings in (``tests/unit/test_boundaries.py``).
"""

from dicomweb.app import create_app
from dicomweb.http.middleware import AccessLogger
from dicomweb.http.transport import tls_files
from dicomweb.operations.metrics import MULTIPROC_ENV, GatewayMetrics
from dicomweb.settings import GatewaySettings

__all__ = [
    "MULTIPROC_ENV",
    "AccessLogger",
    "GatewayMetrics",
    "GatewaySettings",
    "create_app",
    "tls_files",
]
