"""encryption keys

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
        "share_key",
        sa.Column("share", sa.String(length=64), nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("share"),
    )
    op.create_index(
        op.f("ix_share_key_master_key_id"), "share_key", ["master_key_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_share_key_master_key_id"), table_name="share_key")
    op.drop_table("share_key")
    op.drop_index(op.f("ix_data_key_master_key_id"), table_name="data_key")
    op.drop_index(op.f("ix_data_key_file_id"), table_name="data_key")
    op.drop_table("data_key")
