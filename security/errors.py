"""The project's small error hierarchy.

Every package raises these; each boundary (gateway middleware, Orthanc adapter, DIMSE
handlers, CLI) translates them exactly once into its own vocabulary.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "StorageFull",
    "TierUnavailable",
    "VnaError",
]


class VnaError(Exception):
    """Base class; the message is meant for a person and names what to do."""


class NotFound(VnaError):
    pass


class Forbidden(VnaError):
    pass


class InvalidInput(VnaError):
    pass


class Conflict(VnaError):
    pass


class StorageFull(VnaError):
    pass


class TierUnavailable(VnaError):
    pass


class IntegrityError(VnaError):
    """Stored bytes do not match their recorded identity: tampering, bit rot or truncation."""
