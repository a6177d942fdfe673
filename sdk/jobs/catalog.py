"""A publisher's catalog: originals, their immunized copies, and what each copy resists.

The catalog is an SQL database (an SQLite file by default, PostgreSQL by URL)
whose schema Alembic creates and upgrades (``sdk/jobs/migrations``, version
table ``photoimmune_catalog_version``, so a catalog can share a database with
other tables). Three tables:

* ``originals``: one row per catalogued file: its absolute path, sha256, size
  and pixel size, or why it could not be read;
* ``immunized_copies``: one row per immunized file a job wrote, with the
  original's sha256 it was made from and the :class:`Protection` records it
  carries (the same ones its signed manifest lists);
* ``work_items``: the queue re-immunization jobs share (see :mod:`.queue`).

``Catalog.add`` is idempotent: adding a folder again records only what changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, declared_attr, mapped_column

from ..database import Database, Schema, open_database, utc_now, write_session
from ..errors import (
    DatabaseLocationError,
    DatabaseUnavailableError,
    ImageLoadError,
    InputError,
)
from ..protection import Protection

#: The catalog's tables (and the work queue's) and their migrations.
SCHEMA = Schema(Path(__file__).parent / "migrations", "photoimmune_catalog_version", lock_key=74688)
#: Leading bytes of the formats the image loader decodes; anything else is not an image.
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"P6", b"P5")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm"}


class CatalogError(DatabaseUnavailableError):
    """The catalog's database server cannot be used: down, unreachable, refusing the login,
    or failing during a job."""


class Base(DeclarativeBase):
    pass


class Original(Base):
    __tablename__ = "originals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location: Mapped[str] = mapped_column(String(2048), unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    readable: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OfAnOriginal:
    """Columns of rows about one original's content under one work key (copies, work items)."""

    __table_args__ = (UniqueConstraint("original_id", "original_sha256", "targets_key"),)
    original_sha256: Mapped[str] = mapped_column(String(64))
    targets_key: Mapped[str] = mapped_column(String(64), index=True)

    @declared_attr
    def original_id(cls) -> Mapped[int]:  # noqa: N805 (a declared_attr takes the class)
        return mapped_column(ForeignKey("originals.id"), index=True)


