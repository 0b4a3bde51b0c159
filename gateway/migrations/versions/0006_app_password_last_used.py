"""when each app password was last used

Revision ID: 0006
Revises: 0005

The Nextcloud apps' devices (gateway/auth/apppasswords.py) note when each
app password last signed a request in, as Nextcloud's own device list
shows: an admin looking for a lost or stale phone sees which one went
quiet.  Devices connected before the upgrade have no such time yet; their
next request sets it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "app_password", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("app_password") as batch:
        batch.drop_column("last_used_at")
