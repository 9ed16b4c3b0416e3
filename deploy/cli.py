"""``vna``: run and operate the archive.

Every command takes ``--home DIR`` (or ``VNA_HOME``); settings come from ``<home>/vna.toml``
and ``VNA_*`` variables. Errors print one sentence that says what to do and exit with 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from archive.api import BlobStore, open_store, orthanc_attachment_uuids
from compose.api import Settings, load_settings
from deploy import supervisor
from deploy.cli_common import HomeOption, JsonOption, cli_user, err, open_home, out
from deploy.cli_grants import grant_app
from deploy.cli_shares import share_app
from deploy.cli_users import user_app
from deploy.dimse_access import apply_registrations
from security.api import (
    AuditEvent,
    AuditLog,
    VnaError,
    dicom_xml,
    export_client,
    exposed,
    fhir_audit_event,
    issue_client,
    restrict_umask,
)
from security.identity import ClientRegistry

app = typer.Typer(
    help="Regional imaging archive: run and operate it.", no_args_is_help=True, add_completion=False
)
keys_app = typer.Typer(help="Key-encryption keys.", no_args_is_help=True)
institution_app = typer.Typer(help="Institutions and their DICOM AE titles.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(institution_app, name="institution")
client_app = typer.Typer(
    help="OAuth2 clients (institution systems) of the embedded issuer.", no_args_is_help=True
)
app.add_typer(client_app, name="client")
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(grant_app, name="grant")
app.add_typer(share_app, name="share")
app.add_typer(user_app, name="user")

console = err


def _settings(home: Path | None) -> Settings:
    return load_settings(home)


def _store(home: Path | None) -> BlobStore:
    return open_home(home)[1]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command()
def up(
    home: HomeOption = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    offer_demo: Annotated[
        bool, typer.Option("--offer-demo", help="On an empty archive, offer to load demo studies.")
    ] = False,
) -> None:
    """Start the archive (Orthanc with the archive plugin) and supervise it."""
    settings = _settings(home)
    if detach:
        pid = supervisor.start_detached(settings)
        out.print(f"VNA archive is up (supervisor pid {pid})")
        for line in supervisor.endpoints(settings).lines():
            out.print("  " + line, soft_wrap=True)
        out.print(f"  logs: {settings.home / 'log'}   stop with: vna down --home {settings.home}")
        return
    # what preparing the home reports (schema upgrades, recovery) goes to stderr, or to the
    # detached supervisor's log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s vna %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # archive.migrations sums it up
    raise typer.Exit(
        supervisor.serve(settings, on_ready=(lambda: _offer_demo(settings)) if offer_demo else None)
    )


def _offer_demo(settings: Settings) -> None:
    """Offer a newcomer some data to look at; never blocks a non-interactive start."""
    store = open_store(settings)
    try:
        empty = store.catalog.stats().instances == 0
    finally:
        store.catalog.close()
    if not empty:
        return
    if not sys.stdin.isatty():
        out.print("  the archive is empty: `vna demo` loads a few synthetic studies")
        return
    if typer.confirm(
        "The archive is empty. Load 3 synthetic demo studies (CT and MR)?", default=True
    ):
        from deploy.demo import demo_access, load_demo

        with _progress() as progress:
            task = progress.add_task("sending demo studies", total=None)
            loaded = load_demo(
                settings,
                3,
                40,
                lambda total: progress.update(task, total=total),
                lambda: progress.advance(task),
            )
        out.print(f"  demo: stored {loaded.stored} instances from 'Demo Hospital'")
        _echo(demo_access(settings, loaded.study_uids[0]).lines())
        out.print("  Ctrl-C stops the archive")


def _echo(lines: list[str]) -> None:
    # plain stdout: rich would wrap a long URL or password across lines; never a log
    for line in lines:
        typer.echo(line)


@app.command()
def down(home: HomeOption = None) -> None:
    """Stop the archive running for this home."""
    settings = _settings(home)
    if supervisor.stop(settings):
        out.print(f"stopped the archive in {settings.home}")
    else:
        out.print(f"no archive runs in {settings.home}")


@app.command()
def status(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show whether the archive runs and where it listens (exit 3 when stopped)."""
    settings = _settings(home)
    state = supervisor.status(settings)
    if as_json:
        out.print_json(json.dumps(state))
    else:
        word = "running" if state["running"] else "stopped"
        out.print(
            f"archive in {state['home']}: {word}"
            + (f" (pid {state['pid']})" if state["pid"] else "")
        )
        if state["running"]:
            out.print(f"  Orthanc ready: {state['orthanc_ready']}")
            for line in supervisor.endpoints(settings).lines():
                out.print("  " + line, soft_wrap=True)
        for line in cast(list[str], state["exposed"]):
            out.print(f"  [red]EXPOSED[/red] {line}")
    if not state["running"]:
        raise typer.Exit(3)


