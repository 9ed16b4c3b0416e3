"""Baseline: the schema as the archive created it before migrations existed.

Generated with ``alembic revision --autogenerate`` against an empty database, then
reviewed and regrouped by table: ``archive.migrations`` also uses :func:`create_tables`
to create, in a database made by an older version, the tables no process had created
yet (create_all used to do that on open). Do not edit: later changes are new revisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

"""

from collections.abc import Callable, Collection

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _attachments() -> None:
    op.create_table(
        "attachments",
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )


def _blobs() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("stored_size", sa.Integer(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(length=40), nullable=False),
        sa.Column("refcount", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("unreferenced_since", sa.Float(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_blobs_kek", "blobs", ["kek_id"], unique=False)
    op.create_index("ix_blobs_unreferenced", "blobs", ["unreferenced_since"], unique=False)


def _index_queue() -> None:
    op.create_table(
        "index_queue",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("attachment_uuid", sa.String(length=64), nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=True),
        sa.Column("institution", sa.String(length=128), nullable=True),
        sa.Column("ae_title", sa.String(length=16), nullable=True),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )


def _institutions() -> None:
    op.create_table(
        "institutions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def _patients() -> None:
    op.create_table(
        "patients",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("issuer", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("patient_name", sa.String(length=256), nullable=True),
        sa.Column("birth_date", sa.String(length=16), nullable=True),
        sa.Column("sex", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("issuer", "patient_id", name="uq_patient_issuer_id"),
    )


def _pending_attachments() -> None:
    op.create_table(
        "pending_attachments",
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("journal_size", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(length=40), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )


def _attachment_parts() -> None:
    op.create_table(
        "attachment_parts",
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["uuid"], ["attachments.uuid"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"]),
        sa.PrimaryKeyConstraint("uuid", "seq"),
    )
    op.create_index("ix_parts_blob", "attachment_parts", ["blob_id"], unique=False)


def _instance_sources() -> None:
    op.create_table(
        "instance_sources",
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=128), nullable=False),
        sa.Column("remote_address", sa.String(length=64), nullable=True),
        sa.Column("first_received", sa.Float(), nullable=False),
        sa.Column("last_received", sa.Float(), nullable=False),
        sa.Column("times", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("sop_uid", "institution_id", "via", "sender"),
    )
    op.create_index("ix_sources_institution", "instance_sources", ["institution_id"], unique=False)


def _institution_aes() -> None:
    op.create_table(
        "institution_aes",
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("ae_title"),
    )


def _pending_sources() -> None:
    op.create_table(
        "pending_sources",
        sa.Column("orthanc_id", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=128), nullable=False),
        sa.Column("remote_address", sa.String(length=64), nullable=True),
        sa.Column("announced_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("orthanc_id", "institution_id"),
    )


def _studies() -> None:
    op.create_table(
        "studies",
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_date", sa.String(length=16), nullable=True),
        sa.Column("study_time", sa.String(length=32), nullable=True),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("study_id", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=256), nullable=True),
        sa.Column("referring_physician", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("owner_institution_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.pk"]),
        sa.ForeignKeyConstraint(["owner_institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("study_uid"),
    )
    op.create_index("ix_studies_accession", "studies", ["accession_number"], unique=False)
    op.create_index("ix_studies_date", "studies", ["study_date"], unique=False)
    op.create_index("ix_studies_date_uid", "studies", ["study_date", "study_uid"], unique=False)
    op.create_index("ix_studies_owner", "studies", ["owner_institution_id"], unique=False)
    op.create_index("ix_studies_patient", "studies", ["patient_pk"], unique=False)


def _series() -> None:
    op.create_table(
        "series",
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=256), nullable=True),
        sa.Column("series_date", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["study_uid"], ["studies.study_uid"]),
        sa.PrimaryKeyConstraint("series_uid"),
    )
    op.create_index("ix_series_study", "series", ["study_uid"], unique=False)


def _instances() -> None:
    op.create_table(
        "instances",
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=True),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax", sa.String(length=64), nullable=True),
        sa.Column("orthanc_id", sa.String(length=64), nullable=True),
        sa.Column("attachment_uuid", sa.String(length=64), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["series_uid"], ["series.series_uid"]),
        sa.PrimaryKeyConstraint("sop_uid"),
        sa.UniqueConstraint("orthanc_id"),
    )
    op.create_index("ix_instances_series", "instances", ["series_uid"], unique=False)
    op.create_index("ix_instances_study", "instances", ["study_uid"], unique=False)


def _grants() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("grantor_id", sa.Integer(), nullable=False),
        sa.Column("grantee_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("patient_pk", sa.Integer(), nullable=True),
        sa.Column("permission", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("revoked_by", sa.String(length=256), nullable=True),
        sa.CheckConstraint(
            "(study_uid IS NULL) <> (patient_pk IS NULL)", name="ck_grants_one_level"
        ),
        sa.CheckConstraint("permission IN ('read', 'read+report')", name="ck_grants_permission"),
        sa.ForeignKeyConstraint(["grantor_id"], ["institutions.id"]),
        sa.ForeignKeyConstraint(["grantee_id"], ["institutions.id"]),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.pk"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_grants_grantee", "grants", ["grantee_id"], unique=False)
    op.create_index("ix_grants_grantor", "grants", ["grantor_id"], unique=False)


def _worklist_opened() -> None:
    op.create_table(
        "worklist_opened",
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("opened_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("institution_id", "study_uid"),
    )


def _share_links() -> None:
    op.create_table(
        "share_links",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("institution", sa.String(length=128), nullable=False),
        sa.Column("actions", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("pin_salt", sa.LargeBinary(length=16), nullable=True),
        sa.Column("pin_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("pin_failures", sa.Integer(), nullable=False),
        sa.Column("locked_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("revoked_by", sa.String(length=256), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_share_links_study_uid"), "share_links", ["study_uid"], unique=False)


def _users() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.String(length=512), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_login", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def _oauth_clients() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.String(length=512), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
        sa.UniqueConstraint("name"),
    )


def _oauth_codes() -> None:
    op.create_table(
        "oauth_codes",
        sa.Column("code_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=128), nullable=False),
        sa.Column("auth_time", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("code_sha256"),
    )
    op.create_index(op.f("ix_oauth_codes_expires_at"), "oauth_codes", ["expires_at"], unique=False)


def _oauth_login_requests() -> None:
    op.create_table(
        "oauth_login_requests",
        sa.Column("csrf_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("binding_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("csrf_sha256"),
    )
    op.create_index(
        op.f("ix_oauth_login_requests_expires_at"),
        "oauth_login_requests",
        ["expires_at"],
        unique=False,
    )


def _oauth_refresh_tokens() -> None:
    op.create_table(
        "oauth_refresh_tokens",
        sa.Column("token_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("auth_time", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("rotated", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("token_sha256"),
    )
    op.create_index(
        op.f("ix_oauth_refresh_tokens_expires_at"),
        "oauth_refresh_tokens",
        ["expires_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_oauth_refresh_tokens_family"), "oauth_refresh_tokens", ["family"], unique=False
    )
    op.create_index(
        op.f("ix_oauth_refresh_tokens_user"), "oauth_refresh_tokens", ["user"], unique=False
    )


def _audit_events() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("mac", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )


def _audit_head() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("mac", sa.LargeBinary(length=32), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


# in dependency order (foreign keys point backwards)
TABLES: dict[str, Callable[[], None]] = {
    "attachments": _attachments,
    "blobs": _blobs,
    "index_queue": _index_queue,
    "institutions": _institutions,
    "patients": _patients,
    "pending_attachments": _pending_attachments,
    "attachment_parts": _attachment_parts,
    "instance_sources": _instance_sources,
    "institution_aes": _institution_aes,
    "pending_sources": _pending_sources,
    "studies": _studies,
    "series": _series,
    "instances": _instances,
    "grants": _grants,
    "worklist_opened": _worklist_opened,
    "share_links": _share_links,
    "users": _users,
    "oauth_clients": _oauth_clients,
    "oauth_codes": _oauth_codes,
    "oauth_login_requests": _oauth_login_requests,
    "oauth_refresh_tokens": _oauth_refresh_tokens,
    "audit_events": _audit_events,
    "audit_head": _audit_head,
}


def create_tables(skip: Collection[str] = ()) -> None:
    """Create the baseline's tables and their indexes, except those named in ``skip``."""
    for name, create in TABLES.items():
        if name not in skip:
            create()


def upgrade() -> None:
    create_tables()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
