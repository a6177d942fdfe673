"""Publisher jobs: catalog, plan, resumable re-immunization, concurrent jobs, Ray engine.

Everything runs for real: SQLite files and a PostgreSQL server, the bundled tiny
model's targets from a local registry, c2pa signing, ``kill -9`` of a real
subprocess, a local Ray instance with logical GPUs. Images are small (48-64 px)
and attacks short (a few PGD steps): what is tested is the job machinery, not
the strength of the protection (tests/test_attacks.py covers that).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select, text, update

from photoimmune.registry.admin import local_registry, open_registry, publish
from photoimmune.registry.keys import load_signer
from photoimmune.resolver import ManifestStore
from photoimmune.sdk.errors import DatabaseLocationError, InputError
from photoimmune.sdk.io import load_image, save_image
from photoimmune.sdk.jobs import (
    Catalog,
    CatalogError,
    EngineError,
    JobSettings,
    RayEngine,
    WorkQueue,
    plan,
    run,
)
from photoimmune.sdk.jobs.catalog import SCHEMA, ImmunizedCopy
from photoimmune.sdk.jobs.planning import TargetKey, targets_key
from photoimmune.sdk.jobs.queue import WorkItem, _local_prefix
from photoimmune.sdk.jobs.runner import work_key
from photoimmune.sdk.keys import open_keys
from photoimmune.sdk.manifest import read_manifest
from photoimmune.sdk.samples import sample_pixels

MODEL = "photoimmune/tiny-ldm"
PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "motorcycle_left.png", "coins.png")
FAST = JobSettings(steps=3, threads=1)
CLI = [str(Path(sys.executable).parent / "photoimmune")]


def make_photos(folder: Path, n: int = 20) -> list[Path]:
    """``n`` distinct small photos: sample photos at several sizes and crops."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = sample_pixels(PHOTOS[i % len(PHOTOS)], 48 + 4 * (i // len(PHOTOS)))
        path = folder / f"photo{i:02d}.png"
        save_image(np.ascontiguousarray(pixels[i % 3 :]), path)
        paths.append(path)
    return paths


@pytest.fixture
def workspace(tmp_path):
    """20 photos, a catalog of them, a registry where tiny-ldm@1 is published, dev keys."""
    photos = make_photos(tmp_path / "photos")
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.add([tmp_path / "photos"])
    client = local_registry(tmp_path / "registry", ["tiny-ldm@1"])
    keys, _ = open_keys()
    return {
        "root": tmp_path,
        "photos": photos,
        "catalog": catalog,
        "client": client,
        "keys": keys,
        "out": tmp_path / "immunized",
    }


def ship_v2(ws) -> None:
    ws["client"] = local_registry(ws["root"] / "registry", ["tiny-ldm@1", "tiny-ldm@2"])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_verifies(path: Path, original: Path, target, keys) -> None:
    """The copy is trusted, bound to its pixels, protected against ``target``, within ε."""
    data = path.read_bytes()
    report = read_manifest(data, trust=keys.trust_anchor_pem())
    assert report.verdict == "trusted", (path, report.verdict)
    assert report.covers(str(target.ref), target.digest)
    delta = np.abs(
        load_image(data).pixels.astype(int) - load_image(original).pixels.astype(int)
    ).max()
    assert 0 < delta <= 8


# -- catalog --------------------------------------------------------------------------


def test_catalog_add_is_idempotent_skips_non_images_and_records_unreadable(tmp_path):
    photos = make_photos(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("not a photo")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "in" / "fake.png").write_bytes(b"plain text with an image suffix")
    catalog = Catalog(tmp_path / "c.db")

    first = catalog.add([tmp_path / "in"])
    assert sorted(first.added) == sorted(str(p) for p in photos)
    assert list(first.skipped) == [str(tmp_path / "in" / "notes.txt")]
    assert set(first.unreadable) == {str(tmp_path / "in" / n) for n in ("broken.jpg", "fake.png")}
    assert "not an image" in first.unreadable[str(tmp_path / "in" / "fake.png")]

    (tmp_path / "link.png").symlink_to(photos[0])
    again = catalog.add([tmp_path / "in", photos[0], tmp_path / "link.png"])
    # photos[0], named three ways (in its folder, by name, through a link), counts once.
    assert again.added == [] and again.updated == [] and again.unchanged == 5

    save_image(sample_pixels("coins.png", 40), photos[1], overwrite=True)
    changed = catalog.add([tmp_path / "in"])
    assert changed.updated == [str(photos[1])]
    records = {o.location: o for o in catalog.originals()}
    assert len(records) == 5
    assert records[str(photos[1])].sha256 == sha(photos[1])
    assert records[str(photos[1])].width == 40
    assert not records[str(tmp_path / "in" / "broken.jpg")].readable


