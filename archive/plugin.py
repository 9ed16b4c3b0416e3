"""Wire the archive into Orthanc: storage area, C-STORE filter, indexing callbacks, and
the C-FIND / C-MOVE answers limited to the calling AE's institution.

``register(sdk, settings)`` takes the ``orthanc`` module as an argument, so everything here
is plain Python that tests can drive with a small fake SDK. Exceptions are translated once,
in :func:`_guard`: Orthanc sees a failed call and its log gets a sentence a person can act on.
"""

from __future__ import annotations

import base64
import collections
import functools
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote
from urllib.request import Request, urlopen

import pydicom

from archive import migrations
from archive.blobstore import CONTENT_DICOM, CONTENT_DICOM_UNTIL_PIXEL_DATA, BlobStore
from archive.catalog import Catalog, Institution, Sender, SourceRecord
from archive.credentials import credentials
from archive.headers import instance_record
from archive.scp import (
    LEVELS,
    FindHandler,
    FindRequest,
    MoveHandler,
    MoveItem,
    MoveRequest,
    StoreHandler,
    StoreRequest,
    modality_entries,
    modality_entry,
    peer_address,
)
from archive.settings import ArchiveSettings
from archive.split import neutral_preamble, survey
from security.api import (
    AuditEvent,
    AuditLog,
    EventAction,
    EventOutcome,
    EventType,
    Forbidden,
    IntegrityError,
    InvalidInput,
    KeyRing,
    NotFound,
    StorageFull,
    VnaError,
)
from tiering.api import FileStore, Journal

__all__ = ["ArchivePlugin", "MoveDestinationUnknown", "register", "instance_record"]

logger = logging.getLogger(__name__)

# DIMSE status for a C-STORE from an AE title no institution owns, or into a study that is
# another institution's (PS3.7 C.5: Refused: Not Authorized)
STATUS_NOT_AUTHORIZED = 0x0124
# C-STORE statuses for incomplete data sets (PS3.4 B.2.3): native Pixel Data shorter than
# its image (Error: Data Set does not match SOP Class), a length past the end (Cannot
# understand)
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
_DICOM_FILES = (CONTENT_DICOM, CONTENT_DICOM_UNTIL_PIXEL_DATA)
_AE_CACHE_SECONDS = 2.0
# how often each Orthanc process re-reads the registered AEs into its modality list (a
# `vna` command also asks at once; this covers other processes and nodes)
_MODALITY_SYNC_SECONDS = 2.0
_SENDER_FRESH_SECONDS = 60.0

F = TypeVar("F", bound=Callable[..., Any])

_QUERY_RETRIEVE_LEVEL = 0x00080052
# the C-MOVE levels as Orthanc passes them to the move callback -> PS3.4's names
_MOVE_LEVELS = {"INSTANCE": "IMAGE"}
_SPECIFIC_CHARACTER_SET = 0x00080005
# the event and action of a refused request's audit record, as of an accepted one
_REFUSED_RECORD = {
    "C-FIND": (EventType.QUERY, EventAction.EXECUTE),
    "C-MOVE": (EventType.INSTANCES_TRANSFERRED, EventAction.READ),
    "C-STORE": (EventType.INSTANCES_TRANSFERRED, EventAction.CREATE),
}
# how long a C-MOVE waits for Orthanc's store job between two looks at it
_JOB_POLL_SECONDS = 0.1


class MoveDestinationUnknown(Forbidden):
    """A C-MOVE names a destination that is not an AE of the caller's institution with a
    host and port (PS3.4 C.4.2.1.4: 0xA801, Move Destination Unknown)."""


class OrthancLogHandler(logging.Handler):
    """Send Python log records to Orthanc's log."""

    def __init__(self, sdk: Any) -> None:
        super().__init__()
        self.sdk = sdk

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self.sdk.LogError(message)
        elif record.levelno >= logging.WARNING:
            self.sdk.LogWarning(message)
        else:
            self.sdk.LogInfo(message)


