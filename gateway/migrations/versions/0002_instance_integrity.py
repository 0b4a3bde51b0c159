"""instance identity, master-key check values, disabled local users

Revision ID: 0002
Revises: 0001

The first numbered migration after the initial schema: an instance created
with 0001 is brought forward by ``clindav upgrade``, which also records the
instance id, the key-check values and the share markers (none of which a
migration can do: they need the master key and the backing folders).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "master_key_check",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("check_value", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    # Existing accounts stay enabled.
    op.add_column(
        "local_user",
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("local_user") as batch:
        batch.drop_column("disabled")
    op.drop_table("master_key_check")
    op.drop_table("instance_identity")
