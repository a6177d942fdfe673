"""The registry's storage on both databases it supports: SQLite (the default) and a
real PostgreSQL server (see tests/postgres.py for where that comes from).

Covered: the Alembic migration on a server database, the lock that serialises
writers from separate engines (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite), concurrent vendors, and bytea round trips served to a
verifying TUF client over HTTP.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text
from tuf.api.metadata import Metadata, Snapshot

from photoimmune.cli import main
from photoimmune.registry.admin import LocalRegistry, add_vendor, init_registry, publish
from photoimmune.registry.client import RegistryClient
from photoimmune.registry.keys import generate_signer, load_signer
from photoimmune.registry.server import create_app
from photoimmune.registry.service import RegistryPaths, RegistryService
from photoimmune.registry.storage import MetadataFile, Store
from photoimmune.sdk.errors import DatabaseLocationError
from photoimmune.sdk.refs import ModelRef
from photoimmune.sdk.targets import AttackTarget, build_target, save_target


@pytest.fixture(scope="module")
def tiny_target() -> AttackTarget:
    return build_target("tiny-ldm@1")


def renamed(target: AttackTarget, ref: str) -> AttackTarget:
    """``target`` published under another name: same tensors, new descriptor."""
    copy = target.model_copy(update={"ref": ModelRef.parse(ref)})
    # save_target writes target._tensors; give the copy its own dict rather than a shared one.
    copy._tensors = dict(target._tensors)
    return copy


def saved(target: AttackTarget, ref: str, root: Path) -> tuple[Path, AttackTarget]:
    copy = renamed(target, ref)
    folder = root / ref.replace("/", "-").replace("@", "-")
    save_target(copy, folder)
    return folder, copy


def onboard(service: RegistryService, paths: RegistryPaths, vendor: str):
    """Delegate ``vendor`` to a fresh key; that key's signer."""
    signer = generate_signer()
    targets_key = load_signer(paths.keys / "targets.pem")
    add_vendor(LocalRegistry(service), vendor, [signer.public_key], 1, [targets_key])
    return signer


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("fresh_postgres_url")


def test_store_migrates_a_postgres_database(fresh_postgres_url, tmp_path):
    store = Store(fresh_postgres_url, tmp_path / "blobs")
    again = Store(fresh_postgres_url, tmp_path / "blobs")  # upgrading an up-to-date schema
    try:
        assert store.engine.dialect.name == "postgresql"
        tables = set(inspect(store.engine).get_table_names())
        assert {"metadata_files", "target_files", "repository_lock", "alembic_version"} <= tables
        with store.read() as session:
            assert session.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            lock_rows = session.execute(text("SELECT id FROM repository_lock")).scalars().all()
        assert lock_rows == [1]
        with store.write() as session:
            store.put_metadata(session, "root", 1, b"\x00\xffbinary")
        with again.read() as session:
            assert again.metadata(session, "root", 1) == b"\x00\xffbinary"
    finally:
        store.engine.dispose()
        again.engine.dispose()


def test_a_store_asked_for_an_existing_database_makes_none(tmp_path):
    typo = tmp_path / "typo.db"
    with pytest.raises(DatabaseLocationError, match=r"no such registry database; .*init --db"):
        Store(f"sqlite:///{typo}", tmp_path / "blobs", created_by="photoimmune registry init --db")
    assert not typo.exists() and not (tmp_path / "blobs").exists()


def test_registry_init_refusing_leaves_no_database(tmp_path, capsys):
    db = tmp_path / "registry.db"
    args = ["registry", "init", str(tmp_path / "reg"), "--db", str(db), "--root-keys", "1"]
    assert main([*args, "--root-threshold", "2"]) == 2
    assert "threshold 2" in capsys.readouterr().err
    assert not db.exists()  # --db is checked, never created, before the registry's checks


