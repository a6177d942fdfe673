"""The vendor's immunization service: API, keys and limits, durable jobs, CLI, fuzzing.

Everything runs for real: the bundled tiny model's target from a local registry,
SQLite files and a PostgreSQL server, c2pa signing with a development CA,
``kill -9`` of a real worker process, a local Ray instance, the ``photoimmune``
command in a subprocess. Images are small (32-48 px) and attacks short (3 PGD
steps): what is tested is the service, not the strength of the protection.
The web page in a real browser: tests/test_service_browser.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from photoimmune.sdk.errors import InputError
from photoimmune.sdk.io import load_image
from photoimmune.sdk.jobs.catalog import ImmunizedCopy
from photoimmune.sdk.jobs.queue import WorkItem
from photoimmune.sdk.keys import KeyDir
from photoimmune.sdk.manifest import read_manifest
from photoimmune.sdk.samples import sample_pixels
from photoimmune.service import Service, ServiceSettings, ServiceWorker, add_key, create_app
from photoimmune.service.apikeys import list_keys, revoke_keys
from photoimmune.service.serve import work
from photoimmune.service.store import ApiKey

from .helpers import WAIT_S, service_world

CLI = str(Path(sys.executable).parent / "photoimmune")
MODEL = "photoimmune/tiny-ldm"
SETTINGS = ServiceSettings(steps=3, max_sync_pixels=48 * 48, lease_seconds=30)


def photo_bytes(size: int = 40, name: str = "chelsea.png") -> bytes:
    out = io.BytesIO()
    from PIL import Image

    Image.fromarray(sample_pixels(name, size)).save(out, format="PNG")
    return out.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def world():
    """The shared registry (tiny-ldm@1) and demo-style key folder (CA, vendor key)."""
    registry, keys = service_world()
    return {"registry": registry, "keys": KeyDir(keys)}


def open_service(world, db: str, settings: ServiceSettings = SETTINGS) -> Service:
    return Service.open(db, world["registry"], world["keys"].path, settings)


@pytest.fixture
def service(world, tmp_path):
    opened = open_service(world, f"sqlite:///{tmp_path / 'service.db'}")
    yield opened
    opened.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_immunized(data: bytes, original: bytes, world, fmt: str = "PNG") -> None:
    """Trusted against the key folder's CA, bound to its pixels, covering tiny-ldm, within ε."""
    image = load_image(data)
    assert image.format == fmt
    report = read_manifest(data, trust=world["keys"].trust_anchor_pem(), pixels=image.pixels)
    assert report.verdict == "trusted", report
    assert report.protected_against == (f"{MODEL}@1",)
    delta = np.abs(image.pixels.astype(int) - load_image(original).pixels.astype(int)).max()
    assert 0 < delta <= 8


# -- the check, through the command line -------------------------------------


