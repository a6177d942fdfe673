"""Where the registry keeps its state: metadata rows in SQL, target files as blobs on disk.

SQLAlchemy over SQLite by default (one file, fine for a vendor or a small
registry) or PostgreSQL by URL. The schema is created and upgraded by Alembic
migrations (``registry/migrations``). Blobs are content-addressed
(``blobs/ab/abcdef...``): a file is written once, atomically, under its sha256,
so storing the same tensor twice costs nothing and a half-written blob is never
visible.

Writers serialise on one lock row (``SELECT ... FOR UPDATE`` on PostgreSQL, a
``BEGIN IMMEDIATE`` transaction on SQLite), so two vendors publishing at once
both land and each snapshot lists both.

A blob is written before the row that names it is committed (a committed row
always has its file). If that transaction then fails (a check after the blob, a
failed commit), the blobs it wrote are removed again unless a committed row names
them; blobs a killed process left behind are removed by
:meth:`Store.remove_orphan_blobs` (``registry serve`` runs it at start).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    LargeBinary,
    String,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from photoimmune.sdk.database import Schema, open_database, write_session
from photoimmune.sdk.descriptor import SHA256_HEX
from photoimmune.sdk.io import atomic_write_bytes

from .errors import UnknownReleaseError

#: The registry's tables and their migrations.
SCHEMA = Schema(Path(__file__).parent / "migrations", "alembic_version", lock_key=74687)
#: Where a write session keeps the digests of the blobs it wrote (``Session.info``).
_NEW_BLOBS = "photoimmune_new_blobs"
_DIGEST = re.compile(SHA256_HEX)
logger = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class MetadataFile(Base):
    """One signed version of one role's metadata (every version is kept and served)."""

    __tablename__ = "metadata_files"
    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TargetFileRow(Base):
    """A target path and the sha256 of one of its published contents."""

    __tablename__ = "target_files"
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger)