def test_catalog_reports_missing_paths_rejects_remote_uris_and_bad_databases(tmp_path):
    catalog = Catalog(tmp_path / "c.db")
    make_photos(tmp_path / "here", 1)
    # One mistyped folder costs only itself: the others are catalogued.
    report = catalog.add([tmp_path / "nowhere", tmp_path / "here"])
    assert report.missing == {str(tmp_path / "nowhere"): "no such file or folder; check the path"}
    assert report.added == [str(tmp_path / "here" / "photo00.png")]
    with pytest.raises(InputError, match="only local files"):
        catalog.add(["s3://bucket/photos"])
    make_photos(tmp_path / "p", 1)
    assert len(catalog.add([(tmp_path / "p" / "photo00.png").as_uri()]).added) == 1
    # A wrong location is the caller's to fix (bad input); a server that is down is not.
    with pytest.raises(DatabaseLocationError, match="missing-folder does not exist; create it"):
        Catalog(tmp_path / "missing-folder" / "c.db")
    with pytest.raises(CatalogError, match=r"cannot open the catalog: .*its server runs"):
        Catalog("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_a_catalog_asked_to_exist_is_never_created(tmp_path):
    typo = tmp_path / "typo.db"
    with pytest.raises(DatabaseLocationError, match=r"no such catalog; .*`catalog add` creates"):
        Catalog(typo, created_by="catalog add")
    assert not typo.exists()
    Catalog(typo).dispose()  # creating one is the default
    Catalog(typo, created_by="catalog add").dispose()


def test_a_file_that_is_no_catalog_is_bad_input_and_left_as_it_was(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, " * 100)
    with pytest.raises(DatabaseLocationError, match=r"cannot open the catalog: .*check the path"):
        Catalog(notes)
    assert notes.read_text() == "not a database, " * 100
    with pytest.raises(DatabaseLocationError, match="is a folder"):
        Catalog(tmp_path)


def test_a_catalog_from_a_newer_photoimmune_says_to_upgrade(tmp_path):
    Catalog(tmp_path / "c.db").dispose()
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {SCHEMA.version_table} SET version_num = 'f00'"))
    engine.dispose()
    with pytest.raises(DatabaseLocationError, match=r"newer photoimmune .*'f00'.*upgrade"):
        Catalog(tmp_path / "c.db")


# -- plan and run ---------------------------------------------------------------------


def test_catalog_fully_reimmunized_after_v2_is_published(workspace):
    ws = workspace
    catalog, out = ws["catalog"], ws["out"]
    originals = {p: sha(p) for p in ws["photos"]}

    first = run(catalog, ws["client"], [MODEL], out_dir=out, settings=FAST)
    assert len(first.done) == 20 and not first.failed and first.targets == (f"{MODEL}@1",)
    assert plan(catalog, ws["client"], [MODEL]).images == ()

    ship_v2(ws)
    pending = plan(catalog, ws["client"], [MODEL])
    assert [t.ref for t in pending.targets] == [f"{MODEL}@2"]
    assert len(pending.images) == 20
    assert all(i.protected_against == (f"{MODEL}@1",) for i in pending.images)
    assert all(i.missing == (f"{MODEL}@2",) for i in pending.images)

    second = run(catalog, ws["client"], [MODEL], out_dir=out, settings=FAST)
    assert len(second.done) == 20 and not second.failed and second.remaining == 0
    v2 = ws["client"].get(f"{MODEL}@2")
    current = catalog.current_copies()
    by_location = {o.location: o for o in catalog.originals()}
    for photo in ws["photos"]:
        copy = current[by_location[str(photo)].id]
        assert copy.protected_against == (f"{MODEL}@2",)
        assert copy.sha256 == sha(Path(copy.path))
        # made from the original, not stacked on the v1 copy: within ε of the original
        assert_verifies(Path(copy.path), photo, v2, ws["keys"])
    assert {p: sha(p) for p in ws["photos"]} == originals  # originals untouched
    assert len(list(out.glob("*.png"))) == 40  # v1 copies kept, v2 copies beside them
    third = run(catalog, ws["client"], [MODEL], out_dir=out, settings=FAST)
    assert third.planned == 0 and third.up_to_date == 20 and third.done == []


def test_several_models_are_one_ensemble_under_one_budget(workspace, tiny_models):
    """A second subscribed model (weights given by folder): one δ protects against both."""
    from photoimmune.sdk.models.bundled import VENDOR
    from photoimmune.sdk.targets import build_target, save_target

    ws = workspace
    registry_dir = ws["root"] / "registry"
    release = ws["root"] / "quick-release"
    save_target(build_target(tiny_models[0], ref=f"{VENDOR}/quick-ldm@1"), release)
    publish(
        open_registry(registry_dir),
        VENDOR,
        release,
        [load_signer(registry_dir / "vendor-keys" / f"{VENDOR}.pem")],
    )
    ship_v2(ws)
    models = [MODEL, f"{VENDOR}/quick-ldm"]
    with pytest.raises(InputError, match="--weights photoimmune/quick-ldm="):
        run(ws["catalog"], ws["client"], models, out_dir=ws["out"], settings=FAST, limit=1)
    summary = run(
        ws["catalog"],
        ws["client"],
        models,
        out_dir=ws["out"],
        settings=FAST,
        limit=2,
        weights={f"{VENDOR}/quick-ldm": str(tiny_models[0])},
    )
    assert len(summary.done) == 2 and summary.remaining == 18
    path = Path(summary.done[0])
    report = read_manifest(path.read_bytes(), trust=ws["keys"].trust_anchor_pem())
    assert report.ok
    assert sorted(p.target_ref for p in report.assertion.protections) == sorted(
        [f"{MODEL}@2", f"{VENDOR}/quick-ldm@1"]
    )
    assert {p.eps for p in report.assertion.protections} == {"8/255"}
    original = next(p for p in ws["photos"] if path.name.startswith(p.stem))
    assert_verifies(path, original, ws["client"].get(f"{MODEL}@2"), ws["keys"])


def test_models_are_validated(workspace):
    ws = workspace
    for bad, message in [
        ([f"{MODEL}@2"], "not a version"),
        (["tiny-ldm"], "expected vendor/model"),
        ([], "no models"),
    ]:
        with pytest.raises(InputError, match=message):
            plan(ws["catalog"], ws["client"], bad)
    from photoimmune.registry.errors import UnknownReleaseError

    with pytest.raises(UnknownReleaseError, match="no releases"):
        plan(ws["catalog"], ws["client"], ["acme/unknown"])


def test_changed_or_missing_originals_fail_with_the_reason_and_nothing_else_stops(workspace):
    ws = workspace
    save_image(sample_pixels("coins.png", 50), ws["photos"][0], overwrite=True)
    ws["photos"][1].unlink()
    summary = run(ws["catalog"], ws["client"], [MODEL], out_dir=ws["out"], settings=FAST)
    assert len(summary.done) == 18
    assert "catalog add" in summary.failed[str(ws["photos"][0])]
    assert "cannot read the original" in summary.failed[str(ws["photos"][1])]
    # permanent failures are not retried by the next job unless asked, but still reported
    again = run(ws["catalog"], ws["client"], [MODEL], out_dir=ws["out"], settings=FAST)
    assert again.done == [] and set(again.failed) == set(summary.failed)
    ws["catalog"].add([ws["root"] / "photos"])  # the changed photo is catalogued again
    fixed = run(ws["catalog"], ws["client"], [MODEL], out_dir=ws["out"], settings=FAST)
    assert len(fixed.done) == 1


# -- crash safety ---------------------------------------------------------------------


def _done_count(db: Path) -> int:
    catalog = Catalog(db)
    try:
        with catalog.session() as session:
            return len(list(session.scalars(select(WorkItem).where(WorkItem.state == "done"))))
    finally:
        catalog.dispose()


def _cli_job(ws, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *CLI,
            "reimmunize",
            "--db",
            str(ws["root"] / "catalog.db"),
            "--registry",
            str(ws["root"] / "registry"),
            "--models",
            MODEL,
            "--out",
            str(ws["out"]),
            "--keys",
            str(ws["keys"].path),
            "--threads",
            "1",
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_kill_minus_9_mid_job_then_rerun_finishes_every_image_exactly_once(workspace):
    ws = workspace
    ship_v2(ws)
    db = ws["root"] / "catalog.db"
    killed_at = []
    for stop_after in (2, 7):
        job = _cli_job(ws, "--steps", "20")
        deadline = time.monotonic() + 300
        while _done_count(db) < stop_after and job.poll() is None:
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
        job.wait()
        killed_at.append(_done_count(db))
        assert job.returncode == -signal.SIGKILL
    assert 0 < killed_at[0] < killed_at[1] < 20, killed_at

    summary = run(ws["catalog"], ws["client"], [MODEL], out_dir=ws["out"], settings=FAST)
    assert not summary.failed
    assert len(summary.done) + len(summary.adopted) == 20 - killed_at[1]

    v2 = ws["client"].get(f"{MODEL}@2")
    copies = ws["catalog"].copies()
    assert len(copies) == 20  # one per image: none lost, none made twice
    assert len({c.original_id for c in copies}) == 20
    files = sorted(ws["out"].iterdir())
    assert sorted(Path(c.path) for c in copies) == files  # no stray or temporary files
    by_id = {o.id: Path(o.location) for o in ws["catalog"].originals()}
    for copy in copies:
        assert_verifies(Path(copy.path), by_id[copy.original_id], v2, ws["keys"])


def test_a_file_written_before_a_crash_is_adopted_not_redone(workspace):
    ws = workspace
    first = run(ws["catalog"], ws["client"], [MODEL], out_dir=ws["out"], settings=FAST, limit=3)
    path = Path(first.done[0])
    written = sha(path)
    # The state a kill -9 between "file written" and "recorded" leaves behind.
    with ws["catalog"].write() as session:
        copy = session.scalars(select(ImmunizedCopy).where(ImmunizedCopy.path == str(path))).one()
        item = session.scalars(select(WorkItem).where(WorkItem.copy_id == copy.id)).one()
        item.state, item.owner, item.copy_id = "leased", f"{_local_prefix()}999999:dead", None
        item.lease_expires = None
        session.delete(copy)
    (ws["out"] / f".{path.name}.abc123.tmp").write_bytes(b"half")  # and a torn temp file

    # Every copy the job makes or adopts is recorded in a manifest store too.
    store = ManifestStore(f"sqlite:///{ws['out'].parent / 'manifests.db'}")
    summary = run(
        ws["catalog"],
        ws["client"],
        [MODEL],
        out_dir=ws["out"],
        settings=FAST,
        on_copy=lambda location, data: store.add(data, source=location),
    )
    assert summary.adopted == [str(path)]
    assert len(summary.done) == 17
    assert store.count() == 18
    assert sha(path) == written
    assert not list(ws["out"].glob(".*.tmp"))


def test_a_foreign_file_at_the_output_path_is_never_overwritten(workspace):
    ws = workspace
    summary = run(ws["catalog"], ws["client"], [MODEL], out_dir=ws["out"], settings=FAST, limit=1)
    taken = Path(summary.done[0])
    with ws["catalog"].write() as session:
        session.execute(update(WorkItem).values(state="pending", copy_id=None))
        session.query(ImmunizedCopy).delete()
    stranger = taken.read_bytes()[:-1] + b"\x00"  # a tampered copy
    taken.write_bytes(stranger)
    again = run(ws["catalog"], ws["client"], [MODEL], out_dir=ws["out"], settings=FAST)
    assert "move it away" in again.failed[str(ws["photos"][0])]
    assert taken.read_bytes() == stranger
    assert len(again.done) == 19


def test_leases_expire_dead_owners_lose_theirs_and_finishing_needs_the_lease(workspace):
    from photoimmune.sdk.jobs.queue import NewCopy

    catalog = workspace["catalog"]
    key = targets_key([TargetKey(ref="x/y@1", digest="ab" * 32)])
    ids = [o.id for o in catalog.originals()][:4]
    a = WorkQueue(catalog, lease_seconds=60)
    b = WorkQueue(catalog, lease_seconds=60)
    assert a.enqueue(ids, key, [{"ref": "x/y@1", "digest": "ab" * 32}]) == 4
    assert a.enqueue(ids, key, []) == 0  # idempotent
    held = a.claim(3, key)
    assert [c.item_id for c in held] == ids[:3]
    # a's leases are live (a process that exists): b gets only the fourth item
    assert [c.item_id for c in b.claim(5, key)] == [ids[3]]
    assert b.claim(5, key) == []
    with catalog.write() as session:  # a hangs past its lease
        lapse = update(WorkItem).where(WorkItem.owner == a.owner).values(lease_expires=None)
        session.execute(lapse)
    stolen = b.claim(5, key)
    assert [c.item_id for c in stolen] == ids[:3]
    assert not a.complete(held[0], NewCopy(path="/x", sha256="0" * 64, protections=[]))
    assert a.fail(held[1], "late") == "lost"
    assert b.fail(stolen[0], "boom") == "pending"  # retried (second attempt of three)...
    (again,) = b.claim(5, key)
    assert again.attempts == 3
    assert b.fail(again, "boom") == "failed"  # ...until max_attempts
    # a kill -9'd job on this host: its process is gone, so its leases are void at once
    gone = f"{_local_prefix()}999999:dead"
    with catalog.write() as session:
        session.execute(update(WorkItem).where(WorkItem.id == ids[3]).values(owner=gone))
    (reclaimed,) = a.claim(5, key)
    assert reclaimed.item_id == ids[3] and reclaimed.attempts == 2
    a.release([ids[3]])  # released untried: the attempt is given back
    assert a.claim(5, key)[0].attempts == 2
    # an image whose jobs keep dying is failed, not claimed a fourth time
    with catalog.write() as session:
        session.execute(
            update(WorkItem).where(WorkItem.id == ids[3]).values(owner=gone, attempts=3)
        )
    assert b.claim(5, key) == []
    reasons = set(b.failures(key).values())
    assert "boom" in reasons and any("stopped 3 times" in r for r in reasons - {"boom"})
    # the cause only: the service returns it to HTTP clients, who have no CLI options
    assert not any("--" in r for r in reasons)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_another_hosts_lease_is_taken_only_once_it_expires(backend, tmp_path, request):
    from datetime import timedelta

    from photoimmune.sdk.database import utc_now

    url = (
        str(tmp_path / "c.db")
        if backend == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    make_photos(tmp_path / "p", 2)
    catalog = Catalog(url)
    catalog.add([tmp_path / "p"])
    ids = [o.id for o in catalog.originals()]
    queue = WorkQueue(catalog)
    queue.enqueue(ids, "k" * 64, [])
    now = utc_now()
    with catalog.write() as session:
        later, earlier = now + timedelta(seconds=60), now - timedelta(seconds=1)
        for item_id, expires in zip(ids, (later, earlier), strict=True):
            session.execute(
                update(WorkItem)
                .where(WorkItem.id == item_id)
                .values(state="leased", owner="elsewhere:1:2:x", lease_expires=expires, attempts=1)
            )
    assert [c.item_id for c in queue.claim(5, "k" * 64)] == [ids[1]]
    catalog.dispose()


# -- concurrency ----------------------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_jobs_share_the_work(workspace):
    ws = workspace
    ship_v2(ws)
    jobs = [_cli_job(ws, "--steps", "15") for _ in range(2)]
    outputs = [job.communicate(timeout=600) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err for _, err in outputs]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    done = [len(s["done"]) for s in summaries]
    assert sum(done) == 20 and min(done) > 0, done
    # shared, not duplicated: nobody computed an image another job was holding
    assert all(s["adopted"] == [] and s["lost_leases"] == 0 for s in summaries)
    assert not set(summaries[0]["done"]) & set(summaries[1]["done"])
    assert len(ws["catalog"].copies()) == 20
    with ws["catalog"].session() as session:
        finishers = set(session.scalars(select(WorkItem.finished_by)))
    assert len(finishers) == 2


def test_postgresql_catalog_runs_a_job_and_concurrent_claims_never_overlap(
    tmp_path, fresh_postgres_url
):
    make_photos(tmp_path / "photos", 6)
    catalog = Catalog(fresh_postgres_url)
    assert len(catalog.add([tmp_path / "photos"]).added) == 6
    client = local_registry(tmp_path / "registry", ["tiny-ldm@1"])
    summary = run(catalog, client, [MODEL], out_dir=tmp_path / "out", settings=FAST, limit=2)
    assert len(summary.done) == 2 and summary.remaining == 4
    key = work_key(plan(catalog, client, [MODEL]), FAST)
    claims: list[list] = [[], [], []]

    def claim(i: int) -> None:
        queue = WorkQueue(Catalog(fresh_postgres_url), owner=f"elsewhere:{i}:x")
        while got := queue.claim(1, key):
            claims[i] += got

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [c.item_id for got in claims for c in got]
    assert len(ids) == 4 and len(set(ids)) == 4
    catalog.dispose()


# -- Ray ------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_engine_matches_the_local_engine_byte_for_byte(tmp_path):
    import ray

    photos = make_photos(tmp_path / "photos", 6)
    client = local_registry(tmp_path / "registry", ["tiny-ldm@1", "tiny-ldm@2"])
    results = {}
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for engine in ("local", "ray"):
            catalog = Catalog(tmp_path / f"{engine}.db")
            catalog.add([tmp_path / "photos"])
            results[engine] = run(
                catalog,
                client,
                [MODEL],
                out_dir=tmp_path / engine,
                settings=JobSettings(steps=5, threads=1),
                engine=engine,
                workers=2,
            )
        # workers the cluster cannot place are refused up front, not left waiting
        with pytest.raises(EngineError, match="exceed the cluster's 2 GPUs"):
            RayEngine([client.get(f"{MODEL}@2")], JobSettings(), workers=3, cpus_per_worker=0.5)
    finally:
        ray.shutdown()
    local, distributed = results["local"], results["ray"]
    assert len(local.done) == len(distributed.done) == len(photos)
    for a, b in zip(sorted(local.done), sorted(distributed.done), strict=True):
        assert Path(a).name == Path(b).name
        assert np.array_equal(load_image(Path(a)).pixels, load_image(Path(b)).pixels)
    workers = distributed.by_worker
    assert len(workers) == 2 and sum(workers.values()) == len(photos)
    # each actor was given its own (logical) GPU by Ray
    assert sorted(name.rpartition("gpu=")[2] for name in workers) == ["0", "1"]


# -- CLI ------------------------------------------------------------------------------


def test_cli_catalog_add_list_and_a_dry_run(tmp_path):
    make_photos(tmp_path / "photos", 3)
    (tmp_path / "photos" / "readme.md").write_text("#")
    db = str(tmp_path / "c.db")
    local_registry(tmp_path / "registry", ["tiny-ldm@1"])
    add = subprocess.run(
        [*CLI, "catalog", "add", str(tmp_path / "photos"), "--db", db],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "3 added" in add.stdout and "1 skipped" in add.stdout
    assert "not an image" in add.stderr
    again = subprocess.run(
        [*CLI, "catalog", "add", str(tmp_path / "photos"), "--db", db, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(again.stdout)
    assert report["unchanged"] == 3 and list(report["skipped"]) == [
        str(tmp_path / "photos" / "readme.md")
    ]
    dry = subprocess.run(
        [*CLI, "reimmunize", "--db", db, "--registry", str(tmp_path / "registry"),
         "--models", MODEL, "--dry-run", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    planned = json.loads(dry.stdout)
    assert len(planned["images"]) == 3 and planned["targets"][0]["ref"] == f"{MODEL}@1"
    assert not (tmp_path / "immunized").exists()
    bad = subprocess.run(
        [*CLI, "reimmunize", "--db", db, "--registry", str(tmp_path / "registry"),
         "--models", f"{MODEL}@1"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "not a version" in bad.stderr
    listed = subprocess.run(
        [*CLI, "catalog", "list", "--db", db, "--json"], capture_output=True, text=True, check=True
    )
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 3 and all(r["protected_against"] == [] for r in rows)


def test_cli_runs_with_missing_or_unreadable_items_exit_non_zero_and_say_so(tmp_path):
    # Issue 31: `catalog add photos/ archive/2025/` aborted on the missing folder, and
    # `reimmunize` said "failed 0" and exited 0 with a truncated JPEG in the catalog.
    make_photos(tmp_path / "photos", 1)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    db = str(tmp_path / "c.db")
    local_registry(tmp_path / "registry", ["tiny-ldm@1"])
    add = subprocess.run(
        [*CLI, "catalog", "add", "photos/", "archive/2025/", "--db", db],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert add.returncode == 2, add.stderr
    assert "1 added" in add.stdout and "1 unreadable" in add.stdout and "1 missing" in add.stdout
    assert "archive/2025/: no such file or folder" in add.stderr
    job = subprocess.run(
        [*CLI, "reimmunize", "--db", db, "--registry", str(tmp_path / "registry"),
         "--models", MODEL, "--out", str(tmp_path / "immunized"), "--steps", "1",
         "--threads", "1", "--keys", str(tmp_path / "keys")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert job.returncode == 1, job.stderr
    assert f"unreadable {tmp_path / 'photos' / 'broken.jpg'}" in " ".join(job.stdout.split())
    assert "unreadable originals are not protected" in job.stdout
    assert len(list((tmp_path / "immunized").glob("*.png"))) == 1  # the readable one is done


@pytest.mark.slow
def test_cli_job_method_override_takes_that_methods_recommended_budget(tmp_path):
    # Issue 23 #5: jobs follow the target; --method picks the attack, and the target's
    # budget for it (16/255 for the diffusion attack), unless --eps says otherwise.
    save_image(sample_pixels("chelsea.png", 32), tmp_path / "photos" / "cat.png")
    db = str(tmp_path / "c.db")
    Catalog(db).add([tmp_path / "photos"])
    local_registry(tmp_path / "registry", ["tiny-ldm@1"])
    job = subprocess.run(
        [*CLI, "reimmunize", "--db", db, "--registry", str(tmp_path / "registry"),
         "--models", MODEL, "--out", str(tmp_path / "immunized"), "--method", "diffusion",
         "--steps", "1", "--threads", "1", "--keys", str(tmp_path / "keys"), "--json"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    summary = json.loads(job.stdout)
    assert (summary["method"], summary["eps"], summary["steps"]) == ("diffusion", "16/255", 1)
    (copy,) = Catalog(db).copies()
    assert (copy.protections[0].method, copy.protections[0].eps) == ("diffusion", "16/255")


# -- schema ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_exactly_the_models_schema_beside_a_registry(backend, tmp_path, request):
    """Alembic's tables equal the ORM's, and a catalog can share a registry's database."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from photoimmune.registry.storage import Store
    from photoimmune.sdk.jobs.catalog import Base

    url = (
        f"sqlite:///{tmp_path / 'shared.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    Store(url, tmp_path / "blobs")
    catalog = Catalog(url)
    with catalog.engine.connect() as connection:
        ours = Base.metadata.tables  # the registry's tables in the same database are not ours
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": SCHEMA.version_table,
                "compare_type": True,
                "include_name": lambda name, kind, _: kind != "table" or name in ours,
            },
        )
        assert compare_metadata(context, Base.metadata) == []
    Catalog(url).dispose()  # opening again is a no-op upgrade
    catalog.dispose()


def test_identical_originals_share_one_copy(tmp_path):
    photo = make_photos(tmp_path / "a", 1)[0]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / photo.name).write_bytes(photo.read_bytes())
    catalog = Catalog(tmp_path / "c.db")
    assert len(catalog.add([tmp_path / "a", tmp_path / "b"]).added) == 2
    client = local_registry(tmp_path / "registry", ["tiny-ldm@1"])
    summary = run(catalog, client, [MODEL], out_dir=tmp_path / "out", settings=FAST)
    assert len(summary.done) == 1 and summary.adopted == summary.done
    assert len(list((tmp_path / "out").iterdir())) == 1
    assert len(catalog.current_copies()) == 2