def test_cli_key_then_serve_immunizes_a_photo_that_verifies_as_trusted(world, tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    added = subprocess.run(
        [CLI, "service", "key", "add", "newsroom", "--db", db],
        capture_output=True,
        text=True,
        check=True,
    )
    key = added.stdout.split()[-1]
    assert key.startswith("pik_") and key not in json.dumps(
        [k.model_dump(mode="json") for k in list_keys(open_service(world, db).store)]
    )
    port = _free_port()
    args = ["--registry", str(world["registry"]), "--keys", str(world["keys"].path)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "0", "--steps", "3"]
    server = subprocess.Popen(
        [CLI, "service", "serve", "--db", db, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url, server)
        photo = photo_bytes(40, "astronaut.png")
        files = {"image": ("held-out.png", photo, "image/png")}
        answer = httpx.post(f"{url}/v1/immunize", files=files, headers=bearer(key), timeout=WAIT_S)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        out = tmp_path / "immunized.png"
        out.write_bytes(answer.content)
        verified = subprocess.run(
            [CLI, "verify", str(out), "--trust", str(world["keys"].ca_cert)],
            capture_output=True,
            text=True,
        )
        assert verified.returncode == 0 and "trusted" in verified.stdout, verified.stdout
        assert_immunized(answer.content, photo, world)

        no_key = httpx.post(f"{url}/v1/immunize", files=files, timeout=WAIT_S)
        assert no_key.status_code == 401 and "Bearer" in no_key.json()["error"]
        text = {"image": ("notes.txt", b"just some text, not a photo", "text/plain")}
        refused = httpx.post(f"{url}/v1/immunize", files=text, headers=bearer(key), timeout=WAIT_S)
        assert 400 <= refused.status_code < 500 and "not an image" in refused.json()["error"]
        page = httpx.get(url, timeout=WAIT_S)
        assert page.status_code == 200 and 'type="file"' in page.text
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(WAIT_S)


def test_sigterm_stops_the_service_and_its_worker_processes(world, tmp_path):
    port = _free_port()
    args = ["--registry", str(world["registry"]), "--keys", str(world["keys"].path)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    db = f"sqlite:///{tmp_path / 'term.db'}"
    server = subprocess.Popen([CLI, "service", "serve", "--db", db, *args])
    _wait_for(f"http://127.0.0.1:{port}", server)
    children = _children(server.pid)
    assert children  # the worker (and multiprocessing's resource tracker)
    server.send_signal(signal.SIGTERM)
    server.wait(WAIT_S)
    give_up = time.monotonic() + WAIT_S
    while any(Path(f"/proc/{pid}").exists() for pid in children):
        assert time.monotonic() < give_up, f"orphaned: {children}"
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux: read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen) -> None:
    give_up = time.monotonic() + WAIT_S
    while True:
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        assert time.monotonic() < give_up, "the service did not start"
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)


# -- the API, in process ----------------------------------------------------------------


def test_bad_requests_get_4xx_json_that_says_what_to_do(service, world):
    http = TestClient(create_app(service))
    key = add_key(service.store, "tests", rate_per_minute=1000)
    photo = photo_bytes(32)

    def post(data: bytes = photo, path: str = "/v1/immunize", **fields: Any) -> httpx.Response:
        files = {"image": ("photo.png", data, "image/png")}
        return http.post(path, files=files, data=fields, headers=bearer(key))

    two = [("image", ("a.png", photo, "image/png")), ("image", ("b.png", photo, "image/png"))]

    cases = {
        "not an image": (post(b"%PDF-1.7 not a photo"), 400),
        "decompression bomb": (post(bomb_png()), 413),
        "unknown model": (post(models="acme/nope"), 422),
        "above this service's maximum": (post(eps="32/255"), 422),
        "is not a number": (post(eps="lots"), 400),
        "POST /v1/jobs": (post(photo_bytes(64)), 413),  # over max_sync_pixels
        "choose one of": (post(format="gif"), 422),
        "Bearer": (http.post("/v1/immunize", files={"image": ("a.png", photo)}), 401),
        "gives image more than once": (http.post("/v1/jobs", files=two, headers=bearer(key)), 400),
        "gives eps more than once": (post(path="/v1/jobs", eps=["8/255", "4/255"]), 400),
        "not one the service issued": (http.get("/v1/jobs/x", headers=bearer("pik_nope")), 401),
        "no job": (http.get("/v1/jobs/nope", headers=bearer(key)), 404),
    }
    cases["format"] = cases.pop("choose one of")  # pydantic's wording names the field
    for expected, (answer, status) in cases.items():
        assert answer.status_code == status, (expected, answer.status_code, answer.text)
        assert expected in answer.json()["error"], (expected, answer.json())
    too_big = TestClient(
        create_app(open_service(world, service.store.url, ServiceSettings(max_upload_bytes=1000)))
    )
    answer = too_big.post("/v1/jobs", files={"image": ("a.png", photo)}, headers=bearer(key))
    assert answer.status_code == 413 and "over" in answer.json()["error"]
    assert service.store.catalog.originals() == []  # nothing refused was queued
    # an unauthenticated request learns nothing about its upload, repeated parts included
    assert http.post("/v1/jobs", files=two).status_code == 401


def test_weights_that_are_not_the_latest_release_are_refused_at_start_up(world, tmp_path):
    db = f"sqlite:///{tmp_path / 'service.db'}"
    wrong = SETTINGS.model_copy(update={"weights": {MODEL: "tiny-ldm@2"}})  # the registry holds @1
    service = open_service(world, db, wrong)  # as each worker opens it: no check there
    try:
        refused = rf"weights {MODEL}=tiny-ldm@2 \(--weights, weights=\): .* not {MODEL}@1"
        with pytest.raises(InputError, match=refused):
            service.offer.check_weights()  # as `serve` does, once, before its workers start
    finally:
        service.close()
    right = open_service(world, db, SETTINGS.model_copy(update={"weights": {MODEL: "tiny-ldm@1"}}))
    try:
        right.offer.check_weights()
        assert right.offer.models() == [MODEL]
    finally:
        right.close()


def test_keys_are_hashed_revocable_rate_limited_and_quota_bound(service):
    http = TestClient(create_app(service))
    key = add_key(service.store, "limited", rate_per_minute=2, quota_images=3)
    with service.store.read() as session:
        stored = session.scalar(select(func.count()).where(ApiKey.key_sha256 == key))
    assert stored == 0  # the key itself is nowhere in the database
    photo = photo_bytes(32)
    files = {"image": ("photo.png", photo, "image/png")}
    first = http.post("/v1/jobs", files=files, headers=bearer(key))
    second = http.post("/v1/jobs", files=files, headers=bearer(key))
    third = http.post("/v1/jobs", files=files, headers=bearer(key))
    assert (first.status_code, second.status_code) == (202, 202)
    assert third.status_code == 429 and int(third.headers["Retry-After"]) > 0
    assert "requests a minute" in third.json()["error"]
    service.limiter = type(service.limiter)()  # a new minute: the quota still holds
    fourth = http.post("/v1/jobs", files=files, headers=bearer(key))
    fifth = http.post("/v1/jobs", files=files, headers=bearer(key))
    assert fourth.status_code == 202
    assert fifth.status_code == 429 and "quota of 3 images" in fifth.json()["error"]
    # two clients sending the same photo with the same settings share one work item
    assert first.json()["id"] != second.json()["id"]
    with service.store.read() as session:
        assert session.scalar(select(func.count()).select_from(WorkItem)) == 1
    assert revoke_keys(service.store, "limited") == 1
    revoked = http.get(first.json()["url"], headers=bearer(key))
    assert revoked.status_code == 403 and "revoked" in revoked.json()["error"]
    other = add_key(service.store, "other")
    assert http.get(first.json()["url"], headers=bearer(other)).status_code == 404


def test_a_key_with_a_rate_or_quota_under_one_is_refused_naming_the_parameter():
    from photoimmune.service.store import ServiceStore

    store = ServiceStore("sqlite://")  # a library caller: no CLI options to name
    with pytest.raises(InputError, match=r"^rate_per_minute= must be at least 1"):
        add_key(store, "newsroom", rate_per_minute=0)
    with pytest.raises(InputError, match=r"^quota_images= must be at least 1"):
        add_key(store, "newsroom", quota_images=0)
    assert list_keys(store) == []  # refused before anything was stored
    store.dispose()


# -- durable jobs -------------------------------------------------------------------------


def test_a_killed_workers_job_is_finished_exactly_once_and_survives_a_restart(world, tmp_path):
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    service = open_service(world, db)
    http = TestClient(create_app(service))
    key = add_key(service.store, "jobs")
    photo = photo_bytes(56)  # over max_sync_pixels: a job
    files = {"image": ("big.png", photo, "image/png")}
    submitted = http.post("/v1/jobs", files=files, data={"format": "webp"}, headers=bearer(key))
    assert submitted.status_code == 202 and submitted.headers["Location"] == submitted.json()["url"]
    job = submitted.json()
    queued = http.get(job["url"], headers=bearer(key)).json()
    assert (queued["state"], queued["queued_ahead"], queued["attempts"]) == ("queued", 0, 0)
    assert http.get(job["result_url"], headers=bearer(key)).status_code == 409

    # a worker process takes the job, and is killed while it holds the lease
    import multiprocessing

    args = (db, str(world["registry"]), str(world["keys"].path), SETTINGS.model_dump_json())
    victim = multiprocessing.get_context("spawn").Process(target=work, args=args)
    victim.start()
    give_up = time.monotonic() + WAIT_S
    while http.get(job["url"], headers=bearer(key)).json()["state"] != "running":
        assert victim.is_alive() and time.monotonic() < give_up
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    service.close()

    # the service restarts; the next worker takes the dead one's job over and finishes it
    restarted = open_service(world, db)
    http = TestClient(create_app(restarted))
    worker = ServiceWorker(restarted.store, restarted.offer, restarted.signer, SETTINGS)
    assert worker.run_once() == 1
    assert worker.run_once() == 0  # nothing left: finished once, not twice
    worker.engines.close()
    done = http.get(job["url"], headers=bearer(key)).json()
    assert (done["state"], done["attempts"], done["result_url"]) == ("done", 2, job["result_url"])
    result = http.get(job["result_url"], headers=bearer(key))
    assert result.status_code == 200 and result.headers["content-type"] == "image/webp"
    assert_immunized(result.content, photo, world, fmt="WEBP")
    with restarted.store.read() as session:
        assert session.scalar(select(func.count()).select_from(ImmunizedCopy)) == 1
    restarted.close()


# -- PostgreSQL, Ray, the key commands ----------------------------------------------------


def queue_a_job(service: Service, size: int = 32) -> tuple[TestClient, str, dict, bytes]:
    http = TestClient(create_app(service))
    key = add_key(service.store, "queued")
    photo = photo_bytes(size, "coffee.png")
    files = {"image": ("photo.png", photo, "image/png")}
    answer = http.post("/v1/jobs", files=files, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    return http, key, answer.json(), photo


def test_jobs_on_postgresql_are_finished_by_a_worker(world, fresh_postgres_url):
    service = open_service(world, fresh_postgres_url)
    http, key, job, photo = queue_a_job(service)
    worker = ServiceWorker(service.store, service.offer, service.signer, SETTINGS)
    assert worker.run_once() == 1
    worker.engines.close()
    assert http.get(job["url"], headers=bearer(key)).json()["state"] == "done"
    assert_immunized(http.get(job["result_url"], headers=bearer(key)).content, photo, world)
    service.close()


@pytest.mark.slow
def test_a_worker_on_ray_finishes_jobs(world, tmp_path):
    import ray

    settings = SETTINGS.model_copy(update={"engine": "ray", "workers": 1})
    service = open_service(world, f"sqlite:///{tmp_path / 'ray.db'}", settings)
    http, key, job, photo = queue_a_job(service)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        worker = ServiceWorker(service.store, service.offer, service.signer, settings)
        assert worker.run_once() == 1
        engine = next(iter(worker.engines._engines.values()))
        assert type(engine).__name__ == "RayEngine"
        worker.engines.close()
    finally:
        ray.shutdown()
    with service.store.read() as session:
        item = session.scalars(select(WorkItem)).one()
        assert item.state == "done" and item.finished_by == worker.queue.owner
    assert_immunized(http.get(job["result_url"], headers=bearer(key)).content, photo, world)
    service.close()


def test_key_commands_add_list_and_revoke(tmp_path, capsys):
    from photoimmune.cli import main

    db = str(tmp_path / "keys.db")
    assert main(["service", "key", "add", "alice", "--db", db, "--quota", "5"]) == 0
    key = capsys.readouterr().out.split()[-1]
    assert main(["service", "key", "list", "--db", db]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "active" in listed and key not in listed
    assert main(["service", "key", "revoke", "alice", "--db", db]) == 0
    assert main(["service", "key", "list", "--db", db]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["service", "key", "revoke", "alice", "--db", db]) == 2
    assert "no active key named" in capsys.readouterr().err


# -- the service's database ----------------------------------------------------------


def test_serve_refuses_bad_options_before_it_makes_a_database(world, tmp_path, capsys):
    from photoimmune.cli import main

    db = tmp_path / "s.db"
    where = ["--registry", str(world["registry"]), "--keys", str(world["keys"].path)]
    weights = ["--weights", f"{MODEL}={tmp_path / 'no-weights'}"]
    assert main(["service", "serve", "--db", str(db), *where, *weights]) == 2
    assert "--weights" in capsys.readouterr().err
    assert not db.exists()  # refused before the database was made, not after
    other = ["--weights", f"{MODEL}=tiny-ldm@2"]  # weights, but of another model's release
    assert main(["service", "serve", "--db", str(db), *where, *other]) == 2
    assert "--weights" in capsys.readouterr().err
    assert not db.exists()


def test_serve_names_the_service_database_when_its_server_is_down(world, capsys):
    from photoimmune.cli import main

    secret = "postgresql+psycopg://alice:S3cretPW@127.0.0.1:1/x"  # nothing listens on port 1
    where = ["--registry", str(world["registry"]), "--keys", str(world["keys"].path)]
    assert main(["service", "serve", "--db", secret, *where]) == 1
    err = capsys.readouterr().err
    assert "cannot open the service database" in err and "catalog" not in err
    assert "S3cretPW" not in err and "alice:***@127.0.0.1" in err


def test_a_store_asked_for_an_existing_database_makes_none(tmp_path):
    from photoimmune.sdk.errors import DatabaseLocationError
    from photoimmune.service.store import ServiceStore

    typo = tmp_path / "typo.db"
    with pytest.raises(DatabaseLocationError, match="no such service database"):
        ServiceStore(str(typo), created_by="photoimmune service key add")
    assert not typo.exists()
    ServiceStore(str(typo)).dispose()  # serving and `key add` create it
    store = ServiceStore(str(typo), created_by="photoimmune service key add")
    assert store.catalog.engine is store.engine  # one database, one engine
    store.dispose()