def test_publish_and_read_back_over_http(fresh_postgres_url, tmp_path, tiny_target):
    paths = init_registry(tmp_path / "reg", database_url=fresh_postgres_url)
    service = RegistryService.open(paths.root, database_url=fresh_postgres_url)
    try:
        assert not (paths.root / "registry.db").exists()  # nothing went to SQLite
        signer = onboard(service, paths, "acme")
        published = []
        for version in (1, 2):
            folder, target = saved(tiny_target, f"acme/m@{version}", tmp_path / "targets")
            assert publish(LocalRegistry(service), "acme", folder, [signer]) == version
            published.append(target)

        with TestClient(create_app(service)) as http:
            client = RegistryClient(
                "http://testserver",
                trusted_root=paths.trusted_root,
                cache_dir=tmp_path / "cache",
                http=http,
            )
            assert client.latest("acme/m") == ModelRef.parse("acme/m@2")
            assert set(client.releases()) == {t.ref for t in published}
            for target in published:
                fetched = client.get(target.ref)
                assert fetched.digest == target.digest
                assert fetched.tensor("z_target").equal(target.tensor("z_target"))
    finally:
        service.store.engine.dispose()


def test_concurrent_vendors_both_land(database_url, tmp_path, tiny_target):
    paths = init_registry(tmp_path / "reg", database_url=database_url)
    vendors = ("acme", "bolt")
    releases = 3
    # One service (own engine, own connection pool) per vendor, as if on two servers;
    # opened here because two first-time migrations of one database would race.
    services = {v: RegistryService.open(paths.root, database_url=database_url) for v in vendors}
    signers = {v: onboard(services[v], paths, v) for v in vendors}
    folders = {
        v: [saved(tiny_target, f"{v}/m@{n}", tmp_path / "targets")[0] for n in range(1, 4)]
        for v in vendors
    }
    barrier = threading.Barrier(len(vendors))
    errors: list[BaseException] = []

    def release_all(vendor: str) -> None:
        try:
            registry = LocalRegistry(services[vendor])
            barrier.wait(timeout=60)
            for n, folder in enumerate(folders[vendor], start=1):
                assert publish(registry, vendor, folder, [signers[vendor]]) == n
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=release_all, args=(v,)) for v in vendors]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)

        store = services["acme"].store
        with store.read() as session:
            snapshot = Metadata[Snapshot].from_bytes(store.latest(session, "snapshot").data)
            versions = {
                role: sorted(
                    session.scalars(
                        select(MetadataFile.version).where(MetadataFile.role == role)
                    ).all()
                )
                for role in ("snapshot", "timestamp")
            }
        for vendor in vendors:
            assert snapshot.signed.meta[f"{vendor}.json"].version == releases
        # bootstrap, two onboardings, six releases: one snapshot and one timestamp each
        expected = list(range(1, 1 + 1 + len(vendors) + len(vendors) * releases))
        assert versions["snapshot"] == expected
        assert versions["timestamp"] == expected
        assert snapshot.signed.version == expected[-1]
    finally:
        for service in services.values():
            service.store.engine.dispose()


def test_writers_on_separate_engines_serialise(database_url, tmp_path):
    # Concurrent publishes rarely overlap inside the critical section, so check the lock itself:
    # a second engine's write() must wait for the first one's commit.
    first = Store(database_url, tmp_path / "blobs")
    second = Store(database_url, tmp_path / "blobs")
    holding = threading.Event()
    events: list[str] = []
    seen: list[bytes | None] = []

    def other_writer() -> None:
        holding.wait(timeout=60)
        with second.write() as session:
            events.append("second acquired")
            seen.append(second.metadata(session, "root", 1))

    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        with first.write() as session:
            first.put_metadata(session, "root", 1, b"first")
            holding.set()
            thread.join(timeout=1.0)  # long enough for an unlocked writer to get in
            events.append("first committing")
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert events == ["first committing", "second acquired"]
        assert seen == [b"first"]  # and it reads what the first one committed
    finally:
        first.engine.dispose()
        second.engine.dispose()
