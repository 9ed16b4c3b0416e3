"""Study and SOP instance claims: the first institution to store a study owns its UID.

Claims are taken when an instance is admitted (C-STORE filter, STOW-RS check), before the
indexer records the study, so two senders of the same new study cannot both win. Studies
and instances already indexed with an owner are claimed for that owner here.

Revision ID: 0002_dimse_own
Revises: 0001
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

revision: str = "0002_dimse_own"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "study_claims",
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("study_uid"),
    )
    op.create_table(
        "instance_claims",
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("sop_uid"),
    )
    op.execute(
        "INSERT INTO study_claims (study_uid, institution_id, claimed_at) "
        "SELECT study_uid, owner_institution_id, created_at FROM studies "
        "WHERE owner_institution_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO instance_claims (sop_uid, study_uid, institution_id, claimed_at) "
        "SELECT i.sop_uid, i.study_uid, s.owner_institution_id, i.created_at "
        "FROM instances i JOIN studies s ON s.study_uid = i.study_uid "
        "WHERE s.owner_institution_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("instance_claims")
    op.drop_table("study_claims")
