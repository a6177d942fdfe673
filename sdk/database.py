"""The SQL databases photoimmune keeps (a registry's, a publisher's catalog, a manifest
store, a service's).

One way to open, migrate and write to them, on SQLite (one file, the default)
or PostgreSQL (by URL, for many writers):

* every store opens its database with :func:`open_database`, which checks the
  location (a file that is no SQLite database is refused before SQLite opens it),
  creates or upgrades its schemas, and turns every failure into one of
  ours (bad input, or a server that cannot be used) that says what to do and
  never shows a password; a store asked for a database that must exist already
  refuses a missing SQLite file instead of creating an empty one;
* a database the user named (``--db``) is checked by :func:`check_database` before
  any work, and may not be an in-memory one, which would keep nothing;

* SQLite writers queue for up to 30 s instead of failing with "database is
  locked", and a write transaction takes the write lock when it begins
  (``BEGIN IMMEDIATE``), so read-then-update sequences never interleave;
* schemas are created and upgraded by Alembic migrations, each schema with its
  own version table, so a registry and a catalog may share one database;
* on PostgreSQL, two processes migrating an empty database at once serialise
  on an advisory lock instead of both creating the tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session

from .errors import DatabaseLocationError, DatabaseUnavailableError


def utc_now() -> datetime:
    """Timestamps photoimmune stores: timezone-aware UTC."""
    return datetime.now(UTC)


def database_url(value: str) -> str:
    """A SQLAlchemy URL; a plain file path means an SQLite file there.

    Example:
        >>> database_url("catalog.db")
        'sqlite:///catalog.db'
        >>> database_url("postgresql+psycopg://db/photos")
        'postgresql+psycopg://db/photos'
    """
    return value if "://" in value else f"sqlite:///{value}"


@dataclass(frozen=True)
class Schema:
    """Tables migrated together: their Alembic scripts, version table and advisory lock.

    Each schema has its own version table, so several may share one database.

    Example:
        >>> Schema(Path("migrations"), "photoimmune_catalog_version", lock_key=74688).lock_key
        74688
    """

    scripts: Path
    version_table: str
    lock_key: int  # PostgreSQL advisory lock two processes migrating at once queue on


@dataclass(frozen=True)
class Database:
    """An opened database: its URL (with any password: redact it before showing it) and its
    engine, whose schemas are migrated to their newest.

    Example:
        >>> open_database("sqlite://", what="scratch database").url
        'sqlite://'
    """

    url: str = field(repr=False)  # may hold a password; the engine's repr hides it
    engine: Engine


def check_database(
    value: str | os.PathLike[str],
    *,
    what: str,
    option: str | None = None,
    created_by: str | None = None,
) -> str:
    """``database_url(value)``, refused now if ``what`` (e.g. ``"catalog"``) can never be
    opened there; connects to nothing and creates nothing.

    Refused (:class:`DatabaseLocationError`, bad input): a URL no installed SQLAlchemy
    dialect reads, a driver that is not installed, an SQLite file in a folder that is not
    there, a folder, an existing file that is no SQLite database (an empty one too,
    unless its name ends in ``.db``, ``.sqlite`` or ``.sqlite3``). With ``created_by``
    (the command that creates one), an SQLite file must exist already: a command that
    only reads never turns a mistyped name into a new, empty database. ``option`` (e.g.
    ``"--db"``) starts each message, to name what the user typed; a database the user
    named so must keep what is written, so an in-memory one (``sqlite://``,
    ``:memory:``, an empty value) is refused too, while a library caller may still open
    one for scratch work. Whether a server answers, only connecting tells
    (:func:`open_database`).

    Example:
        >>> check_database("sqlite://", what="catalog")
        'sqlite://'
        >>> check_database("sqlite://", what="catalog", option="--db")
        Traceback (most recent call last):
        photoimmune.sdk.errors.DatabaseLocationError: --db sqlite://: an in-memory database ...
        >>> check_database("typo.db", what="catalog", option="--db", created_by="catalog add")
        Traceback (most recent call last):
        photoimmune.sdk.errors.DatabaseLocationError: --db typo.db: no such catalog; ...
    """
    text = os.fspath(value)
    url = database_url(text)
    prefix = f"{option} " if option else ""
    with _url_errors(url, prefix):
        parsed = make_url(url)
        # Imports the driver, connects nowhere: a missing one is found before any work.
        parsed.get_dialect().import_dbapi()
    if parsed.get_backend_name() != "sqlite":
        return url
    if parsed.database in (None, "", ":memory:"):
        if option is not None:  # "1 added", then nothing kept: the user's work lost unseen
            shown = (redact_url(text) if "@" in text else text) or "''"  # as typed, no password
            raise DatabaseLocationError(
                f"{prefix}{shown}: an in-memory database (an empty value, sqlite:// or "
                f":memory:) keeps nothing once the command ends; give the {what}'s file "
                "path, or a server URL such as postgresql+psycopg://user@host/db"
            )
        return url
    path = Path(parsed.database)
    if path.is_dir():
        raise DatabaseLocationError(f"{prefix}{path}: is a folder; give the {what}'s file")
    if path.is_file():
        _check_sqlite_file(path, f"{prefix}{path}", what)
    elif created_by is not None:
        raise DatabaseLocationError(
            f"{prefix}{path}: no such {what}; check the path (`{created_by}` creates one)"
        )
    if not path.parent.is_dir():
        raise DatabaseLocationError(
            f"{prefix}{path}: the folder {path.parent} does not exist; create it first"
        )
    return url


#: The first 16 bytes of every SQLite database file (sqlite.org/fileformat.html).
_SQLITE_HEADER = b"SQLite format 3\x00"
#: Names that say an empty file is meant for a database. SQLite takes an empty file for an
#: empty database (sqlite3 leaves one before its first write, ``mktemp --suffix .db``
#: makes one), but under any other name (``photo.png``, ``notes.txt``) it is more likely
#: a mistyped path, which must not silently become a database.
_DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _check_sqlite_file(path: Path, shown: str, what: str) -> None:
    """Refuse an existing file that is no SQLite database before SQLite opens it, which
    would turn an empty file into a database, or fail on any other with its own words."""
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as err:
        raise DatabaseLocationError(
            f"{shown}: cannot read it ({err.strerror or err}); check its permissions"
        ) from None
    if header == _SQLITE_HEADER or (not header and path.suffix.lower() in _DATABASE_SUFFIXES):
        return
    reason = "the file is not an SQLite database"
    if not header:
        names = ", ".join(_DATABASE_SUFFIXES)
        reason = f"an empty file, taken for a new database only under a name ending in {names}"
    raise DatabaseLocationError(f"{shown}: cannot open the {what}: {reason}; check the path")


def open_database(
    value: str | os.PathLike[str],
    *schemas: Schema,
    what: str,
    created_by: str | None = None,
    unavailable: type[DatabaseUnavailableError] = DatabaseUnavailableError,
) -> Database:
    """Open the database ``value`` names (see :func:`database_url`) and create or upgrade
    ``schemas`` there, in order; the one way every store opens its database.

    ``value`` is checked first (:func:`check_database`, with ``created_by``: a missing
    SQLite file is refused, not created). Every failure is one of ours, saying what to
    do and never the password: :class:`DatabaseLocationError` (bad input: the URL, the
    driver, the SQLite file, a schema newer than this photoimmune) or ``unavailable``
    (a server that is down, unreachable or refuses the login; a store may name its own
    subclass). ``what`` (e.g. ``"catalog"``) says whose database it is.

    Example:
        >>> from photoimmune.sdk.jobs.catalog import SCHEMA
        >>> open_database("sqlite://", SCHEMA, what="catalog").engine.dialect.name
        'sqlite'
        >>> open_database("typo.db", SCHEMA, what="catalog", created_by="catalog add")
        Traceback (most recent call last):
        photoimmune.sdk.errors.DatabaseLocationError: typo.db: no such catalog; ...
    """
    url = check_database(value, what=what, created_by=created_by)
    with _url_errors(url):  # the URL's query may hold arguments its driver refuses
        engine = open_engine(url)
    with _open_errors(url, what, unavailable):
        try:
            for schema in schemas:
                migrate(
                    engine,
                    schema.scripts,
                    version_table=schema.version_table,
                    lock_key=schema.lock_key,
                )
        except BaseException:
            engine.dispose()
            raise
    return Database(url, engine)


@contextmanager
def _url_errors(url: str, prefix: str = "") -> Iterator[None]:
    """Turn what SQLAlchemy and the drivers raise about ``url`` itself (its syntax, its
    arguments, a driver not installed) into bad input. With :func:`_open_errors`, the one
    place their exceptions become ours; messages never show the password."""
    shown = f"{prefix}{redact_url(url)}"
    try:
        yield
    except (ArgumentError, ValueError, TypeError) as err:  # NoSuchModuleError is one too
        reason = redact_error(str(err).splitlines()[0], url) if str(err) else type(err).__name__
        raise DatabaseLocationError(
            f"{shown}: not a database URL SQLAlchemy reads ({reason}); give an SQLite file "
            "path or a URL such as postgresql+psycopg://user@host/db"
        ) from None
    except ImportError as err:  # the URL names a driver this install lacks: the user's to add
        raise DatabaseLocationError(
            f"{shown}: its driver is not installed ({err.name or err}); install it (for "
            "postgresql+psycopg://, pip install 'photoimmune[postgres]')"
        ) from None


#: SQLite failures that say nothing about the path: wait, or look at the disk.
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o")


@contextmanager
def _open_errors(
    url: str, what: str, unavailable: type[DatabaseUnavailableError]
) -> Iterator[None]:
    """Turn what connecting to ``url`` and migrating it raise into ours: a wrong SQLite file
    or a newer schema is bad input; a server down, or an SQLite file another process holds
    locked, is ``unavailable``. Messages reach terminals and logs: never the password,
    not even the driver's."""
    from alembic.util.exc import CommandError

    shown = redact_url(url)
    try:
        yield
    except CommandError as err:
        if "Can't locate revision" not in str(err):
            raise  # not the database's doing: a fault of this install, kept visible
        raise DatabaseLocationError(
            f"{shown}: its {what} was written by a newer photoimmune "
            f"({redact_error(str(err), url)}); upgrade photoimmune, or give another database"
        ) from None
    except SQLAlchemyError as err:
        # The driver's own words, without SQLAlchemy's "(sqlite3.DatabaseError)" before them.
        driver = str(getattr(err, "orig", None) or "")
        reason = redact_error((driver or str(err)).splitlines()[0], url)
        if make_url(url).get_backend_name() != "sqlite":
            raise unavailable(
                f"{shown}: cannot open the {what}: {reason}; check the URL and that its server runs"
            ) from None
        if any(word in reason.lower() for word in _SQLITE_TRANSIENT):
            raise unavailable(
                f"{shown}: cannot open the {what}: {reason}; another process holds it, or the "
                "disk failed: try again"
            ) from None
        raise DatabaseLocationError(  # the file itself is wrong: bad input
            f"{shown}: cannot open the {what}: {reason}; check the path"
        ) from None


