"""failure_throttle: failed share-link openings and client secrets per address, with expiry.

Replaces the gateway's per-process throttle (security/throttle.py), so every gateway
worker sees one count and old addresses are forgotten.

Revision ID: 0004_races
Revises: 0003_bits_allocated
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0004_races"
down_revision: str | None = "0003_bits_allocated"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "failure_throttle",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "address"),
    )
    op.create_index("ix_failure_throttle_expires", "failure_throttle", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_failure_throttle_expires", table_name="failure_throttle")
    op.drop_table("failure_throttle")
