"""Reading the audit log over HTTP: ``GET /api/audit`` (scope ``audit.read``).

Reading is itself an audited event (Audit Log Used), recorded before the answer is sent.
A reader sees every institution's records: audit review is an operator's task, which is
why it needs its own scope rather than coming with ``dicom.read``.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicomweb.appkeys import AUDIT_LOG
from dicomweb.http.auth import authorize
from dicomweb.operations.audit_records import EventAction, EventOutcome, EventType, audit
from security.api import InvalidInput, dicom_xml, fhir_audit_event
from security.identity import TokenValidator

__all__ = ["AuditQuery", "read_audit_log"]

AUDIT_READ = "audit.read"


class AuditQuery(BaseModel):
    """Query parameters of ``GET /api/audit`` (untrusted input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: int = Field(0, ge=0, description="only records with a sequence number above this")
    limit: int = Field(100, ge=1, le=1000)
    format: Literal["json", "fhir", "dicom"] = "json"


async def read_audit_log(request: web.Request, validator: TokenValidator) -> web.Response:
    principal = await authorize(request, validator, AUDIT_READ)
    try:
        query = AuditQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"bad audit query ({problems})") from exc
    log = request.app[AUDIT_LOG]
    records = await asyncio.to_thread(lambda: list(log.records(query.after, query.limit)))
    await audit(
        request,
        event=EventType.AUDIT_LOG_USED,
        action=EventAction.READ,
        outcome=EventOutcome.SUCCESS,
        user=principal.subject,
        institution=principal.institution,
        detail={"format": query.format, "after": str(query.after), "records": str(len(records))},
    )
    if query.format == "fhir":
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": fhir_audit_event(seq, event)} for seq, event in records],
        }
        return web.json_response(bundle, content_type="application/fhir+json")
    if query.format == "dicom":
        body = "<AuditMessages>\n" + "".join(dicom_xml(e) + "\n" for _, e in records)
        return web.Response(text=body + "</AuditMessages>\n", content_type="application/xml")
    return web.json_response(
        {
            "records": [{"seq": seq, **asdict(event)} for seq, event in records],
            "next": records[-1][0] if records else query.after,
        }
    )
