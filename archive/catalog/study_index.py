"""The study index (patients, studies, series, instances), provenance and claims."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection

from archive.catalog.database import Database
from archive.catalog.schema import (
    attachments,
    index_queue,
    instance_claims,
    instance_sources,
    instances,
    institutions,
    patients,
    pending_attachments,
    pending_sources,
    series,
    studies,
    study_claims,
)
from archive.names import folded_groups

__all__ = [
    "InstanceRecord",
    "PendingSource",
    "SourceRecord",
    "StudyIndex",
    "StudyOwner",
    "owned_patient",
    "patient_identities",
    "pn_fold_values",
    "study_owner",
]


def pn_fold_values(column: str, value: str | None) -> dict[str, str]:
    """The folded-group columns of the PN ``column`` for a stored ``value`` (none for an
    absent value, so the upsert keeps what is known); an absent group folds to ``""``,
    which overwrites a group the previous name had."""
    groups = folded_groups(value)
    if groups is None:
        return {}
    return {f"{column}_fold_{kind}": group for kind, group in zip("aip", groups, strict=True)}


class _ClaimRefused(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """The attributes the index keeps for an instance (taken from Orthanc's parse)."""

    sop_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    issuer: str
    patient_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician: str | None = None
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    series_date: str | None = None
    sop_class_uid: str | None = None
    instance_number: int | None = None
    number_of_frames: int | None = None
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    transfer_syntax: str | None = None
    orthanc_id: str | None = None
    attachment_uuid: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    sop_uid: str
    institution_id: int
    via: str
    sender: str
    remote_address: str | None = None


@dataclass(frozen=True, slots=True)
class PendingSource:
    """A sender announced for an instance about to be stored over HTTP (STOW-RS)."""

    orthanc_id: str
    institution_id: int
    institution: str
    via: str
    sender: str
    remote_address: str | None
    announced_at: float


@dataclass(frozen=True, slots=True)
class StudyOwner:
    """Who owns an indexed study, and whose study it is."""

    owner_id: int | None  # the institution whose instance was recorded first, if any
    patient_pk: int


def study_owner(conn: Connection, study_uid: str) -> StudyOwner | None:
    """The owner and patient of the indexed study ``study_uid`` (None: not indexed), read
    on ``conn`` so that it joins the caller's transaction (sharing's grants)."""
    row = conn.execute(
        select(studies.c.owner_institution_id, studies.c.patient_pk).where(
            studies.c.study_uid == study_uid
        )
    ).first()
    if row is None:
        return None
    owner = row.owner_institution_id
    return StudyOwner(None if owner is None else int(owner), int(row.patient_pk))


def owned_patient(conn: Connection, patient_id: str, issuer: str, owner_id: int) -> int | None:
    """The key of the patient ``patient_id`` of ``issuer`` if the institution ``owner_id``
    owns at least one of their studies, else None."""
    found = conn.execute(
        select(patients.c.pk)
        .join(studies, studies.c.patient_pk == patients.c.pk)
        .where(
            patients.c.patient_id == patient_id,
            patients.c.issuer == issuer,
            studies.c.owner_institution_id == owner_id,
        )
        .limit(1)
    ).first()
    return None if found is None else int(found.pk)


def patient_identities(conn: Connection, pks: Iterable[int]) -> dict[int, tuple[str, str]]:
    """Patient key -> ``(patient_id, issuer)`` for ``pks`` (unknown keys are absent)."""
    wanted = sorted(set(pks))
    found: dict[int, tuple[str, str]] = {}
    for start in range(0, len(wanted), 500):  # SQLite limits a statement's parameters
        chunk = wanted[start : start + 500]
        rows = conn.execute(
            select(patients.c.pk, patients.c.patient_id, patients.c.issuer).where(
                patients.c.pk.in_(chunk)
            )
        )
        found.update((int(r.pk), (str(r.patient_id), str(r.issuer))) for r in rows)
    return found


# the common admission, as plain SQL (see Catalog.claim): a study claimed for its indexed
# owner, else the sender; a SOP instance filed under its indexed study, else this one
_CLAIM_STUDY = (
    "INSERT INTO study_claims (study_uid, institution_id, claimed_at) "
    "VALUES (CAST(:study AS VARCHAR(64)), COALESCE((SELECT owner_institution_id FROM studies "
    "WHERE study_uid = CAST(:study AS VARCHAR(64))), CAST(:inst AS INTEGER)), :now) "
    "ON CONFLICT DO NOTHING"
)
_CLAIMED_STUDY = "SELECT institution_id FROM study_claims WHERE study_uid = :study"
_CLAIM_INSTANCE = (
    "INSERT INTO instance_claims (sop_uid, study_uid, institution_id, claimed_at) "
    "VALUES (CAST(:sop AS VARCHAR(64)), COALESCE((SELECT study_uid FROM instances "
    "WHERE sop_uid = CAST(:sop AS VARCHAR(64))), CAST(:study AS VARCHAR(64))), :inst, :now) "
    "ON CONFLICT DO NOTHING"
)
_CLAIMED_INSTANCE = "SELECT study_uid FROM instance_claims WHERE sop_uid = :sop"


class StudyIndex(Database):
    """The study index and where its instances came from."""

    def apply_index_entries(self, done_through: int, steps: list[tuple[str, Any]]) -> None:
        """Apply parsed queue entries in order and drop them from the queue, atomically.

        ``steps`` holds ``("index", (records, sources))``, ``("forget", uuid)`` and
        ``("announced", [PendingSource, ...])`` (announcements consumed) items.
        """
        now = time.time()
        with self.write_transaction(self.index_engine) as conn:
            for kind, payload in steps:
                if kind == "index":
                    records, sources = payload
                    for rec in records:
                        self._index_one(conn, rec, now)
                    for src in sources:
                        self._add_source(conn, src, now)
                elif kind == "announced":
                    # consumed: only this announcement (a newer one is another store)
                    for announced in payload:
                        conn.execute(
                            pending_sources.delete().where(
                                pending_sources.c.orthanc_id == announced.orthanc_id,
                                pending_sources.c.institution_id == announced.institution_id,
                                pending_sources.c.announced_at == announced.announced_at,
                            )
                        )
                else:
                    self._drop_instances(conn, instances.c.attachment_uuid == payload)
            conn.execute(index_queue.delete().where(index_queue.c.seq <= done_through))

    def index_instance(self, rec: InstanceRecord) -> None:
        """Insert or refresh one instance and its patient, study and series rows."""
        self.index_batch([rec], [])

    def record_source(self, src: SourceRecord) -> bool:
        """Record that ``src`` sent an archived instance; False if the instance is unknown."""
        return not self.index_batch([], [src])

    def index_batch(
        self, records: list[InstanceRecord], sources: list[SourceRecord]
    ) -> list[SourceRecord]:
        """Index instances, then record sources, in one transaction.

        The index is derived data (Orthanc can re-supply it after a crash), so it is written
        without waiting for the disk. Returns the sources whose instance is not indexed yet.
        """
        now = time.time()
        unmatched: list[SourceRecord] = []
        with self.write_transaction(self.index_engine) as conn:
            for rec in records:
                self._index_one(conn, rec, now)
            for src in sources:
                if not self._add_source(conn, src, now):
                    unmatched.append(src)
        return unmatched

    @staticmethod
    def _upsert(
        conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any]
    ) -> None:
        """Update the row with ``key`` (NULLs never overwrite known values), else insert it."""
        known = {k: v for k, v in values.items() if v is not None}
        where = [table.c[name] == value for name, value in key.items()]
        if known and conn.execute(update(table).where(*where).values(**known)).rowcount:
            return
        if not known and conn.execute(select(*[table.c[n] for n in key]).where(*where)).first():
            return
        conn.execute(table.insert().values(**key, **values))

    def _index_one(self, conn: Connection, rec: InstanceRecord, now: float) -> None:
        if self._discarded_copy(conn, rec):
            # a re-send of a SOP instance Orthanc already holds: with OverwriteInstances
            # false (deploy/orthanc_config.py) Orthanc keeps the first copy and drops this
            # one, so the index keeps describing the first (transfer syntax, header
            # attributes) and only the re-sender is recorded, as a source
            return
        study = conn.execute(
            select(studies.c.patient_pk).where(studies.c.study_uid == rec.study_uid)
        ).first()
        study_values = {
            "study_date": rec.study_date,
            "study_time": rec.study_time,
            "accession_number": rec.accession_number,
            "study_id": rec.study_id,
            "description": rec.study_description,
            "referring_physician": rec.referring_physician,
            **pn_fold_values("referring_physician", rec.referring_physician),
        }
        patient_values = {
            "patient_name": rec.patient_name,
            **pn_fold_values("patient_name", rec.patient_name),
            "birth_date": rec.birth_date,
            "sex": rec.sex,
        }
        if study is None:
            self._upsert(
                conn,
                patients,
                {"issuer": rec.issuer, "patient_id": rec.patient_id},
                patient_values,
            )
            patient_pk = conn.execute(
                select(patients.c.pk).where(
                    patients.c.issuer == rec.issuer, patients.c.patient_id == rec.patient_id
                )
            ).scalar_one()
            conn.execute(
                studies.insert().values(
                    study_uid=rec.study_uid, patient_pk=patient_pk, created_at=now, **study_values
                )
            )
        else:
            # the study keeps the patient it was first filed under: a re-send from another
            # institution (whose name would be the issuer) must not create a second patient
            if self._same_patient(conn, study.patient_pk, rec):
                self._upsert(conn, patients, {"pk": study.patient_pk}, patient_values)
            self._upsert(conn, studies, {"study_uid": rec.study_uid}, study_values)
        self._upsert(
            conn,
            series,
            {"series_uid": rec.series_uid},
            {
                "study_uid": rec.study_uid,
                "modality": rec.modality,
                "series_number": rec.series_number,
                "description": rec.series_description,
                "series_date": rec.series_date,
            },
        )
        values = {
            "series_uid": rec.series_uid,
            "study_uid": rec.study_uid,
            "sop_class_uid": rec.sop_class_uid,
            "instance_number": rec.instance_number,
            "number_of_frames": rec.number_of_frames,
            "rows": rec.rows,
            "columns": rec.columns,
            "bits_allocated": rec.bits_allocated,
            "transfer_syntax": rec.transfer_syntax,
            "orthanc_id": rec.orthanc_id,
            "attachment_uuid": rec.attachment_uuid,
            "size": rec.size,
        }
        current = conn.execute(
            select(instances.c.sop_uid).where(instances.c.sop_uid == rec.sop_uid)
        ).first()
        if current is None:
            conn.execute(instances.insert().values(sop_uid=rec.sop_uid, created_at=now, **values))
            return
        conn.execute(update(instances).where(instances.c.sop_uid == rec.sop_uid).values(**values))

    @staticmethod
    def _discarded_copy(conn: Connection, rec: InstanceRecord) -> bool:
        """Whether ``rec`` describes a second copy of an indexed SOP instance whose first
        copy is still stored (Orthanc stores the duplicate's file, then removes it)."""
        current = conn.execute(
            select(instances.c.attachment_uuid).where(instances.c.sop_uid == rec.sop_uid)
        ).first()
        if current is None or not current.attachment_uuid:
            return False
        if current.attachment_uuid == rec.attachment_uuid:
            return False
        still_stored = conn.execute(
            select(attachments.c.uuid)
            .where(attachments.c.uuid == current.attachment_uuid)
            .union(
                select(pending_attachments.c.uuid).where(
                    pending_attachments.c.uuid == current.attachment_uuid
                )
            )
        ).first()
        return still_stored is not None

    @staticmethod
    def _same_patient(conn: Connection, patient_pk: int, rec: InstanceRecord) -> bool:
        row = conn.execute(
            select(patients.c.issuer, patients.c.patient_id).where(patients.c.pk == patient_pk)
        ).first()
        return row is not None and (row.issuer, row.patient_id) == (rec.issuer, rec.patient_id)

    def _add_source(self, conn: Connection, src: SourceRecord, now: float) -> bool:
        known = conn.execute(
            select(instances.c.study_uid).where(instances.c.sop_uid == src.sop_uid)
        ).first()
        if known is None:
            return False
        conn.execute(
            update(studies)
            .where(studies.c.study_uid == known.study_uid, studies.c.owner_institution_id.is_(None))
            # the claim decided who owns the study; a study without one (stored before
            # claims existed) belongs to its first recorded sender
            .values(
                owner_institution_id=func.coalesce(
                    select(study_claims.c.institution_id)
                    .where(study_claims.c.study_uid == known.study_uid)
                    .scalar_subquery(),
                    src.institution_id,
                )
            )
        )
        updated = conn.execute(
            update(instance_sources)
            .where(
                instance_sources.c.sop_uid == src.sop_uid,
                instance_sources.c.institution_id == src.institution_id,
                instance_sources.c.via == src.via,
                instance_sources.c.sender == src.sender,
            )
            .values(
                last_received=now,
                times=instance_sources.c.times + 1,
                remote_address=src.remote_address,
            )
        ).rowcount
        if not updated:
            conn.execute(
                instance_sources.insert().values(
                    sop_uid=src.sop_uid,
                    institution_id=src.institution_id,
                    via=src.via,
                    sender=src.sender,
                    remote_address=src.remote_address,
                    first_received=now,
                    last_received=now,
                    times=1,
                )
            )
        return True

    def claim(
        self,
        study_uid: str,
        sop_uid: str,
        institution_id: int,
        may_write: Callable[[Connection, str], bool],
    ) -> str | None:
        """Claim a study and a SOP instance for an institution about to store it.

        The first institution to store an instance of a Study Instance UID owns that UID
        (and a SOP Instance UID is filed under the study it first came with): an insert
        that cannot succeed twice decides, so two senders racing on a new study cannot
        both win, whichever process or protocol they use. Another institution is let in
        only when ``may_write(conn, study_uid)`` says so (a ``read+report`` grant; called
        inside the transaction for a study the institution does not own).

        Returns None when the instance may be stored; ``"study"`` when the study is
        another institution's, ``"instance"`` when the SOP instance is already filed
        under a study the institution may not write. A refusal claims nothing.
        """
        now = time.time()
        # every instance of a study but its first passes here, so the common case (the
        # sender's own study, a new or its own SOP instance) is a few plain statements;
        # anything else is rolled back and decided below, with the grants
        params = {"study": study_uid, "sop": sop_uid, "inst": institution_id, "now": now}
        try:
            with self._hot.write() as run:
                run(_CLAIM_STUDY, params)
                if run(_CLAIMED_STUDY, params).fetchone()[0] == institution_id:
                    run(_CLAIM_INSTANCE, params)
                    if run(_CLAIMED_INSTANCE, params).fetchone()[0] == study_uid:
                        return None
                raise _ClaimRefused("undecided")
        except _ClaimRefused:
            pass
        # a study or instance indexed without a claim (stored over Orthanc's REST API by
        # an operator, re-indexed after a crash) is claimed for what the index says
        indexed_owner = (
            select(studies.c.owner_institution_id)
            .where(studies.c.study_uid == study_uid)
            .scalar_subquery()
        )
        indexed_study = (
            select(instances.c.study_uid).where(instances.c.sop_uid == sop_uid).scalar_subquery()
        )
        try:
            with self.write_transaction() as conn:
                conn.execute(
                    self._insert_ignore(study_claims).values(
                        study_uid=study_uid,
                        institution_id=func.coalesce(indexed_owner, institution_id),
                        claimed_at=now,
                    )
                )
                owner = self._claimed_owner(conn, study_uid)
                if owner != institution_id and not may_write(conn, study_uid):
                    raise _ClaimRefused("study")
                conn.execute(
                    self._insert_ignore(instance_claims).values(
                        sop_uid=sop_uid,
                        study_uid=func.coalesce(indexed_study, study_uid),
                        institution_id=institution_id,
                        claimed_at=now,
                    )
                )
                filed = conn.execute(
                    select(instance_claims.c.study_uid).where(instance_claims.c.sop_uid == sop_uid)
                ).scalar_one()
                if filed != study_uid:
                    filed_owner = self._claimed_owner(conn, filed)
                    if filed_owner != institution_id and not may_write(conn, filed):
                        raise _ClaimRefused("instance")
        except _ClaimRefused as refused:
            return refused.what
        return None

    @staticmethod
    def _claimed_owner(conn: Connection, study_uid: str) -> int | None:
        """The institution a study is claimed for; else its owner in the index, if any."""
        row = conn.execute(
            select(study_claims.c.institution_id).where(study_claims.c.study_uid == study_uid)
        ).first()
        if row is not None:
            return int(row[0])
        owner = conn.execute(
            select(studies.c.owner_institution_id).where(studies.c.study_uid == study_uid)
        ).scalar()
        return None if owner is None else int(owner)

    def announce_source(
        self,
        orthanc_id: str,
        institution_id: int,
        via: str,
        sender: str,
        remote_address: str | None = None,
    ) -> None:
        """Announce who is about to store the instance ``orthanc_id`` over HTTP.

        Call it, and let it commit, before handing the file to Orthanc: the indexer then
        records the source (and the study's owner, when the study is new) for the file,
        and qualifies its patient by the institution. Announcing again refreshes it.
        """
        values = {
            "via": via,
            "sender": sender[:128],
            "remote_address": remote_address,
            "announced_at": time.time(),
        }
        key = {"orthanc_id": orthanc_id, "institution_id": institution_id}
        with self.write_transaction() as conn:
            updated = conn.execute(
                update(pending_sources)
                .where(
                    pending_sources.c.orthanc_id == orthanc_id,
                    pending_sources.c.institution_id == institution_id,
                )
                .values(**values)
            ).rowcount
            if not updated:
                conn.execute(pending_sources.insert().values(**key, **values))

    def withdraw_source(self, orthanc_id: str, institution_id: int) -> None:
        """Drop an announcement whose store failed (Orthanc refused the file)."""
        with self.write_transaction() as conn:
            conn.execute(
                pending_sources.delete().where(
                    pending_sources.c.orthanc_id == orthanc_id,
                    pending_sources.c.institution_id == institution_id,
                )
            )

    def announced_sources(self, orthanc_ids: Iterable[str]) -> dict[str, list[PendingSource]]:
        """The announcements for these instances, oldest first, by Orthanc id."""
        wanted = sorted(set(orthanc_ids))
        found: dict[str, list[PendingSource]] = {}
        if not wanted:
            return found
        query = (
            select(pending_sources, institutions.c.name)
            .join(institutions, institutions.c.id == pending_sources.c.institution_id)
            .where(pending_sources.c.orthanc_id.in_(wanted))
            .order_by(pending_sources.c.announced_at)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                m = row._mapping
                found.setdefault(str(m["orthanc_id"]), []).append(
                    PendingSource(
                        orthanc_id=str(m["orthanc_id"]),
                        institution_id=int(m["institution_id"]),
                        institution=str(m["name"]),
                        via=str(m["via"]),
                        sender=str(m["sender"]),
                        remote_address=m["remote_address"],
                        announced_at=float(m["announced_at"]),
                    )
                )
        return found

    def remove_instance(self, orthanc_id: str) -> None:
        """Drop an instance (by Orthanc id) and any series or study left empty."""
        with self.write_transaction(self.index_engine) as conn:
            self._drop_instances(conn, instances.c.orthanc_id == orthanc_id)

    def forget_attachment(self, attachment_uuid: str) -> None:
        """Drop the index rows of instances stored as ``attachment_uuid`` (it was removed)."""
        with self.write_transaction(self.index_engine) as conn:
            self._drop_instances(conn, instances.c.attachment_uuid == attachment_uuid)

    @staticmethod
    def _drop_instances(conn: Connection, condition: ColumnElement[bool]) -> None:
        rows = conn.execute(
            select(instances.c.sop_uid, instances.c.series_uid, instances.c.study_uid).where(
                condition
            )
        ).all()
        for row in rows:
            conn.execute(instances.delete().where(instances.c.sop_uid == row.sop_uid))
            conn.execute(instance_sources.delete().where(instance_sources.c.sop_uid == row.sop_uid))
            left = conn.execute(
                select(func.count())
                .select_from(instances)
                .where(instances.c.series_uid == row.series_uid)
            ).scalar_one()
            if not left:
                conn.execute(series.delete().where(series.c.series_uid == row.series_uid))
                left = conn.execute(
                    select(func.count())
                    .select_from(series)
                    .where(series.c.study_uid == row.study_uid)
                ).scalar_one()
                if not left:
                    conn.execute(studies.delete().where(studies.c.study_uid == row.study_uid))

    def sources_of(self, sop_uid: str) -> list[tuple[str, str, str]]:
        """(institution name, via, sender) for every source of an instance."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(institutions.c.name, instance_sources.c.via, instance_sources.c.sender)
                .join(institutions, institutions.c.id == instance_sources.c.institution_id)
                .where(instance_sources.c.sop_uid == sop_uid)
                .order_by(instance_sources.c.first_received)
            )
            return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def patients_with_id(self, patient_id: str) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(patients.c.issuer, patients.c.patient_id).where(
                    patients.c.patient_id == patient_id
                )
            )
            return [(str(r[0]), str(r[1])) for r in rows]

    def instance(self, sop_uid: str) -> InstanceRecord | None:
        query = (
            select(instances, series.c.modality, patients.c.patient_id, patients.c.issuer)
            .join(series, series.c.series_uid == instances.c.series_uid)
            .join(studies, studies.c.study_uid == instances.c.study_uid)
            .join(patients, patients.c.pk == studies.c.patient_pk)
            .where(instances.c.sop_uid == sop_uid)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        m = row._mapping
        return InstanceRecord(
            sop_uid=m["sop_uid"],
            series_uid=m["series_uid"],
            study_uid=m["study_uid"],
            patient_id=m["patient_id"],
            issuer=m["issuer"],
            modality=m["modality"],
            sop_class_uid=m["sop_class_uid"],
            instance_number=m["instance_number"],
            transfer_syntax=m["transfer_syntax"],
            orthanc_id=m["orthanc_id"],
            attachment_uuid=m["attachment_uuid"],
            size=m["size"],
        )

    def indexed_orthanc_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {
                str(r[0])
                for r in conn.execute(
                    select(instances.c.orthanc_id).where(instances.c.orthanc_id.is_not(None))
                )
            }
