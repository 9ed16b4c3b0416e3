"""Folded person names: case-insensitive PN matching in every script, on every database.

PatientName (patients) and ReferringPhysicianName (studies) get one column per component
group (alphabetic, ideographic, phonetic) holding it Unicode case-folded and
NFKC-normalised (``archive.names``). QIDO-RS and C-FIND match the folded query against
them, instead of ``lower()`` of the stored name, which SQLite applies to ASCII only (so
``Äneas`` never matched ``ÄNEAS``, nor Greek or Cyrillic names any case). Existing rows are
folded here, in Python, with the function the indexer uses.

Revision ID: 0005_pn_fold
Revises: 0004_races
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

from archive.names import folded_groups

revision: str = "0005_pn_fold"
down_revision: str | None = "0004_races"
branch_labels: str | None = None
depends_on: str | None = None

# table -> (key column, PN column)
_NAMES = {"patients": ("pk", "patient_name"), "studies": ("study_uid", "referring_physician")}
_BATCH = 1000


def _folded(name: str) -> list[str]:
    return [f"{name}_fold_{kind}" for kind in "aip"]


def upgrade() -> None:
    bind = op.get_bind()
    for table_name, (key, name) in _NAMES.items():
        present = {c["name"] for c in sa.inspect(bind).get_columns(table_name)}
        # a catalog adopted without alembic_version may come from create_all of this code
        missing = [c for c in _folded(name) if c not in present]
        if missing:
            with op.batch_alter_table(table_name) as batch:
                for column in missing:
                    batch.add_column(sa.Column(column, sa.String(length=256), nullable=True))
        _backfill(bind, table_name, key, name)


def _backfill(bind: sa.engine.Connection, table_name: str, key: str, name: str) -> None:
    """Fold the names not folded yet, a page of ``_BATCH`` rows at a time in key order
    (keyset pagination): a catalog of millions of rows never sits in memory, no cursor stays
    open across the updates, and each page starts where the last ended on the primary key's
    index instead of scanning the rows already folded again."""
    folds = _folded(name)
    table = sa.table(table_name, sa.column(key), sa.column(name), *map(sa.column, folds))
    page = (
        sa.select(table.c[key], table.c[name])
        .where(table.c[name].is_not(None), table.c[folds[0]].is_(None))
        .order_by(table.c[key])
        .limit(_BATCH)
    )
    update = (
        sa.update(table)
        .where(table.c[key] == sa.bindparam("k"))
        .values({f: sa.bindparam(f"v_{f}") for f in folds})
    )
    rows = bind.execute(page).all()
    while rows:
        params = []
        for row in rows:
            groups = folded_groups(row[1])
            assert groups is not None
            params.append(
                {"k": row[0], **{f"v_{f}": g for f, g in zip(folds, groups, strict=True)}}
            )
        bind.execute(update, params)
        rows = bind.execute(page.where(table.c[key] > rows[-1][0])).all()


def downgrade() -> None:
    for table_name, (_key, name) in _NAMES.items():
        with op.batch_alter_table(table_name) as batch:
            for column in reversed(_folded(name)):
                batch.drop_column(column)
