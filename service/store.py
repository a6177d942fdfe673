"""Where the service keeps its state: one SQL database (SQLite file or PostgreSQL).

The database holds the jobs' catalog and work queue (:mod:`photoimmune.sdk.jobs`:
uploads are its originals, results its immunized copies, ``work_items`` the
queue with leases) and the service's own tables, created and upgraded by
Alembic (``service/migrations``, version table ``photoimmune_service_version``):

* ``api_keys``: one row per key: its name, the sha256 of the key (never the key),
  its rate and quota, the images it used, when it was revoked;
* ``service_jobs``: a client's job: which key, which work item, what to make;
* ``service_blobs``: uploads and signed results, content-addressed (sha256), so
  workers on other machines (Ray) need no shared folder, and nothing lives
  outside the database that a restart could lose.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Integer, LargeBinary, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from photoimmune.sdk.database import Schema, open_database
from photoimmune.sdk.jobs.catalog import SCHEMA as CATALOG_SCHEMA
from photoimmune.sdk.jobs.catalog import Catalog

#: The service's own tables and their migrations (beside the catalog's, in one database).
SCHEMA = Schema(Path(__file__).parent / "migrations", "photoimmune_service_version", lock_key=74690)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    quota_images: Mapped[int | None] = mapped_column(Integer)
    used_images: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ServiceJob(Base):
    __tablename__ = "service_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    item_id: Mapped[int] = mapped_column(Integer, index=True)
    spec: Mapped[dict] = mapped_column(JSON)  # a jobs.JobSpec
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Blob(Base):
    __tablename__ = "service_blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ServiceStore:
    """The service's database: the jobs' catalog and queue, keys, jobs, blobs; created or
    upgraded here.

    With ``created_by`` (the command that creates one, named in the message), a missing
    SQLite file is refused, not created. Every failure names the service database (see
    :func:`~photoimmune.sdk.database.open_database` for which errors).

    Example:
        >>> store = ServiceStore("sqlite:///service.db")  # doctest: +SKIP
        >>> ServiceStore("typo.db", created_by="photoimmune service key add")
        Traceback (most recent call last):
        photoimmune.sdk.errors.DatabaseLocationError: typo.db: no such service database; ...
    """

    def __init__(self, db: str, *, created_by: str | None = None) -> None:
        database = open_database(
            db, CATALOG_SCHEMA, SCHEMA, what="service database", created_by=created_by
        )
        self.catalog = Catalog(database)
        self.url, self.engine = database.url, database.engine

    def read(self) -> Session:
        return Session(self.engine)

    def write(self):
        """A write transaction (see :func:`photoimmune.sdk.database.write_session`)."""
        return self.catalog.write()

    def dispose(self) -> None:
        self.engine.dispose()

    @staticmethod
    def put_blob(session: Session, data: bytes) -> str:
        """Store ``data`` in ``session``'s transaction (once per content); its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        if session.get(Blob, digest) is None:
            session.add(Blob(sha256=digest, data=data))
            session.flush()
        return digest

    def blob(self, sha256: str) -> bytes | None:
        with self.read() as session:
            return session.scalar(select(Blob.data).where(Blob.sha256 == sha256))
