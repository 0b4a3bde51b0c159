"""console sessions

Revision ID: 0003
Revises: 0002

The staff console's signed-in sessions (gateway/console/sessions.py): a hash
of each session's token, who it belongs to and when it was last used.  An
older instance gets an empty table; nobody is signed in.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("uid", sa.String(length=255), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_console_session_uid", "console_session", ["uid"])
    op.create_index("ix_console_session_last_seen", "console_session", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_console_session_last_seen", table_name="console_session")
    op.drop_index("ix_console_session_uid", table_name="console_session")
    op.drop_table("console_session")