class RepositoryLock(Base):
    """A single row every writer locks first."""

    __tablename__ = "repository_lock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class BlobStore:
    """Content-addressed files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``: its sha256, and whether this call wrote the file."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if path.exists():
            return digest, False
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, overwrite=True)
        return digest, True

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def digests(self) -> Iterator[str]:
        """The sha256 of every stored blob."""
        for folder in self.root.glob("[0-9a-f][0-9a-f]"):
            for path in folder.iterdir():
                if _DIGEST.fullmatch(path.name) and path.name.startswith(folder.name):
                    yield path.name

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


class Store:
    """The registry database at ``url`` (created or upgraded here) and the blob store.

    With ``created_by`` (the command that creates one, named in the message), a missing
    SQLite file is refused, not created. Opening fails as
    :func:`~photoimmune.sdk.database.open_database` says.

    Example:
        >>> store = Store("sqlite:///reg/registry.db", Path("reg/blobs"))  # doctest: +SKIP
        >>> with store.write() as session:  # doctest: +SKIP
        ...     store.put_metadata(session, "root", 1, data)
    """

    def __init__(self, url: str, blob_dir: Path, *, created_by: str | None = None) -> None:
        database = open_database(url, SCHEMA, what="registry database", created_by=created_by)
        self.url, self.engine = database.url, database.engine
        self.blobs = BlobStore(blob_dir)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    def dispose(self) -> None:
        """Close every connection: SQLite's files are then whole, and may be moved."""
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that holds the repository lock until it commits.

        If it fails, before or at the commit, the blobs it wrote are removed again
        (those no committed row names).
        """
        written: list[str] = []
        try:
            with self._locked() as session:
                session.info[_NEW_BLOBS] = written
                yield session
        except BaseException:
            if written:
                self._remove_unreferenced(written)
            raise

    @contextmanager
    def _locked(self) -> Iterator[Session]:
        with write_session(self.engine) as session:
            session.execute(select(RepositoryLock).where(RepositoryLock.id == 1).with_for_update())
            yield session

    def _remove_unreferenced(self, digests: Iterable[str]) -> int:
        """Remove the blobs among ``digests`` that no committed row names; how many.

        Every blob is written by a transaction holding the repository lock, so once
        this one holds it no writer is between writing a blob and committing its row:
        a blob that no committed row names belongs to no release.
        """
        wanted = set(digests)
        try:
            with self._locked() as session:
                named = set(
                    session.scalars(
                        select(TargetFileRow.sha256).where(TargetFileRow.sha256.in_(wanted))
                    )
                )
                for digest in wanted - named:
                    self.blobs.remove(digest)
        except Exception as err:  # the failure that brought us here is what the caller sees
            logger.warning(
                "could not remove %d blob(s) of a failed write (%s); `photoimmune registry "
                "serve` removes them when it next starts",
                len(wanted),
                err,
            )
            return 0
        return len(wanted - named)

    def remove_orphan_blobs(self) -> int:
        """Remove every stored blob that no committed row names (a killed writer's); how many."""
        with self._locked() as session:
            named = set(session.scalars(select(TargetFileRow.sha256)))
            orphans = [digest for digest in self.blobs.digests() if digest not in named]
            for digest in orphans:
                self.blobs.remove(digest)
        return len(orphans)

    def latest(self, session: Session, role: str) -> MetadataFile | None:
        stmt = (
            select(MetadataFile)
            .where(MetadataFile.role == role)
            .order_by(MetadataFile.version.desc())
            .limit(1)
        )
        return session.scalars(stmt).first()

    def top_level(self, session: Session, role: str) -> MetadataFile:
        """The newest version of ``role``, one that every initialised registry has (root,
        targets, snapshot, timestamp)."""
        row = self.latest(session, role)
        if row is None:
            raise UnknownReleaseError(
                f"registry has no {role!r} metadata: it is not initialised; run "
                "`photoimmune registry init`"
            )
        return row

    def metadata(self, session: Session, role: str, version: int) -> bytes | None:
        row = session.get(MetadataFile, (role, version))
        return None if row is None else row.data

    def latest_of_each(self, session: Session) -> dict[str, tuple[int, bytes]]:
        newest = (
            select(MetadataFile.role, func.max(MetadataFile.version).label("version"))
            .group_by(MetadataFile.role)
            .subquery()
        )
        rows = session.execute(
            select(MetadataFile).join(
                newest,
                (MetadataFile.role == newest.c.role) & (MetadataFile.version == newest.c.version),
            )
        ).scalars()
        return {row.role: (row.version, row.data) for row in rows}

    def put_metadata(self, session: Session, role: str, version: int, data: bytes) -> None:
        session.add(
            MetadataFile(role=role, version=version, data=data, created_at=datetime.now(UTC))
        )

    def put_target(self, session: Session, path: str, data: bytes) -> None:
        digest, written = self.blobs.put(data)
        if written:
            session.info.setdefault(_NEW_BLOBS, []).append(digest)  # removed if the write fails
        if session.get(TargetFileRow, (path, digest)) is None:
            session.add(TargetFileRow(path=path, sha256=digest, length=len(data)))

    def target(self, session: Session, path: str, sha256: str) -> bytes | None:
        if session.get(TargetFileRow, (path, sha256)) is None:
            return None
        return self.blobs.get(sha256)

    def targets(self, session: Session) -> list[TargetFileRow]:
        return list(session.scalars(select(TargetFileRow)))

    def vendor_usage(self, session: Session, vendor: str) -> tuple[int, set[str]]:
        """Bytes ``vendor`` stores (every version of its metadata, and each distinct file
        under ``<vendor>/``), and the sha256 of those files."""
        rows = session.execute(
            select(TargetFileRow.sha256, TargetFileRow.length)
            .where(TargetFileRow.path.startswith(f"{vendor}/", autoescape=True))
            .distinct()
        )
        files = {digest: length for digest, length in rows}
        metadata = session.scalar(
            select(func.coalesce(func.sum(func.length(MetadataFile.data)), 0)).where(
                MetadataFile.role == vendor
            )
        )
        return int(metadata or 0) + sum(files.values()), set(files)
