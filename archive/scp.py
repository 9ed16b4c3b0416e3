"""What the Orthanc adapter hands to the DIMSE query/retrieve handlers, and gets back.

The archive answers C-FIND and C-MOVE itself (``archive.plugin``) so that a calling AE
sees only what its institution may see. Matching the catalog is not the archive's job:
the handlers (``dimse/``) are injected by the composition root
(``compose/orthanc_entry.py``) and receive these plain values, so they can be tested
without Orthanc. Orthanc's ``DicomModalities`` entries for the registered AEs are made
here too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydicom

from archive.catalog import Catalog, Institution

__all__ = [
    "FindAnswer",
    "FindHandler",
    "FindRequest",
    "MoveHandler",
    "MoveItem",
    "MoveRequest",
    "StoreHandler",
    "StoreRequest",
    "modality_entries",
    "modality_entry",
    "peer_address",
]

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One C-STORE being admitted: who sends it and which study and SOP instance it is."""

    calling_ae: str
    institution: Institution
    study_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True)
class FindRequest:
    """One C-FIND (PS3.4 C.4.1): the caller's institution, the level and the keys.

    ``keys`` are (tag, value) pairs as the SCU sent them, in order; an empty value asks
    for the attribute to be returned without matching on it.
    """

    calling_ae: str
    institution: str
    level: str
    keys: tuple[tuple[int, str], ...]


@dataclass(frozen=True, slots=True)
class FindAnswer:
    """The matches of a C-FIND; ``complete`` is False when the result was cut short."""

    datasets: tuple[pydicom.Dataset, ...]
    complete: bool = True


@dataclass(frozen=True, slots=True)
class MoveRequest:
    """One C-MOVE (PS3.4 C.4.2): which resources the caller's institution asks for.

    Multi-valued keys (a UID list) are split already; an empty tuple means "not given".
    """

    calling_ae: str
    institution: str
    level: str
    patient_ids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MoveItem:
    """One instance a C-MOVE sends: its study, SOP Instance UID and Orthanc's id."""

    study_uid: str
    sop_uid: str
    orthanc_id: str


FindHandler = Callable[[Catalog, FindRequest], FindAnswer]
"""Answers a C-FIND from the catalog for the request's institution."""

MoveHandler = Callable[[Catalog, MoveRequest], Sequence[MoveItem]]
"""The instances a C-MOVE may send: only those the request's institution reaches."""

StoreHandler = Callable[[Catalog, StoreRequest], str | None]
"""Admits a C-STORE by the ownership rule STOW-RS follows: None, or what refused it
(``"study"``: another institution's study; ``"instance"``: a SOP instance filed there)."""


def peer_address(host: str) -> str | None:
    """The address Orthanc compares a peer's with: ``host`` itself if it is an IP address,
    else its first IPv4 address (None if it does not resolve).

    Orthanc's ``DicomCheckModalityHost`` compares the peer's address with the modality's
    ``Host`` as strings, so a name must be resolved before it is handed over.
    """
    host = host.strip()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return None
    return str(found[0][4][0]) if found else None


def modality_entry(
    ae_title: str, host: str | None, port: int | None, allow_get: bool, *, tls: bool = False
) -> Any:
    """Orthanc's object form of a ``DicomModalities`` entry for an institution's AE.

    ``host`` is the address the AE's associations must come from (``peer_address``).
    C-GET cannot be limited per institution (plugins get no C-GET hook), so ``AllowGet``
    follows the ``dicom_allow_get`` setting (off by default). C-FIND and C-MOVE stay allowed:
    the archive answers them itself with the institution's rule; C-STORE is then admitted
    by the archive's filter. Orthanc needs a port even for AEs that only push; 104 is inert.
    ``tls``: Orthanc's own C-STORE to this AE (a C-MOVE destination) uses DICOM TLS, as
    every association with the archive does when ``dicom.tls`` is on.
    """
    return {
        "AET": ae_title,
        "Host": host or "127.0.0.1",
        "Port": port or 104,
        "AllowEcho": True,
        "AllowFind": True,
        "AllowMove": True,
        "AllowGet": allow_get,
        "AllowStore": True,
        "UseDicomTls": tls,
    }


def modality_entries(
    aes: Sequence[tuple[str, str | None, int | None]],
    *,
    allow_get: bool,
    check_host: bool,
    tls: bool = False,
) -> dict[str, Any]:
    """Orthanc's ``DicomModalities`` for the registered AEs (title, host, port), keyed by
    AE title.

    With ``check_host`` an AE is listed only with the address of its registered host, so
    an AE registered without a host (or whose host does not resolve) is left out: Orthanc
    then refuses it on every service.
    """
    entries: dict[str, Any] = {}
    for ae_title, host, port in aes:
        address = peer_address(host) if host else None
        if check_host and address is None:
            continue
        entries[ae_title] = modality_entry(ae_title, address, port, allow_get, tls=tls)
    return entries
