"""Initial catalog schema: originals, immunized copies, the shared work queue.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "originals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("location", sa.String(2048), nullable=False, unique=True),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("readable", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "immunized_copies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("original_id", sa.Integer, sa.ForeignKey("originals.id"), nullable=False),
        sa.Column("original_sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(2048), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("targets_key", sa.String(64), nullable=False),
        sa.Column("protections", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("original_id", "original_sha256", "targets_key"),
    )
    op.create_index("ix_immunized_copies_original_id", "immunized_copies", ["original_id"])
    op.create_index("ix_immunized_copies_path", "immunized_copies", ["path"])
    op.create_index("ix_immunized_copies_targets_key", "immunized_copies", ["targets_key"])
    op.create_table(
        "work_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("original_id", sa.Integer, sa.ForeignKey("originals.id"), nullable=False),
        sa.Column("original_sha256", sa.String(64), nullable=False),
        sa.Column("targets_key", sa.String(64), nullable=False),
        sa.Column("targets", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("lease_expires", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("copy_id", sa.Integer, sa.ForeignKey("immunized_copies.id")),
        sa.Column("finished_by", sa.String(255)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("original_id", "original_sha256", "targets_key"),
    )
    op.create_index("ix_work_items_original_id", "work_items", ["original_id"])
    op.create_index("ix_work_items_targets_key", "work_items", ["targets_key"])
    op.create_index("ix_work_items_state", "work_items", ["state"])


def downgrade() -> None:
    op.drop_table("work_items")
    op.drop_table("immunized_copies")
    op.drop_table("originals")
