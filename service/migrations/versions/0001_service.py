"""Initial service schema: API keys, jobs, blobs (uploads and results).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, index=True),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("rate_per_minute", sa.Integer),
        sa.Column("quota_images", sa.Integer),
        sa.Column("used_images", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "service_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_id", sa.Integer, nullable=False, index=True),
        sa.Column("item_id", sa.Integer, nullable=False, index=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "service_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_blobs")
    op.drop_table("service_jobs")
    op.drop_table("api_keys")
