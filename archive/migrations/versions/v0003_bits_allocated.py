"""instances.bits_allocated: QIDO-RS returns Bits Allocated (0028,0100) at instance level.

PS3.18 Table 10.6.3-5 lists it among the attributes an instance search returns when known.
Instances indexed before this revision keep NULL (not known) until they are indexed again.

Revision ID: 0003_bits_allocated
Revises: 0002_dimse_own
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0003_bits_allocated"
down_revision: str | None = "0002_dimse_own"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # a catalog adopted without alembic_version may come from create_all of this very code
    # (the baseline is then stamped on a table that already has the column)
    if "bits_allocated" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("instances")}:
        return
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("bits_allocated", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("bits_allocated")
