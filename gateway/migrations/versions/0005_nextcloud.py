"""nextcloud app passwords and login flows

Revision ID: 0005
Revises: 0004

The Nextcloud apps' door (docs/NEXTCLOUD-APPS.md): app passwords (a hash of
each, per user and device), Login Flow v2 requests in progress, and the
numbers the apps know files and folders by.  An older
instance gets empty tables: no device is connected yet.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_password",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uid", sa.String(length=255), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_app_password_uid", "app_password", ["uid"])
    op.create_table(
        "login_flow",
        sa.Column("poll_hash", sa.String(length=64), nullable=False),
        sa.Column("login_hash", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uid", sa.String(length=255), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("poll_hash"),
        sa.UniqueConstraint("login_hash"),
    )
    op.create_index("ix_login_flow_created_at", "login_flow", ["created_at"])
    op.create_table(
        "nextcloud_file_id",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("share", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("share", "path", name="uq_nextcloud_file_id_path"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("nextcloud_file_id")
    op.drop_index("ix_login_flow_created_at", table_name="login_flow")
    op.drop_table("login_flow")
    op.drop_index("ix_app_password_uid", table_name="app_password")
    op.drop_table("app_password")