def _guard(what: str) -> Callable[[F], F]:
    """Log a failing callback once, with the reason, and let Orthanc see the failure."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except StorageFull as exc:
                logger.error("%s failed, storage full: %s", what, exc)
                raise
            except IntegrityError as exc:
                logger.error("%s failed, DATA INTEGRITY: %s; run `vna fsck`", what, exc)
                raise
            except VnaError as exc:
                logger.error("%s failed: %s", what, exc)
                raise
            except Exception:
                logger.exception("%s failed unexpectedly", what)
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


class ArchivePlugin:
    """The archive as Orthanc sees it; one per Orthanc process."""

    def __init__(
        self,
        sdk: Any,
        settings: ArchiveSettings,
        store: BlobStore,
        *,
        find: FindHandler | None = None,
        move: MoveHandler | None = None,
        admit: StoreHandler | None = None,
        audit: AuditLog | None = None,
        rest: Any = None,
    ) -> None:
        self.sdk = sdk
        # Orthanc's REST API for calls made while handling a DIMSE request (C-MOVE's
        # C-STORE job): LoopbackRest in Orthanc, the SDK by default (see LoopbackRest)
        self.rest = sdk if rest is None else rest
        self.settings = settings
        self.store = store
        self.catalog = store.catalog
        self.find_handler = find
        self.move_handler = move
        self.store_handler = admit
        self.audit_log = audit
        self._ae_map: dict[str, Institution] = {}
        self._ae_loaded = 0.0
        self._ae_lock = threading.Lock()
        # calling AE of the C-STORE each Orthanc thread is handling (see filter_cstore)
        self._senders: dict[int, tuple[Sender, float]] = {}
        # Orthanc's modality list as this process last wrote it (see sync_modalities)
        self._modalities: dict[str, Any] = {}
        self._modalities_lock = threading.Lock()
        self._stopping = threading.Event()

    # -- storage area --------------------------------------------------------------------

    @_guard("storing an attachment")
    def create(self, uuid: str, content_type: Any, data: bytes) -> None:
        sender = self._senders.pop(threading.get_ident(), None)
        if sender is not None and time.monotonic() - sender[1] > _SENDER_FRESH_SECONDS:
            sender = None
        kind = int(content_type)
        if kind in _DICOM_FILES:
            # CVE-2019-11687: no stored file starts with an executable's header, so every
            # way out (REST, C-MOVE, WADO, ZIP) serves a harmless preamble; the file and
            # its "until pixel data" copy change alike and still share their header blob
            data = neutral_preamble(data)
        self.store.put(uuid, kind, data, sender[0] if sender else None)

    @_guard("reading an attachment")
    def read(self, uuid: str, content_type: Any) -> bytes:
        return self.store.get(uuid)

    @_guard("removing an attachment")
    def remove(self, uuid: str, content_type: Any) -> None:
        self.store.remove(uuid)

    # -- DIMSE admission and provenance --------------------------------------------------

    def institution_for_ae(self, ae_title: str) -> Institution | None:
        now = time.monotonic()
        key = ae_title.strip()
        with self._ae_lock:
            # an AE missing from a recent copy is looked up again: one registered a moment
            # ago (`vna institution add`) is known at once, as the move destination check,
            # which reads fresh, already knows it (a run saw the two disagree)
            if now - self._ae_loaded > _AE_CACHE_SECONDS or key not in self._ae_map:
                self._ae_map = self.catalog.ae_map()
                self._ae_loaded = now
            return self._ae_map.get(key)

    @_guard("filtering an incoming C-STORE")
    def filter_cstore(self, received: Any) -> int:
        ae_title = (received.GetInstanceRemoteAet() or "").strip()
        institution = self.institution_for_ae(ae_title)
        if institution is None:
            logger.warning(
                "C-STORE refused: calling AE %r is not registered to an institution "
                "(register it with `vna institution add NAME --ae %s`)",
                ae_title,
                ae_title,
            )
            return STATUS_NOT_AUTHORIZED
        status = self._admit(received, ae_title, institution)
        if status:
            return status
        # Orthanc writes the file on this same thread right after this filter: the storage
        # area picks the sender up there (every C-STORE, new or a re-send, is recorded)
        self._senders[threading.get_ident()] = (
            Sender(institution.id, institution.name, ae_title),
            time.monotonic(),
        )
        return 0

    def _admit(self, received: Any, ae_title: str, institution: Institution) -> int:
        """The refusal status of a C-STORE from a registered AE, or 0 to store it.

        Orthanc's filter can set only the status, not an Error Comment (PS3.7 C.4): what
        was wrong and what to do goes to the log and the audit record.
        """
        checked = survey(received.GetInstanceData())
        study_uid, sop_uid = checked.study_uid, checked.sop_uid
        incomplete = checked.truncated or checked.short_pixels
        if incomplete:
            logger.warning(
                "C-STORE from %r (%s) refused: incomplete data set, %s (SOP instance %s); "
                "nothing stored: send the complete file",
                ae_title,
                institution.name,
                incomplete,
                sop_uid,
            )
            self._audit_refused(
                "C-STORE", ae_title, institution, {"refused": "incomplete data set"}, study_uid
            )
            return STATUS_CANNOT_UNDERSTAND if checked.truncated else STATUS_DATASET_MISMATCH
        if self.store_handler is None:
            return 0
        if not (study_uid and sop_uid):  # a file the walker cannot read (deflated)
            tags = json.loads(received.GetInstanceSimplifiedJson())
            study_uid = str(tags.get("StudyInstanceUID") or "").strip()
            sop_uid = str(tags.get("SOPInstanceUID") or "").strip()
            if not (study_uid and sop_uid):
                return STATUS_CANNOT_UNDERSTAND
        refused = self.store_handler(
            self.catalog, StoreRequest(ae_title, institution, study_uid, sop_uid)
        )
        if refused is None:
            return 0
        logger.warning(
            "C-STORE from %r (%s) refused with 0x0124: %s; nothing stored. The first "
            "institution to store a study owns its Study Instance UID: send your images "
            "under a Study Instance UID (and SOP Instance UIDs) of your own, or ask the "
            "owner for a read+report grant",
            ae_title,
            institution.name,
            f"study {study_uid} belongs to another institution"
            if refused == "study"
            else f"SOP instance {sop_uid} is filed under another institution's study",
        )
        detail = {"refused": f"{refused} owned by another"}
        self._audit_refused("C-STORE", ae_title, institution, detail, study_uid)
        return STATUS_NOT_AUTHORIZED

    def _audit_refused(
        self,
        operation: str,
        ae_title: str,
        institution: Institution | None,
        detail: dict[str, str],
        study_uid: str | None = None,
    ) -> None:
        """A refused C-FIND, C-MOVE or C-STORE (``operation``): a minor failure with the
        event and action its accepted records have (a C-STORE's as the indexer's)."""
        event, action = _REFUSED_RECORD[operation]
        self._audit(
            event=event,
            action=action,
            outcome=EventOutcome.MINOR_FAILURE,
            ae_title=ae_title,
            institution=institution.name if institution else None,
            study_uid=study_uid,
            detail=detail,
        )

    # -- C-FIND and C-MOVE, limited to what the caller's institution may see --------------

    def _audit(
        self,
        *,
        event: EventType,
        action: EventAction,
        outcome: EventOutcome,
        ae_title: str,
        institution: str | None,
        study_uid: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        """Append one DIMSE record; a failing audit log fails the DIMSE request (no silent
        gaps)."""
        if self.audit_log is None:
            return
        self.audit_log.append(
            AuditEvent(
                event=event.value,
                action=action.value,
                outcome=outcome.value,
                user=ae_title,
                institution=institution,
                study_uid=study_uid,
                detail={"via": "dimse", **(detail or {})},
            )
        )

    def _caller(self, ae_title: str, what: str, detail: dict[str, str]) -> Institution:
        """The calling AE's institution; an AE no institution owns is refused (and audited).

        Orthanc already refuses AEs missing from its DicomModalities; this also covers an
        AE removed from the catalog since Orthanc started.
        """
        institution = self.institution_for_ae(ae_title)
        if institution is None:
            logger.warning(
                "%s refused: calling AE %r is not registered to an institution "
                "(register it with `vna institution add NAME --ae %s`)",
                what,
                ae_title,
                ae_title,
            )
            self._audit_refused(what, ae_title, None, {**detail, "reason": "unknown AE"})
            raise Forbidden(f"calling AE {ae_title!r} belongs to no institution")
        return institution

    @_guard("answering a C-FIND")
    def on_find(self, answers: Any, query: Any, issuer_aet: str, called_aet: str) -> None:
        """Orthanc's C-FIND callback: match the catalog for the caller's institution only."""
        assert self.find_handler is not None
        ae_title = (issuer_aet or "").strip()
        level = ""
        keys: list[tuple[int, str]] = []
        for i in range(query.GetFindQuerySize()):
            tag = (int(query.GetFindQueryTagGroup(i)) << 16) | int(query.GetFindQueryTagElement(i))
            value = str(query.GetFindQueryValue(i))
            if tag == _QUERY_RETRIEVE_LEVEL:
                level = value.strip().upper()
            elif tag != _SPECIFIC_CHARACTER_SET:
                keys.append((tag, value))
        detail = {"level": level, "called_ae": (called_aet or "").strip()}
        institution = self._caller(ae_title, "C-FIND", detail)
        if level not in LEVELS:
            self._audit_refused("C-FIND", ae_title, institution, detail)
            raise InvalidInput(f"C-FIND with Query/Retrieve Level {level!r}")
        answer = self.find_handler(
            self.catalog, FindRequest(ae_title, institution.name, level, tuple(keys))
        )
        for dataset in answer.datasets:
            answers.FindAddAnswer(_encode_answer(dataset))
        if not answer.complete:
            answers.FindMarkIncomplete()
        study_keys = [v for t, v in keys if t == 0x0020000D and v.strip()]
        self._audit(
            event=EventType.QUERY,
            action=EventAction.EXECUTE,
            outcome=EventOutcome.SUCCESS,
            ae_title=ae_title,
            institution=institution.name,
            study_uid=study_keys[0].strip() if len(study_keys) == 1 else None,
            detail={**detail, "matches": str(len(answer.datasets))},
        )

    def destination(self, ae_title: str, institution: Institution) -> tuple[str, str, int] | None:
        """The move destination ``ae_title`` if it is an AE of ``institution`` with a host
        and port (read fresh: an AE registered after Orthanc started counts)."""
        return self.catalog.reachable_ae(ae_title, institution.id)

    @_guard("answering a C-MOVE")
    def on_move(self, **request: Any) -> None:
        """Orthanc's C-MOVE callback (python plugin 4.0: one call per C-MOVE, keywords)."""
        assert self.move_handler is not None
        ae_title = str(request.get("OriginatorAET") or "").strip()
        target = str(request.get("TargetAET") or "").strip()
        raw_level = str(request.get("Level") or "").strip().upper()
        # Orthanc names the IMAGE level of PS3.4 C.4.2 by its own resource type, INSTANCE
        level = _MOVE_LEVELS.get(raw_level, raw_level)
        detail = {"level": level, "destination": target}
        institution = self._caller(ae_title, "C-MOVE", detail)
        if level not in LEVELS:
            logger.warning(
                "C-MOVE from %r refused: Query/Retrieve Level %r is not one of %s",
                ae_title,
                raw_level,
                "/".join(LEVELS),
            )
            self._audit_refused(
                "C-MOVE", ae_title, institution, {**detail, "reason": "unknown level"}
            )
            raise InvalidInput(f"C-MOVE with Query/Retrieve Level {raw_level!r}")
        destination = self.destination(target, institution)
        if destination is None:
            logger.warning(
                "C-MOVE from %r refused: destination %r is not an AE of %s with a host and "
                "port (register it with `vna institution add %r --ae %s --host H --port P`)",
                ae_title,
                target,
                institution.name,
                institution.name,
                target,
            )
            self._audit_refused(
                "C-MOVE", ae_title, institution, {**detail, "reason": "move destination unknown"}
            )
            raise MoveDestinationUnknown(f"C-MOVE destination {target!r} is unknown")
        items = list(
            self.move_handler(
                self.catalog,
                MoveRequest(
                    ae_title,
                    institution.name,
                    level,
                    patient_ids=_values(request.get("PatientID")),
                    accession_numbers=_values(request.get("AccessionNumber")),
                    study_uids=_values(request.get("StudyInstanceUID")),
                    series_uids=_values(request.get("SeriesInstanceUID")),
                    sop_uids=_values(request.get("SOPInstanceUID")),
                ),
            )
        )
        per_study = collections.Counter(item.study_uid for item in items)

        def record(outcome: EventOutcome) -> None:
            for study_uid, count in per_study.items():
                self._audit(
                    event=EventType.INSTANCES_TRANSFERRED,
                    action=EventAction.READ,
                    outcome=outcome,
                    ae_title=ae_title,
                    institution=institution.name,
                    study_uid=study_uid,
                    detail={**detail, "instances": str(count)},
                )

        try:
            if items:
                self._store_to(destination, items, ae_title, request.get("OriginatorID"))
        except Exception:
            record(EventOutcome.SERIOUS_FAILURE)
            raise
        if not items:
            # nothing reachable matched: the same answer as for a study that does not exist.
            # Python plugin 4.0 reports each C-MOVE as one sub-operation, so returning here
            # would tell the workstation "1 completed" with nothing sent; failing it gives
            # "0 completed, 1 failed" (0xB000), the nearest to PS3.4's "0 sub-operations"
            requested = _values(request.get("StudyInstanceUID"))
            self._audit(
                event=EventType.INSTANCES_TRANSFERRED,
                action=EventAction.READ,
                outcome=EventOutcome.SUCCESS,
                ae_title=ae_title,
                institution=institution.name,
                study_uid=requested[0] if len(requested) == 1 else None,
                detail={**detail, "instances": "0"},
            )
            raise NotFound(
                f"C-MOVE from {ae_title!r} at level {level} matched no instance that "
                f"{institution.name} reaches; nothing sent"
            )
        record(EventOutcome.SUCCESS)

    def _store_to(
        self,
        destination: tuple[str, str, int],
        items: list[MoveItem],
        originator_ae: str,
        originator_id: Any,
    ) -> None:
        """C-STORE ``items`` to ``destination`` through Orthanc's own SCU, and wait.

        The job runs asynchronously and is polled: python plugin 4.0 holds the GIL during
        SDK calls, and Orthanc's job thread must call back into the storage area (Python)
        to read each file, so a synchronous store from here would deadlock; the calls go
        through ``self.rest`` (loopback HTTP in Orthanc) for the reason LoopbackRest gives.
        """
        ae_title, host, port = destination
        name = quote(ae_title, safe="")
        # the catalog is the authority on destinations: a destination registered on another
        # node since this one's last modality sync is entered now
        entry = modality_entry(
            ae_title,
            peer_address(host) or host,
            port,
            self.settings.dicom_allow_get,
            tls=self.settings.dicom.tls,
        )
        self.rest.RestApiPut(f"/modalities/{name}", json.dumps(entry))
        body: dict[str, Any] = {
            "Resources": [item.orthanc_id for item in items],
            "Asynchronous": True,
            "MoveOriginatorAet": originator_ae,
        }
        if originator_id not in (None, ""):
            body["MoveOriginatorID"] = int(originator_id)
        job = json.loads(self.rest.RestApiPost(f"/modalities/{name}/store", json.dumps(body)))
        job_id = str(job["ID"])
        while True:
            state = str(json.loads(self.rest.RestApiGet(f"/jobs/{job_id}")).get("State"))
            if state == "Success":
                return
            if state not in ("Pending", "Running", "Retry"):
                raise VnaError(f"C-STORE of {len(items)} instances to {ae_title} ended {state}")
            time.sleep(_JOB_POLL_SECONDS)

    # -- Orthanc's modality list, kept in step with the catalog ----------------------------

    def sync_modalities(self, rest: Any = None) -> dict[str, list[str]]:
        """Make Orthanc's DICOM modality list the catalog's registered AEs, through its REST
        API (``PUT``/``DELETE /modalities/{ae}``), so that a registration, change or removal
        counts for every DIMSE service without a restart.

        Orthanc checks the calling AE (and, with ``dicom.check_host``, its address) against
        this list before any plugin callback runs. Idempotent: entries this process already
        wrote are not written again; anything not registered is removed. ``rest``: the
        SDK (default) or, from the plugin's own threads, :class:`LoopbackRest`.
        """
        rest = self.sdk if rest is None else rest
        security = self.settings.dicom
        with self._modalities_lock:
            desired = modality_entries(
                self.catalog.registered_aes(),
                allow_get=self.settings.dicom_allow_get,
                check_host=security.check_host,
                tls=security.tls,
            )
            listed = {str(name) for name in json.loads(rest.RestApiGet("/modalities"))}
            removed = sorted(listed - desired.keys())
            for name in removed:
                rest.RestApiDelete(f"/modalities/{quote(name, safe='')}")
            changed = sorted(
                name
                for name, entry in desired.items()
                if name not in listed or self._modalities.get(name) != entry
            )
            for name in changed:
                rest.RestApiPut(f"/modalities/{quote(name, safe='')}", json.dumps(desired[name]))
            self._modalities = desired
        if removed or changed:
            logger.info(
                "DICOM modalities now as registered: added or changed %s, removed %s",
                ", ".join(changed) or "none",
                ", ".join(removed) or "none",
            )
        return {"changed": changed, "removed": removed}

    def _keep_modalities_in_step(self) -> None:
        rest = LoopbackRest.for_settings(self.settings)
        # first at once: the list Orthanc read at start may be older than the catalog
        while True:
            try:
                self.sync_modalities(rest)
            except Exception:
                logger.exception("updating Orthanc's DICOM modalities from the catalog failed")
            if self._stopping.wait(_MODALITY_SYNC_SECONDS):
                return

    @_guard("updating DICOM modalities on request")
    def on_sync_request(self, output: Any, uri: str, **request: Any) -> None:
        """``POST /vna/modalities/sync`` (Orthanc's loopback REST, with its credentials):
        what ``vna institution add|remove-ae`` calls so that a change counts at once."""
        if request.get("method") != "POST":
            output.SendMethodNotAllowed("POST")
            return
        output.AnswerBuffer(json.dumps(self.sync_modalities(self.rest)), "application/json")

    @_guard("handling an Orthanc change")
    def on_change(self, change_type: Any, level: Any, resource_id: str) -> None:
        sdk = self.sdk
        if change_type == sdk.ChangeType.ORTHANC_STARTED:
            threading.Thread(
                target=self.reindex_missing,
                args=(LoopbackRest.for_settings(self.settings),),
                name="vna-reindex",
                daemon=True,
            ).start()
            threading.Thread(
                target=self._keep_modalities_in_step, name="vna-modalities", daemon=True
            ).start()
        elif change_type == sdk.ChangeType.ORTHANC_STOPPED:
            self._stopping.set()
            self.store.stop_digester()

    def attachment_uuid(self, instance_id: str, rest: Any = None) -> str | None:
        rest = self.sdk if rest is None else rest
        info = json.loads(rest.RestApiGet(f"/instances/{instance_id}/attachments/dicom/info"))
        uuid = info.get("Uuid")
        return str(uuid) if uuid else None

    def reindex_missing(self, rest: Any = None) -> int:
        """Index instances Orthanc holds but the catalog lacks (after a crash); resumable.
        ``rest``: the SDK (default) or, from the plugin's own thread, :class:`LoopbackRest`."""
        rest = self.sdk if rest is None else rest
        try:
            # what is still queued will be indexed by the indexer process: wait for it
            deadline = time.monotonic() + 600
            while self.catalog.index_backlog() and time.monotonic() < deadline:
                time.sleep(1.0)
            known = self.catalog.indexed_orthanc_ids()
            missing = [i for i in json.loads(rest.RestApiGet("/instances")) if i not in known]
            for instance_id in missing:
                tags = json.loads(rest.RestApiGet(f"/instances/{instance_id}/simplified-tags"))
                meta = json.loads(rest.RestApiGet(f"/instances/{instance_id}/metadata?expand"))
                ae_title = str(meta.get("RemoteAET", "")).strip()
                institution = self.institution_for_ae(ae_title) if ae_title else None
                record = instance_record(
                    tags,
                    institution.name if institution else "local",
                    orthanc_id=instance_id,
                    attachment_uuid=self.attachment_uuid(instance_id, rest),
                    size=None,
                    transfer_syntax=meta.get("TransferSyntax"),
                )
                source = (
                    [SourceRecord(record.sop_uid, institution.id, "dimse", ae_title)]
                    if institution
                    else []
                )
                self.catalog.index_batch([record], source)
            if missing:
                logger.warning("re-indexed %d instances missing from the catalog", len(missing))
            return len(missing)
        except Exception:
            logger.exception("re-indexing after start failed; it will run again at next start")
            return 0


