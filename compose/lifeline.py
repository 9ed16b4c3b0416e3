"""Processes that end with the process that started them.

``vna up`` (``deploy/supervisor.py``) starts the indexer and the gateway in sessions of
their own, so a terminal's Ctrl-C reaches only the supervisor, which stops them once. If
the supervisor itself is killed (SIGKILL, the OOM killer), nothing would stop them: they
would hold the gateway's port and the catalog for a supervisor that no longer exists.
Linux's ``prctl(PR_SET_PDEATHSIG)`` has the kernel signal them when it dies; the C call is
one line through ctypes, so no package is needed for it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

__all__ = ["die_with_parent"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when ``parent`` (its parent) ends.

    The process's own handler for ``sig`` then stops it cleanly. The kernel watches the
    parent's *thread* that started this process, so the parent starts its children from
    its main thread. The setting survives ``exec`` and is not inherited by children.
    Exits at once if ``parent`` has already ended (this process was re-parented before
    the call took effect). Elsewhere than Linux it only logs a warning.
    """
    if sys.platform != "linux":
        logger.warning("cannot ask to be stopped with process %d (not Linux)", parent)
    else:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        raise SystemExit(0)
