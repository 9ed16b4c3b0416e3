"""``vna share create|revoke|list``: share links for patients and referring doctors.

The link printed by ``create`` holds the secret; it is shown once and never stored (only
its hash is). Every change, and every refused one, is an audit record whose user is
``vna-cli:<login>``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from compose.api import Settings
from deploy.cli_common import HomeOption, JsonOption, cli_user, open_home, out
from query.api import reaches_study
from security.api import AuditEvent, AuditLog, NotFound, VnaError
from sharing.api import (
    Action,
    ShareLink,
    ShareLinks,
    parse_duration,
)

__all__ = ["share_app"]

share_app = typer.Typer(
    help="Share links: one study, for a patient or a referring doctor.", no_args_is_help=True
)


@contextmanager
def _links(home: Path | None) -> Iterator[tuple[ShareLinks, AuditLog, Settings, Any]]:
    settings, store = open_home(home)
    try:
        engine = store.catalog.engine
        links = ShareLinks(engine, pin_attempts=settings.gateway.share_pin_attempts)
        log = AuditLog.open(engine, settings.keys_dir, settings.audit_syslog)
        yield links, log, settings, engine
    finally:
        store.catalog.close()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _doc(link: ShareLink) -> dict[str, Any]:
    return {
        "id": link.id,
        "study_uid": link.study_uid,
        "institution": link.institution,
        "actions": sorted(link.actions),
        "expires_at": link.expires_at,
        "max_uses": link.max_uses,
        "uses": link.uses,
        "pin": link.has_pin,
        "state": link.state(),
        "created_by": link.created_by,
        "last_used_at": link.last_used_at,
    }


@share_app.command("create")
def share_create(
    study_uid: str,
    institution: Annotated[str, typer.Option(help="The institution sharing its study.")],
    pin: Annotated[
        str | None, typer.Option(help="A PIN the visitor must type (4-64 characters).")
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(help="Life of the link, e.g. 7d, 12h [gateway.share_default_expiry]."),
    ] = None,
    max_uses: Annotated[int | None, typer.Option(help="How many times it may be opened.")] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Also allow downloading the study (ZIP).")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a link to one study; prints the link (with its secret) ONCE."""
    with _links(home) as (links, log, settings, engine):
        found = reaches_study(engine, study_uid, institution)
        if not found:
            log.append(
                AuditEvent(
                    "share-created",
                    "C",
                    4,
                    cli_user(),
                    institution,
                    study_uid=study_uid,
                    detail={"refused": "no such study for this institution"},
                )
            )
            raise NotFound(
                f"institution {institution!r} has no study {study_uid}: check the UID with "
                "a QIDO search, and the institution name with `vna institution list`"
            )
        actions = [Action.VIEW] + ([Action.DOWNLOAD] if download else [])
        new = links.create(
            study_uid,
            institution,
            cli_user(),
            expires_in=parse_duration(expires or settings.gateway.share_default_expiry),
            actions=actions,
            max_uses=max_uses,
            pin=pin,
        )
        log.append(
            AuditEvent(
                "share-created",
                "C",
                0,
                cli_user(),
                institution,
                study_uid=study_uid,
                detail={"link": new.link.id},
            )
        )
        url = new.url(settings.gateway.resolved_public_url(settings))
    if as_json:
        out.print_json(json.dumps({**_doc(new.link), "url": url}))
        return
    out.print(
        f"share link {new.link.id} for study {study_uid} (until {_when(new.link.expires_at)})"
    )
    out.print(url, soft_wrap=True)
    out.print("[yellow]the link is shown only now: send it to the patient or doctor[/]")


@share_app.command("revoke")
def share_revoke(link_id: str, home: HomeOption = None) -> None:
    """Revoke a link: it stops opening, and the tokens it issued stop working."""
    with _links(home) as (links, log, _settings, _engine):
        try:
            link = links.revoke(link_id, cli_user())
        except VnaError as exc:
            log.append(
                AuditEvent("share-revoked", "D", 4, cli_user(), detail={"refused": str(exc)})
            )
            raise
        log.append(
            AuditEvent(
                "share-revoked",
                "D",
                0,
                cli_user(),
                link.institution,
                study_uid=link.study_uid,
                detail={"link": link.id},
            )
        )
    out.print(f"share link {link.id} revoked")


@share_app.command("list")
def share_list(
    institution: Annotated[str | None, typer.Option(help="Only this institution's links.")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Links with their state, uses and expiry (never their secrets)."""
    with _links(home) as (links, _log, _settings, _engine):
        found = links.list(institution)
    if as_json:
        out.print_json(json.dumps([_doc(link) for link in found]))
        return
    table = Table("id", "study", "institution", "actions", "state", "uses", "expires", "last use")
    for link in found:
        uses = f"{link.uses}/{link.max_uses}" if link.max_uses else str(link.uses)
        table.add_row(
            link.id,
            link.study_uid,
            link.institution,
            " ".join(sorted(link.actions)),
            link.state(),
            uses,
            _when(link.expires_at),
            _when(link.last_used_at),
        )
    out.print(table)
