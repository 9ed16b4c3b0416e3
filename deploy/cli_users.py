"""``vna user ...``: people who log in to the embedded issuer (the viewer's sign-in).

Passwords are read from a file (``--password-file``, first line) or prompted for without
echo, stored only as a scrypt hash, and never printed.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from archive.api import BlobStore
from deploy.cli_common import HomeOption, JsonOption, cli_user, open_home, out
from security.api import AuditEvent, AuditLog, InvalidInput
from security.identity import MIN_PASSWORD_LENGTH, User, UserRegistry

__all__ = ["user_app"]

user_app = typer.Typer(
    help="People who sign in to the embedded issuer (e.g. in the viewer).", no_args_is_help=True
)


def _open(home: Path | None) -> tuple[UserRegistry, AuditLog, BlobStore]:
    settings, store = open_home(home)
    gateway = settings.gateway
    users = UserRegistry(
        store.catalog.engine,
        max_failures=gateway.login_max_failures,
        lockout_seconds=gateway.login_lockout_seconds,
    )
    return (
        users,
        AuditLog.open(store.catalog.engine, settings.keys_dir, settings.audit_syslog),
        store,
    )


def _read_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidInput(f"cannot read {password_file}: {exc.strerror}") from exc
        return lines[0] if lines else ""
    first = getpass.getpass(f"password for the new user (at least {MIN_PASSWORD_LENGTH}): ")
    if getpass.getpass("again: ") != first:
        raise InvalidInput("the two passwords differ")
    return first


def _as_dict(user: User) -> dict[str, object]:
    return {
        "name": user.name,
        "institution": user.institution,
        "scopes": " ".join(sorted(user.scopes)),
        "disabled": user.disabled,
        "locked_until": user.locked_until or None,
        "last_login": user.last_login,
    }


def _record(log: AuditLog, action: str, user: User, what: str) -> None:
    # an administrative change of who may sign in (no password in the record)
    log.append(
        AuditEvent(
            "security-alert",
            action,
            0,
            cli_user(),
            user.institution,
            detail={"user": user.name, "change": what},
        )
    )


@user_app.command("add")
def user_add(
    name: str,
    institution: Annotated[str, typer.Option(help="Institution the user acts for.")],
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="Read the password from this file's first line."),
    ] = None,
    scopes: Annotated[
        str, typer.Option(help="Space-separated scopes the user may be granted.")
    ] = "dicom.read",
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user (the password is prompted for without echo unless --password-file)."""
    users, log, store = _open(home)
    inst = store.catalog.institution(institution)  # NotFound names `vna institution add`
    password = _read_password(password_file)
    user = users.add(name, inst.name, password, scopes)
    _record(log, "C", user, "user added")
    if as_json:
        out.print_json(json.dumps(_as_dict(user)))
        return
    out.print(f"user {user.name!r} ({user.institution}): {' '.join(sorted(user.scopes))}")


@user_app.command("list")
def user_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Users, their institution, scopes and state (never their passwords)."""
    users, _log, _store = _open(home)
    found = users.list()
    if as_json:
        out.print_json(json.dumps([_as_dict(u) for u in found]))
        return
    table = Table("user", "institution", "scopes", "state")
    for user in found:
        state = "disabled" if user.disabled else "active"
        table.add_row(user.name, user.institution, " ".join(sorted(user.scopes)), state)
    out.print(table)


@user_app.command("disable")
def user_disable(name: str, home: HomeOption = None) -> None:
    """Disable a user: no more sign-ins, and their refresh tokens stop working."""
    users, log, _store = _open(home)
    user = users.disable(name)
    _record(log, "U", user, "user disabled")
    out.print(f"user {user.name!r} disabled")
