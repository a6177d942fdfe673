"""Alembic environment: runs on the connection photoimmune.sdk.database.migrate hands over."""

from alembic import context

from photoimmune.registry.storage import Base

attributes = context.config.attributes
context.configure(
    connection=attributes["connection"],
    target_metadata=Base.metadata,
    version_table=attributes.get("version_table", "alembic_version"),
)
with context.begin_transaction():
    context.run_migrations()
