"""Wire the archive into Orthanc: storage area, C-STORE filter, indexing callbacks.

``register(sdk, settings)`` takes the ``orthanc`` module as an argument, so everything here
is plain Python that tests can drive with a small fake SDK. Exceptions are translated once,
in :func:`_guard`: Orthanc sees a failed call and its log gets a sentence a person can act on.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from archive.blobstore import BlobStore
from archive.catalog import Catalog, Institution, Sender, SourceRecord
from archive.headers import instance_record
from archive.settings import Settings
from security.errors import IntegrityError, StorageFull, VnaError
from security.keys import KeyRing
from tiering.fs import FileStore, Journal

__all__ = ["ArchivePlugin", "register", "instance_record"]

logger = logging.getLogger(__name__)

# DIMSE status for a C-STORE from an AE title no institution owns (PS3.7 C.5: Not Authorized)
STATUS_NOT_AUTHORIZED = 0x0124
_AE_CACHE_SECONDS = 2.0
_SENDER_FRESH_SECONDS = 60.0

F = TypeVar("F", bound=Callable[..., Any])


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

    def __init__(self, sdk: Any, settings: Settings, store: BlobStore) -> None:
        self.sdk = sdk
        self.settings = settings
        self.store = store
        self.catalog = store.catalog
        self._ae_map: dict[str, Institution] = {}
        self._ae_loaded = 0.0
        self._ae_lock = threading.Lock()
        # calling AE of the C-STORE each Orthanc thread is handling (see filter_cstore)
        self._senders: dict[int, tuple[Sender, float]] = {}

    # -- storage area --------------------------------------------------------------------

    @_guard("storing an attachment")
    def create(self, uuid: str, content_type: Any, data: bytes) -> None:
        sender = self._senders.pop(threading.get_ident(), None)
        if sender is not None and time.monotonic() - sender[1] > _SENDER_FRESH_SECONDS:
            sender = None
        self.store.put(uuid, int(content_type), data, sender[0] if sender else None)

    @_guard("reading an attachment")
    def read(self, uuid: str, content_type: Any) -> bytes:
        return self.store.get(uuid)

    @_guard("removing an attachment")
    def remove(self, uuid: str, content_type: Any) -> None:
        self.store.remove(uuid)

    # -- DIMSE admission and provenance --------------------------------------------------

    def institution_for_ae(self, ae_title: str) -> Institution | None:
        now = time.monotonic()
        with self._ae_lock:
            if now - self._ae_loaded > _AE_CACHE_SECONDS:
                self._ae_map = self.catalog.ae_map()
                self._ae_loaded = now
            return self._ae_map.get(ae_title.strip())

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
        # Orthanc writes the file on this same thread right after this filter: the storage
        # area picks the sender up there (every C-STORE, new or a re-send, is recorded)
        self._senders[threading.get_ident()] = (
            Sender(institution.id, institution.name, ae_title),
            time.monotonic(),
        )
        return 0

    @_guard("handling an Orthanc change")
    def on_change(self, change_type: Any, level: Any, resource_id: str) -> None:
        sdk = self.sdk
        if change_type == sdk.ChangeType.ORTHANC_STARTED:
            threading.Thread(target=self.reindex_missing, name="vna-reindex", daemon=True).start()
        elif change_type == sdk.ChangeType.ORTHANC_STOPPED:
            self.store.stop_digester()

    def attachment_uuid(self, instance_id: str) -> str | None:
        info = json.loads(self.sdk.RestApiGet(f"/instances/{instance_id}/attachments/dicom/info"))
        uuid = info.get("Uuid")
        return str(uuid) if uuid else None

    def reindex_missing(self) -> int:
        """Index instances Orthanc holds but the catalog lacks (after a crash); resumable."""
        try:
            # what is still queued will be indexed by the indexer process: wait for it
            deadline = time.monotonic() + 600
            while self.catalog.index_backlog() and time.monotonic() < deadline:
                time.sleep(1.0)
            known = self.catalog.indexed_orthanc_ids()
            missing = [i for i in json.loads(self.sdk.RestApiGet("/instances")) if i not in known]
            for instance_id in missing:
                tags = json.loads(self.sdk.RestApiGet(f"/instances/{instance_id}/simplified-tags"))
                meta = json.loads(self.sdk.RestApiGet(f"/instances/{instance_id}/metadata?expand"))
                ae_title = str(meta.get("RemoteAET", "")).strip()
                institution = self.institution_for_ae(ae_title) if ae_title else None
                record = instance_record(
                    tags,
                    institution.name if institution else "local",
                    orthanc_id=instance_id,
                    attachment_uuid=self.attachment_uuid(instance_id),
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


def open_store(settings: Settings) -> BlobStore:
    """Open the blob store of an archive home (keys are created on first use)."""
    catalog = Catalog(settings.resolved_catalog_url, durable=settings.storage.durable_catalog)
    keys = KeyRing.open_or_create(settings.keys_dir)
    hot = FileStore(settings.blob_dir, fsync=settings.storage.fsync)
    journal = Journal(settings.home / "journal", fsync=settings.storage.fsync)
    return BlobStore(catalog, keys, hot, settings.storage, journal)


def register(sdk: Any, settings: Settings) -> ArchivePlugin:
    """Register the archive's callbacks with Orthanc (``sdk`` is the ``orthanc`` module)."""
    root = logging.getLogger()
    if not any(isinstance(h, OrthancLogHandler) for h in root.handlers):
        handler = OrthancLogHandler(sdk)
        handler.setFormatter(logging.Formatter("vna %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    plugin = ArchivePlugin(sdk, settings, open_store(settings))
    if settings.storage.write_behind:
        plugin.store.start_digester()
    sdk.RegisterStorageArea(plugin.create, plugin.read, plugin.remove)
    sdk.RegisterIncomingCStoreInstanceFilter(plugin.filter_cstore)
    sdk.RegisterOnChangeCallback(plugin.on_change)
    logger.info(
        "archive storage area active: home %s, catalog %s",
        settings.home,
        settings.resolved_catalog_url.split("@")[-1],
    )
    return plugin
