"""The SQL databases photoimmune keeps (a registry's, a publisher's catalog).

One way to open, migrate and write to them, on SQLite (one file, the default)
or PostgreSQL (by URL, for many writers):

* SQLite writers queue for up to 30 s instead of failing with "database is
  locked", and a write transaction takes the write lock when it begins
  (``BEGIN IMMEDIATE``), so read-then-update sequences never interleave;
* schemas are created and upgraded by Alembic migrations, each schema with its
  own version table, so a registry and a catalog may share one database;
* on PostgreSQL, two processes migrating an empty database at once serialise
  on an advisory lock instead of both creating the tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session


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
    except ArgumentError:
        # Not a URL SQLAlchemy understands: a file path, or a typo that may still
        # hold a password, so keep only what cannot be one.
        return url if "@" not in url else "<unparsable database URL>"


def redact_error(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with ``url``'s password blanked out."""
    try:
        password = make_url(url).password
    except ArgumentError:
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
