"""initial schema

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("share", sa.String(length=64), nullable=True),
        sa.Column("logical_path", sa.Text(), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_mac", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_audit_event_actor", "audit_event", ["actor"], unique=False)
    op.create_index("ix_audit_event_path", "audit_event", ["share", "logical_path"], unique=False)
    op.create_index("ix_audit_event_patient", "audit_event", ["patient_id"], unique=False)
    op.create_index("ix_audit_event_status", "audit_event", ["status"], unique=False)
    op.create_index("ix_audit_event_time", "audit_event", ["occurred_at"], unique=False)
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The chain's head row exists from the start, so appends only ever update it.
    op.execute("INSERT INTO audit_head (id, seq, mac) VALUES (1, 0, '" + "0" * 64 + "')")
    op.create_table(
        "consent_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("given_by", sa.String(length=32), nullable=False),
        sa.Column("given_by_name", sa.String(length=255), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("form_reference", sa.Text(), nullable=True),
        sa.Column("intimate", sa.Boolean(), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("recorded_by", sa.String(length=255), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_consent_record_patient_id"), "consent_record", ["patient_id"], unique=False
    )
    op.create_table(
        "data_key",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index(op.f("ix_data_key_file_id"), "data_key", ["file_id"], unique=False)
    op.create_index(op.f("ix_data_key_master_key_id"), "data_key", ["master_key_id"], unique=False)
    op.create_table(
        "dav_lock",
        sa.Column("token", sa.String(length=128), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("principal", sa.String(length=255), nullable=False),
        sa.Column("expire", sa.Double(), nullable=False),
        sa.Column("lock", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index(op.f("ix_dav_lock_root"), "dav_lock", ["root"], unique=False)
    op.create_table(
        "dead_property",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("url", "name", name="uq_dead_property"),
    )
    op.create_index(op.f("ix_dead_property_url"), "dead_property", ["url"], unique=False)
    op.create_table(
        "legal_hold",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share", sa.String(length=64), nullable=False),
        sa.Column("logical_path", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_by", sa.String(length=255), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("share", "logical_path", name="uq_legal_hold"),
    )
    op.create_table(
        "local_user",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "share_key",
        sa.Column("share", sa.String(length=64), nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("share"),
    )
    op.create_index(
        op.f("ix_share_key_master_key_id"), "share_key", ["master_key_id"], unique=False
    )
    op.create_table(
        "stored_object",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share", sa.String(length=64), nullable=False),
        sa.Column("logical_path", sa.Text(), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("uploader", sa.String(length=255), nullable=False),
        sa.Column("placeholder", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("consent_id", sa.Integer(), nullable=True),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("file_id"),
        sa.UniqueConstraint("share", "logical_path", name="uq_stored_object_path"),
    )
    op.create_index(
        op.f("ix_stored_object_held_until"), "stored_object", ["held_until"], unique=False
    )
    op.create_index(
        op.f("ix_stored_object_patient_id"), "stored_object", ["patient_id"], unique=False
    )
    op.create_table(
        "trash_item",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("share", sa.String(length=64), nullable=False),
        sa.Column("logical_path", sa.Text(), nullable=False),
        sa.Column("is_folder", sa.Boolean(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("trashed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trashed_by", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("purge_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retained_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trash_item_due", "trash_item", ["state", "purge_after"], unique=False)
    op.create_table(
        "consent_withdrawal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consent_id", sa.Integer(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("withdrawn_by", sa.String(length=255), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["consent_id"],
            ["consent_record.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_consent_withdrawal_consent_id"), "consent_withdrawal", ["consent_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_consent_withdrawal_consent_id"), table_name="consent_withdrawal")
    op.drop_table("consent_withdrawal")
    op.drop_index("ix_trash_item_due", table_name="trash_item")
    op.drop_table("trash_item")
    op.drop_index(op.f("ix_stored_object_patient_id"), table_name="stored_object")
    op.drop_index(op.f("ix_stored_object_held_until"), table_name="stored_object")
    op.drop_table("stored_object")
    op.drop_index(op.f("ix_share_key_master_key_id"), table_name="share_key")
    op.drop_table("share_key")
    op.drop_table("local_user")
    op.drop_table("legal_hold")
    op.drop_index(op.f("ix_dead_property_url"), table_name="dead_property")
    op.drop_table("dead_property")
    op.drop_index(op.f("ix_dav_lock_root"), table_name="dav_lock")
    op.drop_table("dav_lock")
    op.drop_index(op.f("ix_data_key_master_key_id"), table_name="data_key")
    op.drop_index(op.f("ix_data_key_file_id"), table_name="data_key")
    op.drop_table("data_key")
    op.drop_index(op.f("ix_consent_record_patient_id"), table_name="consent_record")
    op.drop_table("consent_record")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_event_time", table_name="audit_event")
    op.drop_index("ix_audit_event_status", table_name="audit_event")
    op.drop_index("ix_audit_event_patient", table_name="audit_event")
    op.drop_index("ix_audit_event_path", table_name="audit_event")
    op.drop_index("ix_audit_event_actor", table_name="audit_event")
    op.drop_table("audit_event")