def redact_url(url: str) -> str:
    """``url`` as it may appear in messages and logs: its password replaced by ``***``.

    Example:
        >>> redact_url("postgresql+psycopg://alice:S3cret@db/photos")
        'postgresql+psycopg://alice:***@db/photos'
        >>> redact_url("catalog.db")
        'catalog.db'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a URL SQLAlchemy understands: a file path, or a typo that may still
        # hold a password, so keep only what cannot be one.
        return url if "@" not in url else "<unparsable database URL>"


def redact_error(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with ``url``'s password blanked out."""
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return text
    return text.replace(str(password), "***") if password else text


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with photoimmune's SQLite locking rules applied.

    Example:
        >>> open_engine("sqlite://").dialect.name
        'sqlite'
    """
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _sqlite_locking(engine)
    return engine


def _sqlite_locking(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def migrate(engine: Engine, scripts: Path, *, version_table: str, lock_key: int) -> None:
    """Create or upgrade the schema whose Alembic scripts are in ``scripts`` to its newest.

    ``env.py`` there finds the connection and the version table in
    ``config.attributes`` (``"connection"``, ``"version_table"``).
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(scripts))
    # SQLite: take the write lock up front, so a second process opening a new
    # database waits (busy_timeout) instead of failing on a stale read snapshot.
    with engine.execution_options(sqlite_immediate=True).begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        config.attributes["connection"] = connection
        config.attributes["version_table"] = version_table
        command.upgrade(config, "head")


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A transaction that commits on success; on SQLite it holds the write lock throughout.

    Example:
        >>> with write_session(open_engine("sqlite://")) as session:
        ...     session.execute(text("SELECT 1")).scalar()
        1
    """
    sqlite = engine.dialect.name == "sqlite"
    bind = engine.execution_options(sqlite_immediate=True) if sqlite else engine
    with Session(bind) as session, session.begin():
        yield session
