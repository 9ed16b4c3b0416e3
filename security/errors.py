"""The project's small error hierarchy.

Every package raises these; each boundary (gateway middleware, Orthanc adapter, DIMSE
handlers, CLI) translates them exactly once into its own vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "Conflict",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "StorageFull",
    "TierUnavailable",
    "TooManyAttempts",
    "UnsupportedMediaType",
    "VnaError",
]


class VnaError(Exception):
    """Base class; the message is meant for a person and names what to do.

    ``code`` overrides the boundary's machine-readable name for the error (a client
    written against it may test that name); ``details`` are fields a client can act on,
    which a boundary adds to its answer (the attempts left before a link locks).
    """

    code: str | None = None

    @property
    def details(self) -> Mapping[str, object]:
        return {}


class NotFound(VnaError):
    pass


class Forbidden(VnaError):
    pass


class InvalidInput(VnaError):
    pass


class Conflict(VnaError):
    pass


class NotAcceptable(VnaError):
    """None of the representations the client accepts can be produced (HTTP 406)."""


class UnsupportedMediaType(VnaError):
    """The request body is of a type this operation does not take (HTTP 415)."""


class PayloadTooLarge(VnaError):
    """The request body exceeds a configured limit; nothing was kept (HTTP 413)."""


class ServiceUnavailable(VnaError):
    """A part of the service is not installed or not running; the message says how to
    fix it (HTTP 503)."""


class TooManyAttempts(VnaError):
    """Too many failures from one caller lately: try again later (HTTP 429)."""


class StorageFull(VnaError):
    pass


class TierUnavailable(VnaError):
    pass


class IntegrityError(VnaError):
    """Stored bytes do not match their recorded identity: tampering, bit rot or truncation."""
