"""initial schema

Revision ID: 0001
Revises:
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
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("share", sa.String(length=64), nullable=True),
        sa.Column("logical_path", sa.Text(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_event_actor", "audit_event", ["actor"], unique=False)
    op.create_index("ix_audit_event_path", "audit_event", ["share", "logical_path"], unique=False)
    op.create_index("ix_audit_event_time", "audit_event", ["occurred_at"], unique=False)
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
        "local_user",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
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
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("file_id"),
        sa.UniqueConstraint("share", "logical_path", name="uq_stored_object_path"),
    )


def downgrade() -> None:
    op.drop_table("stored_object")
    op.drop_table("local_user")
    op.drop_index(op.f("ix_dead_property_url"), table_name="dead_property")
    op.drop_table("dead_property")
    op.drop_index("ix_audit_event_time", table_name="audit_event")
    op.drop_index("ix_audit_event_path", table_name="audit_event")
    op.drop_index("ix_audit_event_actor", table_name="audit_event")
    op.drop_table("audit_event")
