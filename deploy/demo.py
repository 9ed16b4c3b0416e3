"""Load synthetic studies into a running archive over DICOM, as a modality would, and give
the newcomer a way in: a demo reading user and a share link."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE

from archive.api import open_store
from compose.api import Settings
from deploy.cli_common import cli_user
from deploy.dimse_access import apply_registrations
from query.api import reaches_study
from security.api import AuditEvent, AuditLog, VnaError
from security.identity import UserRegistry
from sharing.api import Action, ShareLinks, parse_duration
from synthetic import StudySpec, generate_studies, generate_study

__all__ = [
    "DEMO_AE",
    "DEMO_INSTITUTION",
    "DEMO_USER",
    "DemoAccess",
    "DemoLoad",
    "demo_access",
    "load_demo",
]

DEMO_AE = "VNADEMO"
DEMO_INSTITUTION = "Demo Hospital"
DEMO_USER = "demo-reader"


@dataclasses.dataclass(frozen=True, slots=True)
class DemoLoad:
    """What :func:`load_demo` sent: instances stored and the studies' UIDs, in order."""

    stored: int
    study_uids: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class DemoAccess:
    """The ways into the demo, printed once.

    ``password`` is None when the demo user existed already: its password was printed when
    it was made and is kept only as a hash, so it cannot be shown again.
    """

    viewer_url: str
    user: str
    password: str | None
    share_url: str

    def lines(self) -> list[str]:
        """What to tell the person who asked for the demo."""
        if self.password is not None:
            sign_in = [
                f"  sign in as: {self.user}",
                f"  password:   {self.password}   (shown only now; `vna user disable "
                f"{self.user}` ends it)",
            ]
        else:
            sign_in = [
                f"  sign in as: {self.user} (made by an earlier demo; its password was shown "
                "then and is not kept, `vna user add` makes another user)",
            ]
        return [
            f"  viewer:     {self.viewer_url}",
            *sign_in,
            f"  share link: {self.share_url}",
            "              (one demo study, no sign-in; the secret after # is shown only now)",
        ]


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Raise a library logger to WARNING for a while: pynetdicom logs two INFO lines per
    C-STORE, which would scroll the progress bar away."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def load_demo(
    settings: Settings,
    studies: int,
    slices: int,
    on_total: Callable[[int], None],
    on_sent: Callable[[], None],
) -> DemoLoad:
    """Send ``studies`` synthetic studies (alternating CT and MR)."""
    if settings.dicom.tls:
        raise VnaError(
            "the demo sends plain DICOM and dicom.tls is on: send studies with a TLS client "
            "(docs/dimse-security.md) or load the demo into a home without TLS"
        )
    store = open_store(settings)
    try:
        # the demo sends from this machine: its AE is bound to loopback like any other
        store.catalog.add_institution(DEMO_INSTITUTION, DEMO_AE, "127.0.0.1")
    finally:
        store.catalog.close()
    apply_registrations(settings)  # Orthanc admits the AE at once, not at the next sync
    specs = []
    for i, spec in enumerate(
        generate_studies(
            studies,
            StudySpec(
                slices=slices,
                patient_id="DEMO0001",
                patient_name="Demo^Patient",
                institution=DEMO_INSTITUTION,
            ),
        )
    ):
        if i % 2:
            spec = dataclasses.replace(spec, modality="MR", rows=256, columns=256)
        specs.append(spec)
    on_total(sum(s.series * s.slices for s in specs))
    ae = AE(ae_title=DEMO_AE)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    stored = 0
    study_uids: dict[str, None] = {}
    with _quiet("pynetdicom"):
        assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_aet)
        if not assoc.is_established:
            raise VnaError(
                f"could not associate with {settings.dicom_aet} on port "
                f"{settings.dicom_port}: is the archive running?"
            )
        try:
            for spec in specs:
                for ds in generate_study(spec):
                    status = assoc.send_c_store(ds)
                    if not status or status.Status != 0:
                        raise VnaError(
                            f"the archive refused a demo instance (status "
                            f"{getattr(status, 'Status', 'none')}); see its log"
                        )
                    stored += 1
                    study_uids.setdefault(str(ds.StudyInstanceUID))
                    on_sent()
        finally:
            assoc.release()
    return DemoLoad(stored, tuple(study_uids))


def demo_access(settings: Settings, study_uid: str, *, wait_seconds: float = 60.0) -> DemoAccess:
    """The demo reading user (made once, with a generated password) and a new share link
    to ``study_uid``; both audited as ``vna`` changes are.

    Waits up to ``wait_seconds`` for the indexer to list the study, so the link and the
    viewer show it when the lines are printed.
    """
    store = open_store(settings)
    try:
        engine = store.catalog.engine
        log = AuditLog.open(engine, settings.keys_dir, settings.audit_syslog)
        users = UserRegistry(
            engine,
            max_failures=settings.gateway.login_max_failures,
            lockout_seconds=settings.gateway.login_lockout_seconds,
        )
        password: str | None = None
        if users.get(DEMO_USER) is None:
            password = secrets.token_urlsafe(15)  # 120 bits; printed once, stored as scrypt
            users.add(DEMO_USER, DEMO_INSTITUTION, password, "dicom.read")
            log.append(
                AuditEvent(
                    "security-alert",
                    "C",
                    0,
                    cli_user(),
                    DEMO_INSTITUTION,
                    detail={"user": DEMO_USER, "change": "user added (demo)"},
                )
            )
        deadline = time.monotonic() + wait_seconds
        while not reaches_study(engine, study_uid, DEMO_INSTITUTION):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        new = ShareLinks(engine, pin_attempts=settings.gateway.share_pin_attempts).create(
            study_uid,
            DEMO_INSTITUTION,
            cli_user(),
            expires_in=parse_duration(settings.gateway.share_default_expiry),
            actions=[Action.VIEW, Action.DOWNLOAD],
        )
        log.append(
            AuditEvent(
                "share-created",
                "C",
                0,
                cli_user(),
                DEMO_INSTITUTION,
                study_uid=study_uid,
                detail={"link": new.link.id},
            )
        )
    finally:
        store.catalog.close()
    public = settings.gateway.resolved_public_url(settings)
    return DemoAccess(f"{public}/viewer/", DEMO_USER, password, new.url(public))
