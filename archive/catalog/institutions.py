"""Institutions and the AE titles registered to them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import (
    and_,
    delete,
    select,
    update,
)
from sqlalchemy.engine import Connection

from archive.catalog.database import Database
from archive.catalog.schema import institution_aes, institutions
from security.api import Conflict, InvalidInput, NotFound

__all__ = [
    "Institution",
    "Institutions",
    "institution_id",
    "institution_names",
]


@dataclass(frozen=True, slots=True)
class Institution:
    id: int
    name: str
    ae_titles: tuple[tuple[str, str | None, int | None], ...]


def institution_id(conn: Connection, name: str) -> int | None:
    """The id of the institution named ``name``, or None: read on ``conn``, so that a
    caller's transaction (sharing's grants) sees what it wrote itself."""
    found = conn.execute(select(institutions.c.id).where(institutions.c.name == name)).first()
    return None if found is None else int(found.id)


def institution_names(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """Institution id -> name for ``ids`` (unknown ids are absent), read on ``conn``."""
    wanted = sorted(set(ids))
    names: dict[int, str] = {}
    for start in range(0, len(wanted), 500):  # SQLite limits a statement's parameters
        chunk = wanted[start : start + 500]
        rows = conn.execute(
            select(institutions.c.id, institutions.c.name).where(institutions.c.id.in_(chunk))
        )
        names.update((int(row.id), str(row.name)) for row in rows)
    return names


class Institutions(Database):
    """The institutions and their AE titles."""

    def add_institution(
        self,
        name: str,
        ae_title: str | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> Institution:
        """Create the institution if new and register ``ae_title`` to it (idempotent)."""
        name = name.strip()
        if not name:
            raise InvalidInput("an institution needs a name")
        if name.lower().startswith("share:"):
            # the institution claim of share-link tokens (sharing/links.py)
            raise InvalidInput("institution names starting with 'share:' are reserved")
        if ae_title is not None:
            # DICOM pads AE titles with spaces; leading/trailing ones are not significant
            ae_title = ae_title.strip()
        if ae_title is not None and not 0 < len(ae_title) <= 16:
            raise InvalidInput(f"AE title {ae_title!r} must have 1 to 16 characters")
        with self.write_transaction() as conn:
            row = conn.execute(select(institutions.c.id).where(institutions.c.name == name)).first()
            if row is None:
                created = conn.execute(
                    institutions.insert().values(name=name, created_at=time.time())
                ).inserted_primary_key
                if created is None:
                    raise Conflict(f"institution {name!r} could not be created")
                inst_id = created[0]
            else:
                inst_id = row.id
            if ae_title is not None:
                owner = conn.execute(
                    select(institution_aes.c.institution_id).where(
                        institution_aes.c.ae_title == ae_title
                    )
                ).first()
                if owner is not None and owner.institution_id != inst_id:
                    raise Conflict(f"AE title {ae_title} already belongs to another institution")
                if owner is None:
                    conn.execute(
                        institution_aes.insert().values(
                            ae_title=ae_title, institution_id=inst_id, host=host, port=port
                        )
                    )
                else:
                    conn.execute(
                        update(institution_aes)
                        .where(institution_aes.c.ae_title == ae_title)
                        .values(host=host, port=port)
                    )
        return self.institution(name)

    def institution(self, name: str) -> Institution:
        with self.engine.connect() as conn:
            row = conn.execute(select(institutions).where(institutions.c.name == name)).first()
            if row is None:
                raise NotFound(f"no institution named {name!r}: add it with `vna institution add`")
            aes = conn.execute(
                select(institution_aes.c.ae_title, institution_aes.c.host, institution_aes.c.port)
                .where(institution_aes.c.institution_id == row.id)
                .order_by(institution_aes.c.ae_title)
            ).all()
        return Institution(int(row.id), str(row.name), tuple((a[0], a[1], a[2]) for a in aes))

    def list_institutions(self) -> list[Institution]:
        with self.engine.connect() as conn:
            names = [
                str(r[0])
                for r in conn.execute(select(institutions.c.name).order_by(institutions.c.name))
            ]
        return [self.institution(name) for name in names]

    def institution_for_ae(self, ae_title: str) -> Institution | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(institutions.c.name)
                .join(institution_aes, institution_aes.c.institution_id == institutions.c.id)
                .where(institution_aes.c.ae_title == ae_title.strip())
            ).first()
        return None if row is None else self.institution(str(row.name))

    def ae_map(self) -> dict[str, Institution]:
        return {ae: inst for inst in self.list_institutions() for ae, _, _ in inst.ae_titles}

    def reachable_ae(self, ae_title: str, institution_id: int) -> tuple[str, str, int] | None:
        """``(ae_title, host, port)`` of ``ae_title`` if it is registered to the institution
        with a host and port, else None (read fresh: an AE registered after start counts)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    institution_aes.c.ae_title, institution_aes.c.host, institution_aes.c.port
                ).where(
                    and_(
                        institution_aes.c.ae_title == ae_title,
                        institution_aes.c.institution_id == institution_id,
                        institution_aes.c.host.is_not(None),
                        institution_aes.c.port.is_not(None),
                    )
                )
            ).first()
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]))

    def registered_aes(self) -> list[tuple[str, str | None, int | None]]:
        """Every registered AE title with its host and port, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    institution_aes.c.ae_title, institution_aes.c.host, institution_aes.c.port
                ).order_by(institution_aes.c.ae_title)
            ).all()
        return [(str(r[0]), r[1], r[2]) for r in rows]

    def remove_ae(self, ae_title: str) -> Institution:
        """Unregister an AE title; returns the institution it belonged to."""
        ae_title = ae_title.strip()
        with self.write_transaction() as conn:
            row = conn.execute(
                select(institutions.c.name)
                .join(institution_aes, institution_aes.c.institution_id == institutions.c.id)
                .where(institution_aes.c.ae_title == ae_title)
            ).first()
            if row is None:
                raise NotFound(
                    f"AE title {ae_title!r} is not registered (see `vna institution list`)"
                )
            conn.execute(delete(institution_aes).where(institution_aes.c.ae_title == ae_title))
        return self.institution(str(row.name))
