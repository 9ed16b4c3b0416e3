"""Grants: an institution lets another reach one of its studies, or all of one patient's.

Design ("Access, sharing, audit"): the studies a token reaches are those its institution
owns plus those granted to it. A grant is a row in sharing's own table on the catalog's
engine; the access rule (``query.api.reachable``) joins the active ones
(:func:`active_grants`) to the study index. Only the owner of a study
(``studies.owner_institution_id``, read through :func:`archive.api.study_owner`) may
grant it; a patient-level grant covers the grantor's studies of that patient (identified
by patient id *and* issuer, so the same id from another hospital is another patient),
including studies it stores later.

A grant is never deleted: revocation stamps ``revoked_at``/``revoked_by`` so the history
of who could see what stays answerable.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Subquery,
    Table,
    and_,
    or_,
    select,
)
from sqlalchemy.engine import Connection, Engine, Row

from archive.api import (
    institution_id,
    institution_names,
    owned_patient,
    patient_identities,
    study_owner,
)
from security.api import Conflict, Forbidden, InvalidInput, NotFound, write_transaction

__all__ = [
    "Grant",
    "Grants",
    "Permission",
    "active_grant",
    "active_grants",
    "grants",
    "metadata",
    "parse_duration",
]

metadata = MetaData()

grants = Table(
    "grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # foreign keys into the study index by name: the migrations make the tables, and
    # sharing reads the index only through archive.api's functions
    Column("grantor_id", Integer, ForeignKey("institutions.id"), nullable=False),
    Column("grantee_id", Integer, ForeignKey("institutions.id"), nullable=False),
    # no foreign key: a study can be deleted and sent again; the grant then covers it only
    # while the grantor still owns it (checked by the access rule, not by the schema)
    Column("study_uid", String(64)),
    # patients rows are never deleted, so this one can be a foreign key
    Column("patient_pk", Integer, ForeignKey("patients.pk")),
    Column("permission", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    Column("revoked_by", String(256)),
    CheckConstraint("(study_uid IS NULL) <> (patient_pk IS NULL)", name="ck_grants_one_level"),
    CheckConstraint("permission IN ('read', 'read+report')", name="ck_grants_permission"),
    Index("ix_grants_grantee", "grantee_id"),
    Index("ix_grants_grantor", "grantor_id"),
)


class Permission(StrEnum):
    """What a grant allows besides seeing the study."""

    READ = "read"
    READ_REPORT = "read+report"  # also store reports (SR, other results) into the study


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant, as stored (times are POSIX seconds)."""

    id: int
    grantor: str
    grantee: str
    permission: Permission
    created_at: float
    created_by: str
    study_uid: str | None = None
    patient_id: str | None = None
    issuer: str | None = None
    expires_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None

    @property
    def level(self) -> str:
        return "study" if self.study_uid is not None else "patient"

    def active(self, now: float | None = None) -> bool:
        """Neither revoked nor expired at ``now`` (default: the current time)."""
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """The grant for the REST API and ``vna grant ... --json`` (ISO 8601 times)."""
        return {
            "id": self.id,
            "grantor": self.grantor,
            "grantee": self.grantee,
            "level": self.level,
            "study_uid": self.study_uid,
            "patient_id": self.patient_id,
            "issuer": self.issuer,
            "permission": self.permission.value,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "active": self.active(now),
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    match = _DURATION.match(text.lower())
    if match is None or int(match.group(1)) <= 0:
        raise InvalidInput(
            f"duration {text!r} is not understood: use a positive number with s, m, h, d or w "
            "(e.g. 7d)"
        )
    return float(int(match.group(1)) * _UNIT[match.group(2)])


def active_grant(
    grant: Any, now: float, permissions: tuple[Permission, ...] = tuple(Permission)
) -> ColumnElement[bool]:
    """SQL: the grant row ``grant`` (the table or an alias) is in force at ``now``."""
    conditions = [
        grant.c.revoked_at.is_(None),
        or_(grant.c.expires_at.is_(None), grant.c.expires_at > now),
    ]
    if set(permissions) != set(Permission):
        conditions.append(grant.c.permission.in_([p.value for p in permissions]))
    return and_(*conditions)


def active_grants(now: float, permissions: tuple[Permission, ...] = tuple(Permission)) -> Subquery:
    """The grants in force at ``now`` with one of ``permissions``, as a subquery (a fresh
    alias each call) for the access rule and the worklist to join to the study index
    (``query.api.granted``, ``query.api.worklist_entries``)."""
    return select(grants).where(active_grant(grants, now, permissions)).subquery()


def _grants(conn: Connection, *where: ColumnElement[bool]) -> list[Grant]:
    """The grants matching ``where``, oldest first, with the names of both institutions
    and the grant's patient read from the study index (archive.api)."""
    rows = conn.execute(select(grants).where(*where).order_by(grants.c.id)).all()
    names = institution_names(conn, [r.grantor_id for r in rows] + [r.grantee_id for r in rows])
    people = patient_identities(conn, [r.patient_pk for r in rows if r.patient_pk is not None])
    return [_grant(row, names, people) for row in rows]


def _grant(row: Row[Any], names: dict[int, str], people: dict[int, tuple[str, str]]) -> Grant:
    patient_id, issuer = (None, None) if row.patient_pk is None else people[row.patient_pk]
    return Grant(
        id=int(row.id),
        grantor=names[row.grantor_id],
        grantee=names[row.grantee_id],
        permission=Permission(row.permission),
        created_at=float(row.created_at),
        created_by=str(row.created_by),
        study_uid=row.study_uid,
        patient_id=patient_id,
        issuer=issuer,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
    )


class Grants:
    """Add, revoke and list grants in the catalog database.

    Errors are :mod:`security.errors` types with a message meant for a person:
    :class:`NotFound` (unknown institution, study, patient or grant), :class:`Forbidden`
    (not the owner, not the grantor), :class:`InvalidInput` (bad permission, expiry in the
    past, neither or both of study and patient), :class:`Conflict` (already revoked, an
    active grant for the same thing exists).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def _institution_id(conn: Connection, name: str, role: str) -> int:
        found = institution_id(conn, name)
        if found is None:
            raise NotFound(
                f"no institution named {name!r} ({role}): add it with `vna institution add`"
            )
        return found

    def add(
        self,
        *,
        grantor: str,
        grantee: str,
        created_by: str,
        study_uid: str | None = None,
        patient_id: str | None = None,
        issuer: str | None = None,
        permission: Permission | str = Permission.READ,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> Grant:
        """Grant ``grantee`` a study (``study_uid``) or a patient (``patient_id`` + ``issuer``).

        ``grantor`` must own the study, or at least one study of the patient; a study the
        grantor cannot reach at all is reported as not found, like a nonexistent one.
        """
        now = time.time() if now is None else now
        try:
            permission = Permission(permission)
        except ValueError:
            raise InvalidInput(
                f"permission {permission!r} is not one of: read, read+report"
            ) from None
        if (study_uid is None) == (patient_id is None):
            raise InvalidInput("grant either a study (study UID) or a patient (patient id)")
        if patient_id is not None and not issuer:
            raise InvalidInput(
                "a patient-level grant needs the issuer of the patient id "
                "(IssuerOfPatientID, or the name of the institution that sent it)"
            )
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("the expiry is in the past: give a future time or duration")
        if grantor == grantee:
            raise InvalidInput(f"{grantor!r} cannot grant to itself: it reaches its studies")
        with write_transaction(self.engine) as conn:
            grantor_id = self._institution_id(conn, grantor, "grantor")
            grantee_id = self._institution_id(conn, grantee, "grantee")
            patient_pk: int | None = None
            if study_uid is not None:
                self._check_owner(conn, study_uid, grantor, grantor_id, now)
                target = grants.c.study_uid == study_uid
            else:
                patient_pk = self._owned_patient(conn, str(patient_id), str(issuer), grantor_id)
                target = grants.c.patient_pk == patient_pk
            existing = conn.execute(
                select(grants.c.id).where(
                    grants.c.grantor_id == grantor_id,
                    grants.c.grantee_id == grantee_id,
                    target,
                    active_grant(grants, now),
                )
            ).first()
            if existing is not None:
                raise Conflict(
                    f"grant {existing.id} already gives {grantee!r} this "
                    f"{'study' if study_uid else 'patient'}: revoke it first to change it"
                )
            key = conn.execute(
                grants.insert().values(
                    grantor_id=grantor_id,
                    grantee_id=grantee_id,
                    study_uid=study_uid,
                    patient_pk=patient_pk,
                    permission=permission.value,
                    created_at=now,
                    created_by=created_by,
                    expires_at=expires_at,
                )
            ).inserted_primary_key
            if key is None:
                raise Conflict("the grant could not be recorded")
            grant_id = int(key[0])
        return self.get(grant_id)

    @staticmethod
    def _check_owner(
        conn: Connection, study_uid: str, grantor: str, grantor_id: int, now: float
    ) -> None:
        owner = study_owner(conn, study_uid)
        if owner is not None and owner.owner_id == grantor_id:
            return
        # does the grantor reach the study through a grant of its owner to it?
        seen = (
            owner is not None
            and owner.owner_id is not None
            and conn.execute(
                select(grants.c.id).where(
                    grants.c.grantor_id == owner.owner_id,
                    grants.c.grantee_id == grantor_id,
                    active_grant(grants, now),
                    or_(
                        grants.c.study_uid == study_uid,
                        grants.c.patient_pk == owner.patient_pk,
                    ),
                )
            ).first()
        )
        if seen:  # it knows the study through a grant, so saying so discloses nothing
            raise Forbidden(f"only the institution that owns study {study_uid} may grant it")
        raise NotFound(f"no study {study_uid} owned by {grantor!r}")

    @staticmethod
    def _owned_patient(conn: Connection, patient_id: str, issuer: str, grantor_id: int) -> int:
        found = owned_patient(conn, patient_id, issuer, grantor_id)
        if found is None:
            raise NotFound(
                f"the grantor owns no study of patient {patient_id!r} (issuer {issuer!r})"
            )
        return found

    def get(self, grant_id: int) -> Grant:
        with self.engine.connect() as conn:
            found = _grants(conn, grants.c.id == grant_id)
        if not found:
            raise NotFound(f"no grant {grant_id}")
        return found[0]

    def revoke(
        self,
        grant_id: int,
        *,
        by: str,
        institution: str | None = None,
        now: float | None = None,
    ) -> Grant:
        """Revoke a grant from ``now`` on.

        With ``institution`` (the caller's, over the API) only the grantor may revoke; the
        grantee is told it may not, anyone else that there is no such grant.
        """
        now = time.time() if now is None else now
        with write_transaction(self.engine) as conn:
            found = _grants(conn, grants.c.id == grant_id)
            if not found:
                raise NotFound(f"no grant {grant_id}")
            grant = found[0]
            if institution is not None and institution != grant.grantor:
                if institution == grant.grantee:
                    raise Forbidden(
                        f"only {grant.grantor!r}, the grantor, may revoke grant {grant_id}"
                    )
                raise NotFound(f"no grant {grant_id}")
            if grant.revoked_at is not None:
                raise Conflict(f"grant {grant_id} was already revoked by {grant.revoked_by}")
            conn.execute(
                grants.update()
                .where(grants.c.id == grant_id, grants.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=by)
            )
        return self.get(grant_id)

    def list(
        self,
        *,
        grantor: str | None = None,
        grantee: str | None = None,
        institution: str | None = None,
    ) -> list[Grant]:
        """Grants, oldest first, revoked and expired ones included (see ``Grant.active``).

        ``grantor``/``grantee`` filter by one side; ``institution`` keeps those it gave or
        received.
        """
        with self.engine.connect() as conn:
            where: list[ColumnElement[bool]] = []
            for name, column in ((grantor, grants.c.grantor_id), (grantee, grants.c.grantee_id)):
                if name is not None:
                    found = institution_id(conn, name)
                    if found is None:
                        return []
                    where.append(column == found)
            if institution is not None:
                found = institution_id(conn, institution)
                if found is None:
                    return []
                where.append(or_(grants.c.grantor_id == found, grants.c.grantee_id == found))
            return _grants(conn, *where)
