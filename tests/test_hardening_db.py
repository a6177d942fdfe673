"""Regression tests for the hardening probe's database, ``registry init`` and ``serve``
defects: each runs the real thing (SQLite files, sockets bound on loopback) and checks the
exit status and the one line that says what to do.

None of them needs a model.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from photoimmune.cli import main
from photoimmune.registry.admin import MAX_ROOT_KEYS, init_registry
from photoimmune.registry.service import RegistryPaths
from photoimmune.registry.storage import Store
from photoimmune.sdk.database import check_database
from photoimmune.sdk.errors import InputError, OutputExistsError
from photoimmune.sdk.jobs.catalog import Catalog
from photoimmune.sdk.keys import init_keys

from .test_hardening_cli import photo, refused, registry  # noqa: F401 (fixtures)

SQLITE_HEADER = b"SQLite format 3\x00"


def failed(capsys, *args: str) -> str:
    """Run the command line; it must exit 1 (unavailable) without a traceback."""
    return refused(capsys, *args, status=1)


# -- in-memory databases -------------------------------------------------------------------


@pytest.mark.parametrize("db", ["", "sqlite://", "sqlite:///", ":memory:", "sqlite:///:memory:"])
def test_catalog_add_refuses_an_in_memory_database(photo, db, capsys):  # noqa: F811
    text = refused(capsys, "catalog", "add", str(photo), "--db", db)
    assert "an in-memory database" in text and "keeps nothing" in text
    assert "added" not in text


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["catalog", "list"], "catalog"),
        (["service", "key", "add", "newsroom"], "service database"),
        (["manifests", "serve"], "manifest store"),
        (["registry", "init", "REG"], "registry database"),
    ],
)
def test_every_store_refuses_an_in_memory_database_it_is_given(args, what, tmp_path, capsys):
    folder = tmp_path / "reg"
    command = [str(folder) if a == "REG" else a for a in args]
    text = refused(capsys, *command, "--db", "")
    assert "--db '': an in-memory database" in text and f"give the {what}'s file path" in text
    assert not folder.exists()


def test_a_library_caller_may_still_use_an_in_memory_database():
    assert check_database("sqlite://", what="catalog") == "sqlite://"
    catalog = Catalog("sqlite://")  # scratch work, by choice: no option names it
    assert list(catalog.originals()) == []
    catalog.dispose()


# -- files that are no database ------------------------------------------------------------


def test_an_image_given_as_the_catalog_is_refused_by_both_commands(photo, capsys):  # noqa: F811
    before = photo.read_bytes()
    for args in (["catalog", "add", str(photo)], ["catalog", "list"]):
        text = refused(capsys, *args, "--db", str(photo))
        assert f"--db {photo}: cannot open the catalog: the file is not an SQLite database" in text
        assert "sqlite3" not in text  # the library's words stay out
    assert photo.read_bytes() == before


def test_an_empty_file_becomes_a_catalog_only_under_a_database_name(
    photo,  # noqa: F811
    tmp_path,
    capsys,
):
    empty = tmp_path / "empty.png"
    empty.touch()
    text = refused(capsys, "catalog", "add", str(photo), "--db", str(empty))
    assert f"--db {empty}: cannot open the catalog: an empty file, taken for" in text
    assert ".db, .sqlite, .sqlite3; check the path" in text
    assert empty.stat().st_size == 0  # not turned into a database
    meant = tmp_path / "new.db"  # e.g. `mktemp --suffix .db`: an empty SQLite database
    meant.touch()
    assert main(["catalog", "add", str(photo), "--db", str(meant)]) == 0
    assert "1 added" in capsys.readouterr().out
    assert meant.read_bytes()[:16] == SQLITE_HEADER


def test_a_damaged_database_is_named_without_the_librarys_words(tmp_path, capsys):
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(SQLITE_HEADER + b"\xff" * 200)
    text = refused(capsys, "catalog", "list", "--db", str(damaged))
    assert "cannot open the catalog: file is not a database; check the path" in text
    assert "(sqlite3." not in text


# -- registry init -------------------------------------------------------------------------


def test_registry_init_refuses_too_many_root_keys_before_writing(tmp_path, capsys):
    folder = tmp_path / "reg"
    too_many = str(MAX_ROOT_KEYS + 1)
    text = refused(capsys, "registry", "init", str(folder), "--root-keys", too_many)
    assert f"root keys (--root-keys, root_keys=) {too_many}: choose 1 to {MAX_ROOT_KEYS}" in text
    args = ["--root-keys", str(MAX_ROOT_KEYS), "--root-threshold", too_many]
    assert f"root threshold {too_many}" in refused(capsys, "registry", "init", str(folder), *args)
    assert not folder.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="choose 1 to"):  # the SDK itself: no minutes of keys
        init_registry(folder, root_keys=100_000)
    assert not folder.exists()


@pytest.fixture
def refusing_database(tmp_path) -> Path:
    """A real registry database (``--db``) whose metadata writes fail until its trigger
    ``refuse`` is dropped: an init on it fails after its keys are written and before its
    root.json is, where an interrupted one would stop."""
    path = tmp_path / "shared.db"
    Store(f"sqlite:///{path}", tmp_path / "blobs").dispose()  # the registry's tables
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON metadata_files "
            "BEGIN SELECT RAISE(ABORT, 'the disk is gone'); END"
        )
    return path


@pytest.mark.parametrize("exists", [False, True], ids=["new-folder", "empty-folder"])
def test_a_failed_init_leaves_nothing_and_can_be_run_again(refusing_database, exists, tmp_path):
    parent = tmp_path / "parent"
    folder = parent / "reg"
    if exists:  # made for the registry (a mount point, say): filled in place
        folder.mkdir(parents=True)
    url = f"sqlite:///{refusing_database}"
    with pytest.raises(Exception, match="the disk is gone"):
        init_registry(folder, root_keys=2, root_threshold=1, database_url=url)
    assert folder.is_dir() == exists and (not exists or list(folder.iterdir()) == [])
    assert [p.name for p in parent.iterdir()] == (["reg"] if exists else [])  # no temp folder
    with contextlib.closing(sqlite3.connect(refusing_database)) as db, db:
        db.execute("DROP TRIGGER refuse")
    paths = init_registry(folder, root_keys=2, root_threshold=1, database_url=url)
    assert paths.trusted_root.is_file() and (paths.keys / "root-2.pem").is_file()


def test_a_folder_an_older_interrupted_init_left_is_named(tmp_path, capsys):
    folder = tmp_path / "reg"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / "root-1.pem").write_text("a key an interrupted init wrote\n")
    text = refused(capsys, "registry", "init", str(folder), "--root-keys", "1")
    assert f"an interrupted `registry init` left {folder} (private root keys" in text
    assert "keys are never replaced" not in text
    # One killed outright leaves its hidden work folder beside the registry's.
    killed = tmp_path / ".fresh.init-0a1b2c3d"
    (killed / "keys").mkdir(parents=True)
    text = refused(capsys, "registry", "init", str(tmp_path / "fresh"), "--root-keys", "1")
    assert f"an interrupted `registry init` left {killed}" in text
    other = tmp_path / "notes"
    other.mkdir()
    (other / "README").write_text("mine\n")
    assert f"{other}: not empty" in refused(capsys, "registry", "init", str(other))
    assert [p.name for p in other.iterdir()] == ["README"]


def test_registry_init_in_an_empty_folder_makes_the_registry_there(tmp_path, capsys):
    folder = tmp_path / "reg"
    (folder / "lost+found").mkdir(parents=True)  # a fresh volume's mount point
    (tmp_path / "new").mkdir()  # the mode a plain new folder gets under this umask
    expected_mode = (tmp_path / "new").stat().st_mode & 0o777
    built = [
        "registry",
        "init",
        str(tmp_path / "built"),
        "--root-keys",
        "1",
        "--root-threshold",
        "1",
    ]
    assert main(built) == 0
    assert (tmp_path / "built").stat().st_mode & 0o777 == expected_mode
    args = ["registry", "init", str(folder), "--root-keys", "1", "--root-threshold", "1"]
    assert main(args) == 0
    assert RegistryPaths(folder).trusted_root.is_file()
    assert "already exists" in refused(capsys, *args)
    with pytest.raises(OutputExistsError, match="already exists"):
        init_registry(folder)


# -- serve: where it listens ---------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another server listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def vendor_keys(tmp_path) -> Path:
    return init_keys(tmp_path / "vendor-keys").path


@pytest.fixture
def service_args(registry, vendor_keys, tmp_path) -> list[str]:  # noqa: F811
    """``service serve`` options that pass every check of the command line."""
    return ["--db", str(tmp_path / "s.db"), "--registry", str(registry), "--keys", str(vendor_keys)]


def test_serve_on_a_busy_port_is_one_line_naming_it(
    registry,  # noqa: F811
    service_args,
    busy_port,
    tmp_path,
    capsys,
):
    from photoimmune.resolver import ManifestStore

    store = tmp_path / "manifests.db"
    ManifestStore(str(store)).dispose()
    for command in (
        ["registry", "serve", str(registry)],
        ["service", "serve", *service_args],
        ["manifests", "serve", "--db", str(store)],
    ):
        text = failed(capsys, *command, "--port", str(busy_port))
        assert f"--port {busy_port}: already in use on 127.0.0.1" in text
        assert "Errno" not in text and "INFO" not in text and "starting on" not in text


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("256.1.1.1", "not an address, nor a name this machine resolves"),
        ("192.0.2.1", "not an address of this machine"),  # TEST-NET-1: no one's interface
    ],
)
def test_serve_on_a_host_it_cannot_listen_on_is_bad_input(
    registry,  # noqa: F811
    service_args,
    host,
    says,
    capsys,
):
    port = str(free_port())
    for command in (["registry", "serve", str(registry)], ["service", "serve", *service_args]):
        text = refused(capsys, *command, "--host", host, "--port", port)
        assert f"--host {host}: {says}" in text and "Errno" not in text
    assert not Path(service_args[1]).exists()  # refused before the database was made


def test_service_serve_announces_itself_only_once_its_registry_answers(
    registry,  # noqa: F811
    vendor_keys,
    tmp_path,
    capsys,
):
    args = ["--db", str(tmp_path / "s.db"), "--keys", str(vendor_keys)]
    args += ["--registry", f"http://127.0.0.1:{free_port()}"]  # nothing listens there
    args += ["--root", str(registry / "root.json"), "--port", str(free_port())]
    text = failed(capsys, "service", "serve", *args)
    assert "registry unreachable" in text and "starting on" not in text
