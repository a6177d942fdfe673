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

from photoimmune.sdk.database import migrate
from photoimmune.sdk.jobs.catalog import Catalog

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "photoimmune_service_version"


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
    """The service's database: the jobs' catalog and queue, keys, jobs, blobs.

    Example:
        >>> store = ServiceStore("sqlite:///service.db")  # doctest: +SKIP
    """

    def __init__(self, db: str) -> None:
        self.catalog = Catalog(db)  # creates or upgrades the catalog and queue tables
        self.url = self.catalog.url
        self.engine = self.catalog.engine
        migrate(self.engine, MIGRATIONS, version_table=VERSION_TABLE, lock_key=74690)

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