@app.command()
def stats(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Instances, logical and stored bytes, dedup and compression ratios."""
    store = _store(home)
    s = store.catalog.stats()
    data: dict[str, Any] = {
        "instances": s.instances,
        "studies": s.studies,
        "attachments": s.attachments,
        "logical_bytes": s.logical_bytes,
        "unique_bytes": s.unique_bytes,
        "stored_bytes": s.stored_bytes,
        "blobs": s.blobs,
        "unreferenced_blobs": s.unreferenced_blobs,
        "pending": s.pending,
        "index_backlog": store.catalog.index_backlog(),
        "dedup_ratio": round(s.dedup_ratio, 3),
        "compression_ratio": round(s.compression_ratio, 3),
        "total_ratio": round(s.total_ratio, 3),
        "keys": store.catalog.kek_usage(),
    }
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(show_header=False)
    for key, value in data.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)


@app.command()
def fsck(
    home: HomeOption = None,
    attachments: Annotated[
        bool,
        typer.Option(
            "--attachments", help="Also reassemble every attachment and check its digest."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Verify every blob and reference; exit 1 and name what is damaged."""
    settings = _settings(home)
    store = _store(home)
    total = store.catalog.stats().blobs
    with _progress() as progress:
        task = progress.add_task("verifying blobs", total=total)
        report = store.check(lambda n: progress.advance(task, n), attachments=attachments)
    if supervisor.running_pid(settings) is None:
        referenced = orthanc_attachment_uuids(settings.home / "orthanc" / "index" / "index")
        if referenced is not None:
            ours = store.catalog.attachment_uuids()
            report.missing_attachments = sorted(referenced - ours)
            report.orphan_attachments = sorted(ours - referenced)
    # files and directories under the home that group or others may use
    exposed_paths = [item.describe() for item in exposed(settings.home)]
    ok = report.ok and not exposed_paths
    data = {
        "ok": ok,
        "blobs_checked": report.blobs_checked,
        "bytes_checked": report.bytes_checked,
        "damaged_blobs": [{"blob": b, "error": e} for b, e in report.damaged_blobs],
        "refcount_errors": [
            {"blob": b, "recorded": r, "actual": a} for b, r, a in report.refcount_errors
        ],
        "dangling_parts": [{"attachment": u, "blob": b} for u, b in report.dangling_parts],
        "orphan_payloads": report.orphan_payloads,
        "missing_attachments": report.missing_attachments,
        "orphan_attachments": report.orphan_attachments,
        "damaged_attachments": [
            {"attachment": u, "error": e} for u, e in report.damaged_attachments
        ],
        "exposed_paths": exposed_paths,
    }
    if as_json:
        out.print_json(json.dumps(data))
    else:
        for blob, error in report.damaged_blobs:
            out.print(f"[red]DAMAGED blob {blob}[/red]: {error}")
        for blob, recorded, actual in report.refcount_errors:
            out.print(f"[red]REFCOUNT blob {blob}[/red]: recorded {recorded}, actual {actual}")
        for uuid, blob in report.dangling_parts:
            out.print(f"[red]MISSING blob {blob}[/red] referenced by attachment {uuid}")
        for key in report.orphan_payloads:
            out.print(
                f"[yellow]ORPHAN payload {key}[/yellow] (no catalog row; `vna gc` removes it)"
            )
        for uuid in report.missing_attachments:
            out.print(f"[red]MISSING attachment {uuid}[/red] (Orthanc references it)")
        for uuid in report.orphan_attachments:
            out.print(f"[yellow]ORPHAN attachment {uuid}[/yellow] (Orthanc does not know it)")
        for uuid, error in report.damaged_attachments:
            out.print(f"[red]DAMAGED attachment {uuid}[/red]: {error}")
        for line in exposed_paths:
            out.print(f"[red]EXPOSED[/red] {line} (`vna up` or chmod go= makes it private)")
        verdict = "[green]clean[/green]" if ok else "[red]DAMAGE FOUND[/red]"
        out.print(
            f"fsck: {report.blobs_checked} blobs, {report.bytes_checked:,} bytes checked: {verdict}"
        )
    if not ok:
        raise typer.Exit(1)


@app.command()
def gc(
    home: HomeOption = None,
    grace: Annotated[
        float | None,
        typer.Option(help="Seconds a blob must have been unreferenced [storage.gc_grace_seconds]."),
    ] = None,
) -> None:
    """Delete blobs nothing has referenced for the grace period, and orphan payloads."""
    store = _store(home)
    with _progress() as progress:
        task = progress.add_task("collecting", total=None)
        removed = store.collect(grace, lambda n: progress.advance(task, n))
    cutoff = time.time() - (store.settings.gc_grace_seconds if grace is None else grace)
    orphans = store.remove_orphan_payloads(older_than=cutoff)
    audit_admin(home, "D", "garbage-collected", blobs=str(removed), orphan_payloads=str(orphans))
    out.print(f"gc: removed {removed} unreferenced blobs and {orphans} orphan payloads")


@keys_app.command("rotate")
def keys_rotate(home: HomeOption = None) -> None:
    """Make a new key-encryption key current and re-wrap every data key under it."""
    store = _store(home)
    new_id = store.keys.rotate()
    audit_admin(home, "U", "key-rotated", kek_id=new_id)
    out.print(f"new key-encryption key {new_id} is current; re-wrapping data keys")
    _rewrap(store)


@keys_app.command("rewrap")
def keys_rewrap(home: HomeOption = None) -> None:
    """Resume re-wrapping data keys under the current key (after an interrupted rotate)."""
    _rewrap(_store(home))


def _rewrap(store: BlobStore) -> None:
    usage = store.catalog.kek_usage()
    pending = sum(n for k, n in usage.items() if k != store.keys.current_id)
    with _progress() as progress:
        task = progress.add_task("re-wrapping data keys", total=pending)
        done = store.rewrap_all(lambda n: progress.advance(task, n))
    out.print(f"re-wrapped {done} data keys; all blobs now use key {store.keys.current_id}")


@keys_app.command("list")
def keys_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Key ids, which is current, and how many blobs each wraps (never the keys)."""
    store = _store(home)
    usage = store.catalog.kek_usage()
    rows = [
        {"id": k, "current": k == store.keys.current_id, "blobs": usage.get(k, 0)}
        for k in store.keys.key_ids()
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    for row in rows:
        out.print(f"{row['id']}  blobs={row['blobs']}" + ("  (current)" if row["current"] else ""))


@institution_app.command("add")
def institution_add(
    name: str,
    ae: Annotated[list[str] | None, typer.Option("--ae", help="AE title (repeatable).")] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address the AE connects from (checked on every association) and C-MOVE target."
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port for C-MOVE to this AE.")] = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="Issue the institution's DICOM TLS client certificate."),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Register an institution and its AE titles (idempotent; a running archive applies it
    at once)."""
    settings = _settings(home)
    store = _store(home)
    inst = store.catalog.add_institution(name)
    for title in ae or []:
        inst = store.catalog.add_institution(name, title, host, port)
    aes = ", ".join(a for a, _, _ in inst.ae_titles) or "no AE title"
    detail = {"institution": inst.name, "ae_titles": aes}
    if ae and host:
        detail["host"] = host
    if tls:
        issue_client(settings.home / "tls", inst.name)
        detail["tls_client_certificate"] = "issued"
    audit_admin(home, "C", "institution-added", **detail)
    out.print(f"institution {inst.name!r} (id {inst.id}): {aes}")
    if ae and host is None and settings.dicom.check_host:
        console.print(
            "[yellow]no --host: the archive refuses these AE titles on every DICOM service "
            "until they are registered with the address they connect from[/yellow]"
        )
    if tls:
        out.print(
            f"DICOM TLS client certificate issued; export it for the hospital with "
            f"`vna institution cert {inst.name!r} --out DIR`",
            soft_wrap=True,
        )
    _apply(settings)


@institution_app.command("remove-ae")
def institution_remove_ae(ae: str, home: HomeOption = None) -> None:
    """Unregister an AE title (a running archive refuses it at once)."""
    settings = _settings(home)
    inst = _store(home).catalog.remove_ae(ae)
    audit_admin(home, "D", "ae-removed", institution=inst.name, ae_title=ae.strip())
    out.print(f"AE title {ae.strip()} removed from {inst.name!r}")
    _apply(settings)


@institution_app.command("cert")
def institution_cert(
    name: str,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the files to.")],
    home: HomeOption = None,
) -> None:
    """Export an institution's DICOM TLS client certificate, its private key and the
    archive's CA certificate (files 0600) for the hospital's DICOM nodes."""
    settings = _settings(home)
    inst = _store(home).catalog.institution(name)
    files = export_client(settings.home / "tls", inst.name, out_dir)
    audit_admin(home, "R", "tls-client-certificate-exported", institution=inst.name)
    # paths whole on one line each (scripts read them), never the key's content
    out.print(f"certificate: {files.certificate}", soft_wrap=True, markup=False)
    out.print(f"private key: {files.private_key}", soft_wrap=True, markup=False)
    out.print(f"archive CA:  {files.ca}", soft_wrap=True, markup=False)
    out.print(
        f"e.g. storescu +tls {files.private_key} {files.certificate} +cf {files.ca} "
        f"HOST {settings.dicom_port} FILE",
        soft_wrap=True,
        markup=False,
    )
    console.print("the private key is a secret: hand it to the hospital securely")


def _apply(settings: Settings) -> None:
    """Make a running archive take the catalog's AE registrations now."""
    if supervisor.running_pid(settings) is None:
        return
    if not apply_registrations(settings):
        console.print(
            "[yellow]the running archive did not answer: it applies the change within a "
            "few seconds[/yellow]"
        )


@institution_app.command("list")
def institution_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Registered institutions and AE titles."""
    store = _store(home)
    rows = [
        {
            "id": i.id,
            "name": i.name,
            "ae_titles": [{"ae": a, "host": h, "port": p} for a, h, p in i.ae_titles],
        }
        for i in store.catalog.list_institutions()
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "institution", "AE titles")
    for inst in store.catalog.list_institutions():
        aes = ", ".join(
            ae + (f" ({host}:{port})" if host else "") for ae, host, port in inst.ae_titles
        )
        table.add_row(str(inst.id), inst.name, aes)
    out.print(table)


@client_app.command("add")
def client_add(
    name: str,
    scopes: Annotated[str, typer.Option(help='Space-separated, e.g. "dicom.read dicom.write".')],
    institution: Annotated[
        str | None, typer.Option(help="Institution the client acts for (not for --public).")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="A browser app: no secret, code + PKCE flow.")
    ] = False,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option("--redirect-uri", help="Registered redirect URI (repeatable; --public)."),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a client: confidential (client_credentials; id and secret printed ONCE)
    or --public (a browser app signing people in; its client id is NAME)."""
    store = _store(home)
    registry = ClientRegistry(store.catalog.engine)
    if public:
        if institution is not None:
            raise VnaError("a public client acts for each user's institution: drop --institution")
        made = registry.add_public(name, redirect_uri or [], scopes)
        audit_admin(
            home,
            "C",
            "public-client-added",
            client_id=made.client_id,
            redirect_uris=" ".join(made.redirect_uris),
            scopes=" ".join(sorted(made.scopes)),
        )
        data: dict[str, Any] = {
            "client_id": made.client_id,
            "public": True,
            "redirect_uris": list(made.redirect_uris),
            "scopes": " ".join(sorted(made.scopes)),
        }
        if as_json:
            out.print_json(json.dumps(data))
            return
        for key, value in data.items():
            out.print(f"{key}: {value}")
        return
    if institution is None or redirect_uri:
        raise VnaError("a confidential client needs --institution (and no --redirect-uri)")
    inst = store.catalog.institution(institution)  # NotFound names `vna institution add`
    client, secret = registry.add(name, inst.name, scopes)
    audit_admin(
        home,
        "C",
        "client-added",
        client_id=client.client_id,
        institution=client.institution,
        scopes=" ".join(sorted(client.scopes)),
    )
    data = {
        "client_id": client.client_id,
        "client_secret": secret,
        "institution": client.institution,
        "scopes": " ".join(sorted(client.scopes)),
    }
    if as_json:
        out.print_json(json.dumps(data))
        return
    for key, value in data.items():
        out.print(f"{key}: {value}")
    out.print("[yellow]the secret is shown only now: store it in the client's configuration[/]")


def _audit_log(home: Path | None) -> AuditLog:
    settings = _settings(home)
    store = _store(home)
    return AuditLog.open(store.catalog.engine, settings.keys_dir, settings.audit_syslog)


def audit_admin(home: Path | None, action: str, change: str, **detail: str) -> None:
    """Record one administrative change made from the command line (never a secret)."""
    _audit_log(home).append(
        AuditEvent("security-config", action, 0, cli_user(), detail={"change": change, **detail})
    )


@audit_app.command("verify")
def audit_verify(home: HomeOption = None) -> None:
    """Check every audit record and link; exit 1 and name the first broken one."""
    log = _audit_log(home)
    broken = log.verify()
    if broken is not None:
        out.print(f"[red]audit log BROKEN at record {broken.seq}[/red]: {broken.reason}")
        raise typer.Exit(1)
    out.print("audit log intact")
    if log.anchor is not None and not log.anchor.exists() and next(log.records(), None):
        # a home from before the anchor (it starts with the next record), or a deleted file
        out.print(f"[yellow]no anchor file {log.anchor}[/yellow]: a cut tail cannot be seen")


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="dicom (PS3.15 XML) or fhir.")] = "dicom",
    home: HomeOption = None,
) -> None:
    """Print every record as DICOM audit messages or FHIR AuditEvents (itself audited)."""
    if fmt not in ("dicom", "fhir"):
        raise VnaError("--format is dicom or fhir")
    log = _audit_log(home)
    log.append(AuditEvent("audit-log-used", "R", 0, cli_user(), detail={"format": fmt}))
    records = list(log.records())
    if fmt == "fhir":
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": fhir_audit_event(seq, e)} for seq, e in records],
        }
        sys.stdout.write(json.dumps(bundle, indent=1) + "\n")
    else:
        sys.stdout.write("<AuditMessages>\n")
        for _seq, event in records:
            sys.stdout.write(dicom_xml(event) + "\n")
        sys.stdout.write("</AuditMessages>\n")


@app.command()
def demo(
    home: HomeOption = None,
    studies: Annotated[int, typer.Option(help="How many studies.")] = 3,
    slices: Annotated[int, typer.Option(help="Slices per series.")] = 40,
) -> None:
    """Load a few synthetic CT/MR studies into the running archive over DICOM, then print
    how to see them: the viewer, a demo reading user (its generated password once, when it
    is made) and a new share link to the first demo study."""
    from deploy.demo import demo_access, load_demo

    settings = _settings(home)
    if supervisor.running_pid(settings) is None:
        raise VnaError(f"the archive in {settings.home} is not running: `vna up --detach` first")
    with _progress() as progress:
        task = progress.add_task("sending demo studies", total=None)
        loaded = load_demo(
            settings,
            studies,
            slices,
            lambda total: progress.update(task, total=total),
            lambda: progress.advance(task),
        )
    out.print(
        f"demo: stored {loaded.stored} instances from institution 'Demo Hospital' (AE VNADEMO)"
    )
    if loaded.study_uids:
        _echo(demo_access(settings, loaded.study_uids[0]).lines())


def main() -> None:
    restrict_umask()  # whatever a command creates under the home is the owner's only
    try:
        app()
    except VnaError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
