"""PostgreSQL for tests: a real server, never a mock.

``postgres_url`` (session) is a SQLAlchemy URL of an empty database:

* with ``PHOTOIMMUNE_TEST_POSTGRES_URL`` set, on that server (a fresh database
  is created there when the account may, else the given one is used);
* otherwise on a throwaway cluster that ``initdb``/``pg_ctl`` start in a
  temporary folder on a free loopback port, and that is stopped and deleted
  at the end of the session. As root the server runs as the ``postgres`` user
  (``nobody`` if there is none), because ``initdb`` refuses to run as root;
* without PostgreSQL server binaries, tests that use it are skipped.

``fresh_postgres_url`` (per test) is a brand-new database on the same server,
dropped after the test, so no test sees another's rows.

The module is registered as a plugin by ``conftest.py``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

ENV = "PHOTOIMMUNE_TEST_POSTGRES_URL"
_DRIVER = "postgresql+psycopg"
#: Registry, catalog and service tables, dropped between tests when the server won't let us
#: create databases.
_TABLES = (
    "metadata_files",
    "target_files",
    "repository_lock",
    "alembic_version",
    "work_items",
    "immunized_copies",
    "originals",
    "photoimmune_catalog_version",
    "api_keys",
    "service_jobs",
    "service_blobs",
    "photoimmune_service_version",
)


def server_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest major version first."""
    candidates: list[Path] = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    candidates.append(Path("/usr/local/bin"))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: _major(p.parent.name), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder.resolve()
    return None


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _normalised(url: str) -> URL:
    parsed = make_url(url)
    # A bare postgresql:// would pick psycopg2, which is not a dependency.
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername=_DRIVER)
    return parsed


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _admin(url: URL):
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def create_database(server: URL, name: str) -> URL:
    """Create database ``name`` through any database of ``server``; its URL."""
    engine = _admin(server)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return server.set(database=name)


def drop_database(server: URL, name: str) -> None:
    """Drop ``name``, ending sessions a test left open on it (pooled engines)."""
    engine = _admin(server)
    try:
        with engine.connect() as connection:
            try:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except DBAPIError:  # servers before 13 lack WITH (FORCE)
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


def _drop_registry_tables(url: URL) -> None:
    engine = _admin(url)
    try:
        with engine.connect() as connection:
            for table in _TABLES:
                connection.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
    finally:
        engine.dispose()


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unprivileged() -> pwd.struct_passwd | None:
    """Who runs the server when we are root (None: we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("running as root and no postgres/nobody user to run initdb as (it refuses root)")


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.user = _unprivileged()
        # Not under pytest's tmp_path: that is mode 0700 under root's folder, and the
        # server may run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="photoimmune-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        extra = {}
        if self.user is not None:
            extra = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        for var in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
            env.pop(var, None)
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.root,  # the server's user may not be allowed into the caller's folder
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **extra,
        )

    def start(self) -> URL:
        init = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-locale", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        # The port is free when probed but may be taken before the server binds it.
        for _attempt in range(3):
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            started = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                "-w", "-t", "60", "start",
            )  # fmt: skip
            if started.returncode == 0:
                return URL.create(_DRIVER, "postgres", None, "127.0.0.1", self.port, "postgres")
        log = self.log.read_text() if self.log.is_file() else ""
        raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{log}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                stopped = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
                if stopped.returncode != 0:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL (``postgresql+psycopg://...``) of an empty database for this session."""
    configured = os.environ.get(ENV)
    if configured:
        server = _normalised(configured)
        name = _unique("photoimmune_test")
        try:
            url = create_database(server, name)
        except DBAPIError:
            # No CREATEDB privilege: the configured database itself is the test database.
            yield _render(server)
            return
        try:
            yield _render(url)
        finally:
            drop_database(server, name)
        return

    bin_dir = server_bin_dir()
    if bin_dir is None:
        pytest.skip(
            f"no PostgreSQL server binaries (initdb, pg_ctl) on PATH, in /usr/local/bin or "
            f"/usr/lib/postgresql/*/bin; install the `postgresql` package or set {ENV}"
        )
    cluster = ThrowawayCluster(bin_dir)
    try:
        server = cluster.start()
        yield _render(create_database(server, "photoimmune_test"))
    finally:
        cluster.stop()


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """URL of a database created for this test alone and dropped after it."""
    session = make_url(postgres_url)
    name = _unique("photoimmune_t")
    try:
        url = create_database(session, name)
    except DBAPIError:
        # Without CREATEDB, start from an empty schema in the session database instead.
        _drop_registry_tables(session)
        yield postgres_url
        return
    try:
        yield _render(url)
    finally:
        drop_database(session, name)