class LoopbackRest:
    """Orthanc's REST API over its loopback HTTP port, with the SDK's method names, for
    the plugin's own threads (modality sync, re-indexing).

    Python plugin 4.0 holds the GIL during SDK calls, and Orthanc serialises plugin
    service calls under one lock: a thread of ours inside ``sdk.RestApiGet`` (GIL held,
    waiting for that lock) deadlocked with a DICOMweb plugin request holding the lock
    while it read an attachment through this storage area (waiting for the GIL), and
    every later read hung. Over HTTP our thread waits in a socket read, GIL released.
    """

    def __init__(self, port: int, username: str, password: str) -> None:
        self._root = f"http://127.0.0.1:{port}"
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"

    @classmethod
    def for_settings(cls, settings: ArchiveSettings) -> LoopbackRest:
        creds = credentials(settings)
        return cls(settings.orthanc_http_port, creds.username, creds.password)

    def _call(self, method: str, uri: str, body: bytes | None = None) -> bytes:
        request = Request(self._root + uri, data=body, method=method)  # noqa: S310 (http on loopback)
        request.add_header("Authorization", self._authorization)
        with urlopen(request, timeout=60) as answer:  # noqa: S310 (http on loopback)
            return bytes(answer.read())

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802 (the SDK's name)
        return self._call("GET", uri)

    def RestApiPut(self, uri: str, body: str) -> bytes:  # noqa: N802
        return self._call("PUT", uri, body.encode())

    def RestApiPost(self, uri: str, body: str) -> bytes:  # noqa: N802
        return self._call("POST", uri, body.encode())

    def RestApiDelete(self, uri: str) -> None:  # noqa: N802
        self._call("DELETE", uri)


def _values(raw: Any) -> tuple[str, ...]:
    """A DICOM multi-valued string (``a\\b``) as its non-empty values."""
    return tuple(v.strip() for v in str(raw or "").split("\\") if v.strip())


def _encode_answer(dataset: pydicom.Dataset) -> bytes:
    """A C-FIND answer as Orthanc takes it: a Part 10 buffer, explicit VR little endian."""
    answer = pydicom.Dataset()
    answer.update(dataset)
    answer.preamble = b"\0" * 128
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.2.2.1")
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    answer.file_meta = meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, answer, enforce_file_format=True)
    return buffer.getvalue()


