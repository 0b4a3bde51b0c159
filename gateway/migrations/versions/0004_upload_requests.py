"""patient upload links

Revision ID: 0004
Revises: 0003

The patient upload links (gateway/records/upload_requests.py): one row per
link, holding a hash of its token, the patient and date of birth it is for,
its state and what its one submission stored; and the request counts of
the upload pages' rate limits (gateway/uploads/throttle.py), per hashed key
and 10-minute period.  An older instance gets empty tables.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("mobile", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("max_files", sa.Integer(), nullable=False),
        sa.Column("intimate", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("dob_failures", sa.Integer(), nullable=False),
        sa.Column("pass_hash", sa.String(length=64), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_id", sa.Integer(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("deliveries", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_upload_request_patient_id", "upload_request", ["patient_id"])
    op.create_index("ix_upload_request_created_by", "upload_request", ["created_by"])
    op.create_table(
        "upload_rate",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("period", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "period"),
    )


def downgrade() -> None:
    op.drop_table("upload_rate")
    op.drop_index("ix_upload_request_created_by", table_name="upload_request")
    op.drop_index("ix_upload_request_patient_id", table_name="upload_request")
    op.drop_table("upload_request")
