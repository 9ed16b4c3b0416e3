"""Who may speak DICOM, seen from outside Orthanc: registrations applied to the running
archive at once, and Orthanc's own refusals turned into audit records.

Orthanc checks every DIMSE request against its modality list (calling AE, with
``dicom.check_host`` the peer's address, and the called AE) before any plugin callback
runs, so the plugin never hears of what Orthanc refuses. Orthanc logs each refusal with
the AE and address; the supervisor reads those lines from ``log/orthanc.log`` as they are
written and appends one ``security-alert`` audit record per refusal
(:class:`RefusalAuditor`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import requests

from archive.api import credentials
from compose.api import Settings
from security.api import AuditEvent, AuditLog

__all__ = ["Refusal", "RefusalAuditor", "RefusalParser", "apply_registrations"]

logger = logging.getLogger(__name__)

# Orthanc 1.10-1.12 (OrthancServer/Sources/main.cpp, CommandDispatcher.cpp), e.g.
#   W1207 16:09:35.104732 main.cpp:415] DICOM authorization rejected for AET HOSPA on IP
#     127.0.0.9: Its IP address should be 127.0.0.1 according to configuration option ...
#   W1207 16:09:35.104780 CommandDispatcher.cpp:828] Rejected Find request from remote DICOM
#     modality with AET "HOSPA" and hostname "127.0.0.9"
#   W1207 16:09:35.117391 CommandDispatcher.cpp:602] Rejected association, because of a bad
#     called AET in the request (WRONG)
_REASON = re.compile(r"DICOM authorization rejected\s+for AET (\S*) on IP (\S+?): (.*)$")
_REQUEST = re.compile(
    r'Rejected (\w+) request from remote DICOM modality with AET "([^"]*)" and hostname "([^"]*)"'
)
_CALLED = re.compile(r"Rejected association, because of a bad called AET in the request \((.*)\)")
#   E1207 16:14:19.362267 CommandDispatcher.cpp:284] Receiving Association failed: TLS error:
#     certificate verify failed
_TLS = re.compile(r"Receiving Association failed: TLS error: (.*)$")
_C_GET_OFF = "C-GET is off (setting dicom_allow_get): retrieve with C-MOVE or WADO-RS"
_SERVICES = {
    "Echo": "C-ECHO",
    "Find": "C-FIND",
    "FindWorklist": "C-FIND (worklist)",
    "Get": "C-GET",
    "Move": "C-MOVE",
    "Store": "C-STORE",
    "NAction": "N-ACTION",
    "NEventReport": "N-EVENT-REPORT",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """One DIMSE request or association Orthanc refused."""

    calling_ae: str | None
    address: str | None
    service: str
    reason: str

    def audit_event(self) -> AuditEvent:
        detail = {"via": "dimse", "service": self.service, "reason": self.reason}
        return AuditEvent(
            "security-alert",
            "E",
            4,
            self.calling_ae or "unknown AE",
            network_address=self.address,
            detail={"change": "dimse-refused", **detail},
        )


class RefusalParser:
    """Turns Orthanc's log lines into refusals (the reason line comes just before the
    request line of the same refusal)."""

    def __init__(self) -> None:
        self._reason: tuple[str, str, str] | None = None

    def feed(self, line: str) -> Refusal | None:
        if match := _REASON.search(line):
            self._reason = (match[1], match[2], match[3].strip())
            return None
        if match := _REQUEST.search(line):
            kind, ae, address = match[1], match[2], match[3]
            reason = "not allowed for this AE"
            if self._reason is not None and self._reason[:2] == (ae, address):
                reason = _plain_reason(self._reason[2])
            if kind == "Get" and "not allowed for this" in reason:
                # a registered AE: Orthanc aborts the association without a C-GET response
                # (it accepts the C-GET contexts, and plugins get no C-GET hook), so the
                # operator is told here what the workstation should do
                reason = _C_GET_OFF
            self._reason = None
            return Refusal(ae, address, _SERVICES.get(kind, kind), reason)
        if match := _CALLED.search(line):
            return Refusal(None, None, "association", f"called AE {match[1]!r} is not this archive")
        if match := _TLS.search(line):
            # Orthanc logs no address here; the handshake failed before any AE title was sent
            return Refusal(None, None, "association", f"DICOM TLS: {match[1].strip()}")
        return None


def _plain_reason(orthanc_reason: str) -> str:
    if orthanc_reason.startswith("This AET is not listed"):
        return "AE title not registered (or registered without a host)"
    if orthanc_reason.startswith("Its IP address should be"):
        return "address is not the AE's registered host"
    return orthanc_reason.split(" according to ")[0]


class RefusalAuditor:
    """Follows Orthanc's log file from its current end and audits each refusal."""

    def __init__(self, log_file: Path, audit: AuditLog) -> None:
        self.log_file = log_file
        self.audit = audit
        self.parser = RefusalParser()
        self._offset = log_file.stat().st_size if log_file.exists() else 0
        self._partial = b""

    def poll(self) -> int:
        """Audit the refusals logged since the last call; returns how many."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return 0
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next call
        count = 0
        for raw in lines:
            refusal = self.parser.feed(raw.decode("utf-8", "replace"))
            if refusal is not None:
                self.audit.append(refusal.audit_event())
                count += 1
        return count


def apply_registrations(settings: Settings) -> bool:
    """Ask the running archive's Orthanc to take the catalog's AE registrations now
    (``POST /vna/modalities/sync``, on loopback with the generated credentials).

    False when no archive answers: it reads the catalog when it starts, and a running one
    on another node picks the change up within seconds anyway.
    """
    if not (settings.home / "secrets").exists():
        return False
    creds = credentials(settings)
    try:
        answer = requests.post(
            f"http://127.0.0.1:{settings.orthanc_http_port}/vna/modalities/sync",
            auth=(creds.username, creds.password),
            timeout=30,
        )
    except requests.RequestException:
        return False
    if not answer.ok:
        logger.warning(
            "the archive did not apply the registration at once (%s)", answer.status_code
        )
        return False
    return True