def _holds_data(settings: ArchiveSettings, catalog: Catalog) -> bool:
    if catalog.holds_data():
        return True
    # blobs or journal entries without a catalog (the catalog restored apart, or lost)
    return any(
        path.is_file()
        for directory in (settings.blob_dir, settings.home / "journal")
        if directory.is_dir()
        for path in directory.rglob("*")
    )


def open_store(settings: ArchiveSettings) -> BlobStore:
    """Open the blob store of an archive home (keys are created on first use).

    The catalog database is first brought to the schema this version expects
    (:func:`archive.migrations.upgrade`: created, adopted or migrated, once, whichever
    process gets there first).
    """
    migrations.upgrade(settings.resolved_catalog_url)
    catalog = Catalog(settings.resolved_catalog_url, durable=settings.storage.durable_catalog)
    if not KeyRing.present(settings.keys_dir) and _holds_data(settings, catalog):
        catalog.close()
        # new keys would start quietly and leave every stored blob and the audit chain
        # unreadable: a home restored without its keys must get them back first
        raise IntegrityError(
            f"{settings.keys_dir} has no keys, but this home holds stored data: restore "
            f"keys/ from the backup taken with the data (docs/backup.md) before starting; "
            f"new keys could not read anything stored"
        )
    keys = KeyRing.open_or_create(settings.keys_dir, settings.storage.blob_mac)
    hot = FileStore(settings.blob_dir, fsync=settings.storage.fsync)
    journal = Journal(settings.home / "journal", fsync=settings.storage.fsync)
    return BlobStore(catalog, keys, hot, settings.storage, journal)