class ImmunizedCopy(OfAnOriginal, Base):
    __tablename__ = "immunized_copies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Not unique: originals with identical content share one copy file.
    path: Mapped[str] = mapped_column(String(2048), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    protections: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OriginalRecord(BaseModel):
    """One catalogued original, as the API returns it."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    location: str
    sha256: str | None
    size: int | None
    width: int | None
    height: int | None
    readable: bool
    error: str | None


class CopyRecord(BaseModel):
    """One immunized copy: where it is and what it is protected against."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    original_id: int
    original_sha256: str
    path: str
    sha256: str
    targets_key: str
    protections: tuple[Protection, ...]

    @property
    def protected_against(self) -> tuple[str, ...]:
        return tuple(p.target_ref for p in self.protections)

    def covers(self, target_ref: str, target_digest: str) -> bool:
        return any(
            (p.target_ref, p.target_digest) == (target_ref, target_digest) for p in self.protections
        )


class AddReport(BaseModel):
    """What ``Catalog.add`` did, file by file."""

    added: list[str] = []
    updated: list[str] = []  # content changed since the last add
    unchanged: int = 0
    unreadable: dict[str, str] = {}  # path -> why
    skipped: dict[str, str] = {}  # path -> why (not an image, an immunized copy)
    missing: dict[str, str] = {}  # path as given -> why (nothing there)


class Catalog:
    """Open (and create or upgrade) the catalog at ``db``: a URL or an SQLite file path.

    With ``created_by`` (the command that creates catalogs, named in the message), a
    missing SQLite file is refused, not created. ``db`` may also be a database opened
    already with :data:`SCHEMA` among its schemas (a service's). Opening fails with
    :class:`~photoimmune.sdk.errors.DatabaseLocationError` (bad input) or
    :class:`CatalogError` (a server that cannot be used); see
    :func:`~photoimmune.sdk.database.open_database`.

    Example:
        >>> catalog = Catalog("photos.db")  # doctest: +SKIP
        >>> catalog.add(["photos/"]).added[:1]  # doctest: +SKIP
        ['/srv/photos/cat.jpg']
    """

    def __init__(
        self, db: str | os.PathLike[str] | Database, *, created_by: str | None = None
    ) -> None:
        if not isinstance(db, (str, os.PathLike, Database)):
            raise DatabaseLocationError(
                f"db={db!r}: give the catalog's database: an SQLite file path "
                "(e.g. photos.db) or a database URL"
            )
        database = (
            db
            if isinstance(db, Database)
            else open_database(
                db, SCHEMA, what="catalog", created_by=created_by, unavailable=CatalogError
            )
        )
        self.url, self.engine = database.url, database.engine

    def session(self) -> Session:
        return Session(self.engine)

    def write(self):
        """A write transaction (see :func:`photoimmune.sdk.database.write_session`)."""
        return write_session(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- originals -----------------------------------------------------------------------

    def add(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        progress: Callable[[Path], None] | None = None,
    ) -> AddReport:
        """Catalogue the image files in ``paths`` (files or folders, walked recursively;
        one path may be given alone).

        Non-images are skipped with a warning; images that cannot be decoded are
        recorded as unreadable, with the reason, so a job reports rather than
        forgets them (so is an entry that cannot even be looked at, such as a link
        to a place this user may not enter). Files this catalog wrote as immunized
        copies are skipped.
        A path that does not exist is reported in ``missing``; the others are
        still catalogued (one mistyped folder must not cost the rest).

        Example:
            >>> report = Catalog("photos.db").add(["photos/"])  # doctest: +SKIP
            >>> len(report.added), report.unreadable  # doctest: +SKIP
            (20, {})
        """
        from ..io import load_image

        report = AddReport()
        with self.session() as session:
            copies = set(session.scalars(select(ImmunizedCopy.path)))
        for path in _walk(_path_list(paths), report.missing, report.unreadable):
            if progress is not None:
                progress(path)
            location = str(path)
            if location in copies:
                report.skipped[location] = "an immunized copy this catalog wrote"
                continue
            kind = _sniff(path)
            if kind == "other":
                report.skipped[location] = "not an image"
                continue
            fields: dict = {"readable": False, "error": None}
            try:
                image = load_image(path)
                fields.update(readable=True, width=image.width, height=image.height)
                data = image.data
            except ImageLoadError as err:
                fields["error"] = str(err)
                data = _read_or_none(path)
            if data is not None:
                fields.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            self._record(location, fields, report)
        return report

    def _record(self, location: str, fields: dict, report: AddReport) -> None:
        try:
            outcome = self._upsert(location, fields)
        except IntegrityError:  # another `catalog add` inserted it meanwhile (PostgreSQL)
            outcome = self._upsert(location, fields)
        if outcome == "added" and fields["readable"]:
            report.added.append(location)
        elif outcome == "updated" and fields["readable"]:
            report.updated.append(location)
        elif outcome == "unchanged":
            report.unchanged += 1
        if not fields["readable"]:
            report.unreadable[location] = fields["error"] or "unreadable"

    def _upsert(self, location: str, fields: dict) -> str:
        with self.write() as session:
            row = session.scalars(select(Original).where(Original.location == location)).first()
            if row is None:
                session.add(Original(location=location, added_at=utc_now(), **fields))
                return "added"
            if (row.sha256, row.readable, row.error) == (
                fields.get("sha256"),
                fields["readable"],
                fields["error"],
            ):
                return "unchanged"
            for key in ("sha256", "size", "width", "height", "readable", "error"):
                setattr(row, key, fields.get(key))
            return "updated"

    def originals(self, *, readable: bool | None = None) -> list[OriginalRecord]:
        """Catalogued originals, oldest first (``readable=True``: decodable ones only)."""
        stmt = select(Original).order_by(Original.id)
        if readable is not None:
            stmt = stmt.where(Original.readable == readable)
        with self.session() as session:
            return [OriginalRecord.model_validate(r) for r in session.scalars(stmt)]

    # -- copies --------------------------------------------------------------------------

    def copies(self) -> list[CopyRecord]:
        """Immunized copies, oldest first."""
        stmt = select(ImmunizedCopy).order_by(ImmunizedCopy.id)
        with self.session() as session:
            return [CopyRecord.model_validate(r) for r in session.scalars(stmt)]

    def current_copies(self) -> dict[int, CopyRecord]:
        """original id -> its newest copy made from its current content."""
        newest = (
            select(func.max(ImmunizedCopy.id))
            .join(Original, Original.id == ImmunizedCopy.original_id)
            .where(ImmunizedCopy.original_sha256 == Original.sha256)
            .group_by(ImmunizedCopy.original_id)
        )
        with self.session() as session:
            rows = session.scalars(select(ImmunizedCopy).where(ImmunizedCopy.id.in_(newest)))
            return {r.original_id: CopyRecord.model_validate(r) for r in rows}


def _path_list(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[str | os.PathLike[str]]:
    """``paths`` as a list: one path given alone is one item, never its characters."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    if isinstance(paths, (bytes, bytearray)) or not isinstance(paths, Iterable):
        raise InputError(f"paths={paths!r}: give a file or folder path, or a list of them")
    items = list(paths)
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise InputError(
                f"paths: {item!r} is not a path; give file or folder paths (str or Path)"
            )
    return items


def _walk(
    paths: Sequence[str | os.PathLike[str]], missing: dict[str, str], unreadable: dict[str, str]
) -> Iterator[Path]:
    """The files under ``paths``, each once however often it is named (a folder and a file
    in it, a link to it); a path with nothing there goes to ``missing`` instead, a folder
    that cannot be listed to ``unreadable``."""
    seen: set[Path] = set()
    for path in _named_files(paths, missing, unreadable):
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # a link into a place we may not enter, or a loop
            real = path  # kept as named: the loader records why it cannot be read
        if real not in seen:
            seen.add(real)
            yield path


def _named_files(
    paths: Sequence[str | os.PathLike[str]], missing: dict[str, str], unreadable: dict[str, str]
) -> Iterator[Path]:
    def unlistable(err: OSError) -> None:
        where = err.filename if err.filename is not None else "?"
        unreadable[os.fspath(where)] = f"cannot list this folder ({err.strerror or err})"

    for given in paths:
        path = _as_path(given)
        if _is_dir(path):
            for folder, dirs, files in os.walk(path, onerror=unlistable):
                dirs.sort()
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(folder) / name
        elif os.path.lexists(path):
            # Any other kind of file (a FIFO, a device, a link that cannot be followed)
            # goes to the loader, which refuses it with the reason, recorded like any
            # unreadable image.
            yield path
        else:
            missing[os.fspath(given)] = "no such file or folder; check the path"


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder; False where it cannot even be looked at."""
    try:
        return path.is_dir()
    except OSError:  # e.g. a link to /proc/1/cwd: permission denied
        return False


def _read_or_none(path: Path) -> bytes | None:
    """The bytes of an image the loader refused, to fingerprint it; None for a special file."""
    from ..io import read_image_bytes

    try:
        return read_image_bytes(path)
    except ImageLoadError:
        return None


def _as_path(given: str | os.PathLike[str]) -> Path:
    text = os.fspath(given)
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme != "file":
            raise InputError(
                f"{text}: only local files (paths or file:// URIs) can be catalogued; copy "
                "remote photos to a local or mounted folder first"
            )
        text = unquote(parsed.path)
    path = Path(text).expanduser()
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link that cannot be followed: named as given
        return path.absolute()


def _sniff(path: Path) -> str:
    """``"other"`` for files that are not images: no image magic bytes and no image suffix.

    Anything else (image bytes, an image suffix, an unreadable file) goes to the
    loader, whose error then says what is wrong with it.
    """
    from ..io import read_image_bytes

    try:
        # The safe reader: a plain open() of a FIFO would wait for a writer forever.
        head = read_image_bytes(path, head=16)
    except ImageLoadError:
        return "unknown"  # unreadable or special: recorded with the reason rather than skipped
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    return "unknown" if path.suffix.lower() in _IMAGE_SUFFIXES else "other"
