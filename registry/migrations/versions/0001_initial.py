"""Initial schema: metadata versions, target files, the writers' lock row.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "metadata_files",
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "target_files",
        sa.Column("path", sa.String(512), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("length", sa.BigInteger, nullable=False),
    )
    lock = op.create_table("repository_lock", sa.Column("id", sa.Integer, primary_key=True))
    op.bulk_insert(lock, [{"id": 1}])


def downgrade() -> None:
    op.drop_table("repository_lock")
    op.drop_table("target_files")
    op.drop_table("metadata_files")