def register(
    sdk: Any,
    settings: ArchiveSettings,
    *,
    find: FindHandler | None = None,
    move: MoveHandler | None = None,
    admit: StoreHandler | None = None,
    rest: Any = None,
) -> ArchivePlugin:
    """Register the archive's callbacks with Orthanc (``sdk`` is the ``orthanc`` module).

    ``find`` and ``move`` answer C-FIND and C-MOVE from the catalog for the calling AE's
    institution (injected by the composition root, ``compose/orthanc_entry.py``); without
    them Orthanc answers those itself. ``admit`` admits each C-STORE by the ownership
    rule STOW-RS follows; without it any registered AE may store into any study.
    ``rest``: Orthanc's REST API for the C-MOVE handler's calls (:class:`LoopbackRest` in
    Orthanc; the SDK when None).
    """
    root = logging.getLogger()
    if not any(isinstance(h, OrthancLogHandler) for h in root.handlers):
        handler = OrthancLogHandler(sdk)
        handler.setFormatter(logging.Formatter("vna %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    blob_store = open_store(settings)
    audit = (
        AuditLog.open(blob_store.catalog.engine, settings.keys_dir, settings.audit_syslog)
        if find or move or admit
        else None
    )
    plugin = ArchivePlugin(
        sdk, settings, blob_store, find=find, move=move, admit=admit, audit=audit, rest=rest
    )
    if settings.storage.write_behind:
        plugin.store.start_digester()
    sdk.RegisterStorageArea(plugin.create, plugin.read, plugin.remove)
    sdk.RegisterIncomingCStoreInstanceFilter(plugin.filter_cstore)
    sdk.RegisterOnChangeCallback(plugin.on_change)
    sdk.RegisterRestCallback("/vna/modalities/sync", plugin.on_sync_request)
    if find is not None:
        sdk.RegisterFindCallback(plugin.on_find)
    if move is not None:
        sdk.RegisterMoveCallback(plugin.on_move)
    logger.info(
        "archive storage area active: home %s, catalog %s",
        settings.home,
        settings.resolved_catalog_url.split("@")[-1],
    )
    return plugin
