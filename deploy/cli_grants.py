"""``vna grant add|revoke|list``: grants between institutions, from the operator's shell.

The operator acts for any institution (``--from``), but the rules are the gateway's: only
the owner of a study may grant it. Every change, and every refused change, is an audit
record whose user is ``vna-cli:<login>``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli_common import HomeOption, JsonOption, cli_user, open_home, out
from security.api import AuditEvent, AuditLog, VnaError
from sharing.api import Grant, Grants, parse_duration

__all__ = ["grant_app"]

grant_app = typer.Typer(
    help="Grants: let another institution reach a study or a patient's studies.",
    no_args_is_help=True,
)


@contextmanager
def _grants(home: Path | None) -> Iterator[tuple[Grants, AuditLog]]:
    settings, store = open_home(home)
    try:
        yield (
            Grants(store.catalog.engine),
            AuditLog.open(store.catalog.engine, settings.keys_dir, settings.audit_syslog),
        )
    finally:
        store.catalog.close()


def _patient(patient_id: str | None, issuer: str | None) -> str | None:
    # the audit record's patient participant: the id qualified by its issuer (ID^^^issuer)
    return None if patient_id is None else f"{patient_id}^^^{issuer}"


def _print(grant: Grant, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(grant.to_json()))
        return
    doc = grant.to_json()
    target = (
        f"study {grant.study_uid}"
        if grant.study_uid
        else f"patient {grant.patient_id} (issuer {grant.issuer})"
    )
    state = "active" if doc["active"] else ("revoked" if grant.revoked_at else "expired")
    out.print(
        f"grant {grant.id}: {grant.grantor} -> {grant.grantee}, {target}, "
        f"{grant.permission.value}, until {doc['expires_at'] or 'revoked'} ({state})"
    )


@grant_app.command("add")
def grant_add(
    grantor: Annotated[str, typer.Option("--from", help="Institution that owns the study.")],
    grantee: Annotated[str, typer.Option("--to", help="Institution that receives it.")],
    study_uid: Annotated[
        str | None, typer.Argument(help="Study Instance UID (omit with --patient).")
    ] = None,
    permission: Annotated[
        str, typer.Option(help="read, or read+report (may also store reports into it).")
    ] = "read",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime such as 7d, 12h, 30m (default: until revoked).")
    ] = None,
    patient: Annotated[
        str | None, typer.Option("--patient", help="Grant this patient's studies instead.")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option(help="Issuer of the --patient id (often the sending hospital).")
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Grant a study (or with --patient, a patient's studies) of --from to --to."""
    with _grants(home) as (grants, log):
        try:
            if study_uid is not None and patient is not None:
                raise VnaError("give a STUDY_UID or --patient, not both")
            now = time.time()
            grant = grants.add(
                grantor=grantor,
                grantee=grantee,
                created_by=cli_user(),
                study_uid=study_uid,
                patient_id=patient,
                issuer=issuer,
                permission=permission,
                expires_at=None if expires is None else now + parse_duration(expires),
                now=now,
            )
        except VnaError as exc:
            log.append(
                AuditEvent(
                    "grant-added",
                    "C",
                    4,
                    cli_user(),
                    grantor,
                    study_uid=study_uid,
                    patient=_patient(patient, issuer),
                    detail={"grantee": grantee, "refused": str(exc)},
                )
            )
            raise
        log.append(
            AuditEvent(
                "grant-added",
                "C",
                0,
                cli_user(),
                grantor,
                study_uid=grant.study_uid,
                patient=_patient(grant.patient_id, grant.issuer),
                detail={
                    "grant": str(grant.id),
                    "grantee": grant.grantee,
                    "level": grant.level,
                    "permission": grant.permission.value,
                    **({"expires_at": str(grant.to_json()["expires_at"])} if expires else {}),
                },
            )
        )
    _print(grant, as_json)


@grant_app.command("revoke")
def grant_revoke(
    grant_id: Annotated[int, typer.Argument(help="Grant id (see `vna grant list`).")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a grant from now on (it stays listed, marked revoked)."""
    with _grants(home) as (grants, log):
        try:
            grant = grants.revoke(grant_id, by=cli_user())
        except VnaError as exc:
            log.append(
                AuditEvent(
                    "grant-revoked",
                    "D",
                    4,
                    cli_user(),
                    detail={"grant": str(grant_id), "refused": str(exc)},
                )
            )
            raise
        log.append(
            AuditEvent(
                "grant-revoked",
                "D",
                0,
                cli_user(),
                grant.grantor,
                study_uid=grant.study_uid,
                patient=_patient(grant.patient_id, grant.issuer),
                detail={"grant": str(grant.id), "grantee": grant.grantee},
            )
        )
    _print(grant, as_json)


@grant_app.command("list")
def grant_list(
    institution: Annotated[
        str | None, typer.Option(help="Only grants this institution gave or received.")
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every grant (revoked and expired ones too, marked so)."""
    with _grants(home) as (grants, _log):
        found = grants.list(institution=institution)
    now = time.time()
    if as_json:
        out.print_json(json.dumps([g.to_json(now) for g in found]))
        return
    table = Table("id", "from", "to", "study / patient", "permission", "expires", "state")
    for grant in found:
        doc = grant.to_json(now)
        state = "active" if doc["active"] else ("revoked" if grant.revoked_at else "expired")
        target = grant.study_uid or f"{grant.patient_id} ({grant.issuer})"
        table.add_row(
            str(grant.id),
            grant.grantor,
            grant.grantee,
            target,
            grant.permission.value,
            str(doc["expires_at"] or "-"),
            state,
        )
    out.print(table)
