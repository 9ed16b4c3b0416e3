"""The DIMSE handlers' public face for the composition root.

:func:`find`, :func:`move` and :func:`store` answer the C-FIND, C-MOVE and C-STORE
admission the Orthanc adapter (``archive.plugin``) hands over as plain requests
(``archive.api.FindRequest``, ``MoveRequest``, ``StoreRequest``), for the calling AE's
institution only. Everything else in ``dimse`` is private: import from here.
"""

from dimse.handlers import MAX_FIND_RESULTS, find, move, store

__all__ = ["MAX_FIND_RESULTS", "find", "move", "store"]
