"""Regression tests for issue 30's defects: each reproduces the attack, on loopback or in a
scratch folder, and checks it is refused.

None of them needs a model. Waits have generous timeouts and nothing asserts on
wall-clock time, so they hold on a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from photoimmune.cli import main
from photoimmune.registry.admin import (
    RemoteRegistry,
    add_vendor,
    init_registry,
    open_registry,
    publish,
)
from photoimmune.registry.errors import RegistryUnavailableError
from photoimmune.registry.keys import load_signer, write_key
from photoimmune.registry.server import create_app
from photoimmune.registry.service import RegistryPaths
from photoimmune.registry.storage import Store
from photoimmune.resolver.store import ManifestStore
from photoimmune.sdk.errors import DatabaseLocationError, DatabaseUnavailableError
from photoimmune.sdk.jobs.catalog import Catalog, CatalogError
from photoimmune.sdk.keys import KeyDir, init_keys
from photoimmune.sdk.serving import header_deadline_protocol
from photoimmune.service.store import ServiceStore

from .helpers import LoopbackServer

WAIT_S = 120.0  # how long a test waits for the server before it gives up (never asserted)


# -- shared set-up ----------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    """A registry folder with one vendor, ``acme``; no releases (none needs a model)."""
    paths = init_registry(tmp_path / "reg", root_keys=1, root_threshold=1)
    registry = open_registry(paths.root)
    acme = write_key(tmp_path / "acme.pem")
    add_vendor(registry, "acme", [acme.public_key], 1, [load_signer(paths.keys / "targets.pem")])
    return registry


class BodyCounter:
    """ASGI wrapper counting the request-body bytes the app actually pulled in."""

    def __init__(self, app) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope, receive, send) -> None:
        async def counted():
            message = await receive()
            self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@contextmanager
def serving(app) -> Iterator[int]:
    """``app`` under a real uvicorn server on a free loopback port; yields the port."""
    server = LoopbackServer(app)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def chunked_upload(port: int, vendor: str, total: int, headers: str = "") -> tuple[int, bytes]:
    """POST ``total`` bytes of multipart body in 64 KiB chunks; the server's (status, body).

    Sending stops as soon as the server answers or closes, as a real client's would.
    """
    boundary = "photoimmuneboundary"
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as conn:
        conn.sendall(
            (
                f"POST /vendors/{vendor}/releases HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Transfer-Encoding: chunked\r\n{headers}\r\n"
            ).encode()
        )
        preamble = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=metadata; "
            'filename="m.json"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        chunk = b"A" * 65536
        sent = 0
        try:
            for body in [preamble] + [chunk] * (total // len(chunk)):
                if select.select([conn], [], [], 0)[0]:
                    break  # the server has answered (or hung up): stop, as a client would
                conn.sendall(b"%x\r\n%s\r\n" % (len(body), body))
                sent += len(body)
            else:
                conn.sendall(f"\r\n--{boundary}--\r\n".encode())
                conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed on us; its answer is still in our receive buffer
        return _read_response(conn)


def _read_response(conn: socket.socket) -> tuple[int, bytes]:
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            more = conn.recv(65536)
            if not more:
                break
            data += more
    except ConnectionResetError:
        pass
    assert data.startswith(b"HTTP/1.1 "), f"no HTTP answer: {data[:200]!r}"
    return int(data.split()[1]), data.partition(b"\r\n\r\n")[2]


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 62  # no length: read until the server closes


# -- 1. upload limit bypass (high) -------------------------------------------------------

LIMIT = 1024 * 1024  # the test's upload limit: 1 MiB, so it sends a few MB, not 256 MiB


@pytest.mark.parametrize(
    "headers",
    ["Content-Length: 100\r\n", ""],
    ids=["chunked-with-a-lying-content-length", "chunked-without-content-length"],
)
def test_a_chunked_upload_is_cut_off_at_the_limit_whatever_the_headers(registry, headers):
    app = BodyCounter(create_app(registry.service, max_upload_bytes=LIMIT))
    with serving(app) as port:
        status, body = chunked_upload(port, "acme", 8 * LIMIT, headers)
    assert status == 413, body
    assert b"exceeds" in body and body.startswith(b"{")  # a JSON error, not a 500
    # The server stopped reading soon after the limit (one socket read past it at most),
    # instead of taking in all 8 MiB.
    assert app.received <= 2 * LIMIT


def test_an_unknown_vendor_is_refused_before_the_body_is_read(registry):
    app = BodyCounter(create_app(registry.service, max_upload_bytes=LIMIT))
    with serving(app) as port:
        status, body = chunked_upload(port, "nobody", LIMIT // 2, "Content-Length: 100\r\n")
    assert status == 404 and b"not a vendor of this registry" in body
    assert app.received == 0


def test_an_upload_that_stalls_is_dropped_at_the_deadline(registry):
    """A sender dripping bytes can't hold a write slot forever: its body has a deadline."""
    app = create_app(registry.service, body_deadline_s=0.5)
    with serving(app) as port, socket.create_connection(("127.0.0.1", port), WAIT_S) as conn:
        conn.sendall(
            b"POST /vendors/acme/releases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n3\r\n--b\r\n"
        )  # ... and nothing more
        status, body = _read_response(conn)
    assert status == 408 and b"longer than" in body


def test_a_connection_that_never_finishes_its_headers_is_closed_at_the_deadline(registry):
    """A slow-loris client can't hold a connection (one of the limited few) forever."""
    server = LoopbackServer(create_app(registry.service), http=header_deadline_protocol(0.5))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), WAIT_S) as conn:
            conn.sendall(b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n")  # no end
            assert conn.recv(1024) == b""  # closed by the server, unanswered
        with socket.create_connection(("127.0.0.1", server.port), WAIT_S) as conn:
            conn.sendall(b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _ = _read_response(conn)
            assert status == 200  # a whole request in time is answered...
            conn.sendall(b"GET /metadata/timestamp.json HTTP/1.1\r\n")  # ...the next, late
            assert conn.recv(1024) == b""
        with socket.create_connection(("127.0.0.1", server.port), WAIT_S) as conn:
            # refused before its body is read: a client dripping that body is dropped too
            conn.sendall(
                b"POST /vendors/nobody/releases HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b"
            )
            status, _ = _read_response(conn)
            assert status == 404
            assert conn.recv(1024) == b""
    finally:
        server.stop()


def test_writes_beyond_the_concurrency_cap_get_a_503(registry):
    """With every write slot taken, the next upload is told to come back, unread."""
    app = create_app(registry.service, max_concurrent_writes=0, max_concurrent_admin_writes=0)
    http = TestClient(app, raise_server_exceptions=False)
    response = http.post("/vendors/acme/releases", files={"metadata": ("m.json", b"{}")})
    assert response.status_code == 503 and "retry" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert http.post("/admin/targets", content=b"{}").status_code == 503


def test_release_verification_runs_off_the_event_loop(registry, monkeypatch):
    """TUF parsing and signature checks run in worker threads, so reads don't stall."""
    on_loop = {}

    def watch(name):
        real = getattr(registry.service, name)

        def spy(*args):
            try:
                asyncio.get_running_loop()
                on_loop[name] = True
            except RuntimeError:  # no event loop in this thread: a worker thread
                on_loop[name] = False
            return real(*args)

        monkeypatch.setattr(registry.service, name, spy)

    for name in ("check_vendor", "publish", "update_targets"):
        watch(name)
    http = TestClient(create_app(registry.service), raise_server_exceptions=False)
    assert http.post("/vendors/acme/releases", files={"metadata": ("m", b"x")}).status_code == 409
    assert http.post("/admin/targets", content=b"x").status_code == 409
    assert on_loop == {"check_vendor": False, "publish": False, "update_targets": False}


# -- 2. secrets briefly readable by everyone (high) ---------------------------------------


@pytest.fixture
def watched_modes(monkeypatch) -> dict[str, list[int]]:
    """Mode of every file as it is created and as it is moved into place, by final name.

    Run with umask 0, so a file that relies on the umask for its privacy shows up.
    """
    seen: dict[str, list[int]] = {}
    real_open = os.open

    def open_(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT:
            name = Path(path).name.removeprefix(".").split(".tmp")[0]
            seen.setdefault(name, []).append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd

    def moving(real):
        def move(src, dst, *args, **kwargs):
            seen.setdefault(Path(dst).name, []).append(stat.S_IMODE(os.stat(src).st_mode))
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(os, "open", open_)
    for name in ("link", "replace", "rename"):
        monkeypatch.setattr(os, name, moving(getattr(os, name)))
    old_umask = os.umask(0)
    yield seen
    os.umask(old_umask)


def _modes_of(seen: dict[str, list[int]], name: str) -> set[int]:
    """Modes seen for ``name`` itself and for its temporary files (``.NAME.xxxx``)."""
    return {mode for key, modes in seen.items() if key.startswith(name) for mode in modes}


def test_registry_keys_and_database_url_are_0600_from_their_first_byte(tmp_path, watched_modes):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    paths = init_registry(tmp_path / "reg", root_keys=2, root_threshold=1, database_url=url)
    write_key(tmp_path / "vendor" / "acme.pem")
    secrets = [paths.root / "database.url", tmp_path / "vendor" / "acme.pem"]
    secrets += [paths.keys / f"{r}.pem" for r in ("root-1", "root-2", "targets", "timestamp")]
    for secret in secrets:
        assert _modes_of(watched_modes, secret.name) == {0o600}, secret
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    # Public halves and the trust anchor stay readable by everyone.
    assert stat.S_IMODE((paths.keys / "targets.pub.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE(paths.trusted_root.stat().st_mode) == 0o644


def test_manifest_keys_are_0600_from_their_first_byte(tmp_path, watched_modes):
    keys = init_keys(tmp_path / "keys")
    for name in ("ca.key", "publisher.key", "vendor.key"):
        assert _modes_of(watched_modes, name) == {0o600}, name
        assert stat.S_IMODE((keys.path / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(keys.ca_cert.stat().st_mode) == 0o644


# -- 10. private keys in reprs and logs ----------------------------------------------------


def test_a_signer_is_named_in_reprs_and_logs_but_its_key_never_shown(tmp_path, caplog):
    keys = init_keys(tmp_path / "keys")
    signer = KeyDir(keys.path).signer("publisher")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("photoimmune.test").warning("signing with %s / %r", signer, signer)
    for text in (repr(signer), str(signer), f"{signer}", caplog.text, repr([signer])):
        assert "PRIVATE KEY" not in text
        assert "publisher.key" in text  # which key it is, so logs stay useful


# -- 11. database passwords in error messages ----------------------------------------------

SECRET_URL = "postgresql+psycopg://alice:S3cretPW@127.0.0.1:1/x"  # nothing listens on port 1


def test_an_unreachable_catalog_database_is_reported_without_its_password():
    with pytest.raises(CatalogError) as caught:
        Catalog(SECRET_URL)
    assert "S3cretPW" not in str(caught.value)
    assert "alice:***@127.0.0.1" in str(caught.value)  # still says which database


def test_catalog_add_prints_no_password(tmp_path, capsys):
    assert main(["catalog", "add", str(tmp_path), "--db", SECRET_URL]) != 0
    out = capsys.readouterr()
    assert "S3cretPW" not in out.out + out.err
    assert "127.0.0.1" in out.err


@pytest.mark.parametrize(
    ("open_store", "what"),
    [
        (lambda url, _: ManifestStore(url), "manifest store"),
        (lambda url, _: ServiceStore(url), "service database"),
        (lambda url, folder: Store(url, folder / "blobs"), "registry database"),
    ],
)
def test_every_store_names_its_database_without_its_password(open_store, what, tmp_path):
    with pytest.raises(DatabaseUnavailableError) as caught:
        open_store(SECRET_URL, tmp_path)
    text = str(caught.value)
    assert "S3cretPW" not in text and "alice:***@127.0.0.1" in text
    assert f"cannot open the {what}" in text and "its server runs" in text
    with pytest.raises(DatabaseLocationError) as caught:  # a driver not installed
        open_store(SECRET_URL.replace("psycopg", "pg8000"), tmp_path)
    assert "S3cretPW" not in str(caught.value) and "pip install" in str(caught.value)


@pytest.mark.parametrize("command", [["service", "key", "list"], ["catalog", "list"]])
def test_a_database_server_that_is_down_is_no_input_error(command, capsys):
    assert main([*command, "--db", SECRET_URL]) == 1  # nothing to fix in the command
    out = capsys.readouterr()
    assert "S3cretPW" not in out.out + out.err and "its server runs" in out.err
    assert ("catalog" in out.err) == (command[0] == "catalog")


def test_registry_init_on_a_database_that_is_down_writes_no_key(tmp_path, capsys):
    folder = tmp_path / "reg"
    assert main(["registry", "init", str(folder), "--db", SECRET_URL]) == 1
    assert "registry database" in capsys.readouterr().err
    assert not (folder / "keys").exists() and not (folder / "root.json").exists()
    assert main(["registry", "init", str(folder)]) == 0  # a second try is not blocked by keys
    assert (folder / "root.json").is_file()
    other = tmp_path / "other"  # onto the database of the registry just made
    assert main(["registry", "init", str(other), "--db", str(folder / "registry.db")]) == 2
    assert "holds another registry" in capsys.readouterr().err
    assert not (other / "keys").exists()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://alice:S3cretPW@127.0.0.1:abc/x",  # a port that is no number
        "sqlite:///c.db?timeout=abc",  # an argument the driver refuses
    ],
)
def test_a_malformed_database_url_is_bad_input(url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["catalog", "add", str(tmp_path), "--db", url]) == 2
    err = capsys.readouterr().err
    assert "not a database URL" in err and "S3cretPW" not in err
    assert "Traceback" not in err


# -- 15. huge version numbers --------------------------------------------------------------


@pytest.mark.parametrize("version", ["99999999999999999999", str(2**31), "²"])
def test_an_absurd_metadata_version_is_a_404_not_a_500(registry, version):
    http = TestClient(create_app(registry.service), raise_server_exceptions=False)
    response = http.get(f"/metadata/{version}.root.json")
    assert response.status_code == 404
    assert "no metadata file" in response.json()["detail"]
    assert http.get("/metadata/1.root.json").status_code == 200


# -- found by bench/registry_load.py: anonymous senders taking the upload slots -----------
#
# With 4 hostile senders beside 2 honest writers, honest publishes got 503s: posts to
# /admin/* (anyone can send them) and to a vendor's upload URL took the same write slots.

HELD = 3600.0  # body deadline for these tests: the stalled senders hold their slots


def release_folder(ref: str, folder: Path, seed: int = 0) -> Path:
    """A small, valid release folder (what `targets build` writes) without any model."""
    import hashlib
    import json

    import torch
    from safetensors.torch import save as save_safetensors

    from photoimmune.sdk.refs import ModelRef
    from photoimmune.sdk.targets import AttackTarget, EncoderSpec, TensorFile, WeightFingerprints

    data = save_safetensors(
        {"x_target": torch.full((1, 3, 8, 8), seed / 10.0), "z_target": torch.zeros(1, 4, 1, 1)}
    )
    target = AttackTarget(
        ref=ModelRef.parse(ref),
        fingerprints=WeightFingerprints(vae="a" * 64, denoiser=f"{seed:064x}"),
        encoder=EncoderSpec(resolution=8, latent_scaling="0.18215"),
        tensors=TensorFile(sha256=hashlib.sha256(data).hexdigest(), length=len(data)),
    )
    folder.mkdir(parents=True)
    (folder / "tensors.safetensors").write_bytes(data)
    (folder / "target.json").write_text(json.dumps(target.model_dump(mode="json")))
    return folder


class StalledPost:
    """A POST whose body stops half-way, holding whatever slot the server gave it."""

    def __init__(self, port: int, path: str, body: bytes, content_type: str = "") -> None:
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        half = len(body) // 2
        self.rest = body[half:]
        headers = f"Host: x\r\nContent-Length: {len(body)}\r\n"
        headers += f"Content-Type: {content_type}\r\n" if content_type else ""
        self.conn.sendall(f"POST {path} HTTP/1.1\r\n{headers}\r\n".encode() + body[:half])

    def answered(self) -> bool:
        return bool(select.select([self.conn], [], [], 0)[0])

    def finish(self) -> int:
        """Send the rest of the body; the server's status."""
        # One refused before its body was read may be closed: its answer is waiting.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.conn.sendall(self.rest)
        with self.conn:
            return _read_response(self.conn)[0]


@contextmanager
def stalled_posts(app: BodyCounter, port: int, count: int, *args) -> Iterator[list[StalledPost]]:
    """``count`` stalled posts, sent one at a time, each settled before the next: the
    server has either started reading its body (it holds a slot) or answered it. So
    exactly the first ones hold slots, whatever the timing; closed on the way out."""
    posts: list[StalledPost] = []
    try:
        for _ in range(count):
            before = app.received
            posts.append(post := StalledPost(port, *args))
            give_up = time.monotonic() + WAIT_S
            while app.received == before and not post.answered():
                assert time.monotonic() < give_up, "the server neither read nor answered a post"
                time.sleep(0.01)
        yield posts
    finally:
        for post in posts:
            post.conn.close()


def honest_remote(tmp_path: Path, port: int) -> RemoteRegistry:
    """The registry over HTTP as a vendor's tools see it, with no retries allowed."""
    return RemoteRegistry(
        f"http://127.0.0.1:{port}", RegistryPaths(tmp_path / "reg").trusted_root, retries=0
    )


def test_anonymous_admin_posts_never_take_the_slots_vendors_upload_with(registry, tmp_path):
    """4 anonymous senders holding /admin/* bodies open fill the admin slots only: an
    honest vendor publishes at its first attempt, and the flood is refused as what it is."""
    app = BodyCounter(create_app(registry.service, metadata_deadline_s=HELD))
    garbage = b'{"signed": ' + b" " * 4096
    with (
        serving(app) as port,
        stalled_posts(app, port, 2, "/admin/targets", garbage) as targets,
        stalled_posts(app, port, 2, "/admin/root", garbage) as root,
    ):
        hostile = targets + root
        folder = release_folder("acme/quick@1", tmp_path / "release")
        assert publish(honest_remote(tmp_path, port), "acme", folder, [acme_key(tmp_path)]) == 1
        busy = httpx.post(f"http://127.0.0.1:{port}/admin/targets", content=b"{}")
        assert busy.status_code == 503 and "admin writes" in busy.json()["detail"]
        assert busy.headers["retry-after"]
        statuses = [post.finish() for post in hostile]
    # The first two held the admin slots and were refused for their body once it came;
    # the other two were told to come back.
    assert statuses == [409, 409, 503, 503]


def test_a_flood_at_one_vendors_upload_url_leaves_room_for_the_others(registry, tmp_path):
    """Anyone can post to a real vendor's upload URL; one vendor name gets at most half the
    upload slots, so another vendor still publishes at its first attempt."""
    beta = write_key(tmp_path / "beta.pem")
    targets_key = load_signer(tmp_path / "reg" / "keys" / "targets.pem")
    add_vendor(registry, "beta", [beta.public_key], 1, [targets_key])
    app = BodyCounter(create_app(registry.service, body_deadline_s=HELD))
    junk = b'--b\r\nContent-Disposition: form-data; name=metadata; filename="m"\r\n\r\n'
    junk += b"x" * 4096 + b"\r\n--b--\r\n"
    form = "multipart/form-data; boundary=b"
    with (
        serving(app) as port,
        stalled_posts(app, port, 4, "/vendors/acme/releases", junk, form) as hostile,
    ):
        folder = release_folder("beta/quick@1", tmp_path / "release")
        assert publish(honest_remote(tmp_path, port), "beta", folder, [beta]) == 1
        url = f"http://127.0.0.1:{port}/vendors/acme/releases"
        busy = httpx.post(url, files={"metadata": ("m.json", b"{}")})
        assert busy.status_code == 503 and "for acme" in busy.json()["detail"]
        refused = hostile[2].finish()
        statuses = [post.finish() for post in hostile[:2]]
    assert statuses == [409, 409] and refused == 503


def test_admin_posts_and_uploads_that_cant_be_what_the_route_takes_are_refused_unread(
    registry,
):
    """What the headers already give away is refused before a write slot is taken."""
    app = BodyCounter(
        create_app(registry.service, max_concurrent_writes=0, max_concurrent_admin_writes=0)
    )
    http = TestClient(app, raise_server_exceptions=False)
    form = http.post("/admin/targets", files={"metadata": ("m.json", b"{}")})
    assert form.status_code == 415 and "not a form" in form.json()["detail"]
    big = http.post("/admin/root", content=b"x", headers={"Content-Length": str(10**7)})
    assert big.status_code == 413
    not_a_form = http.post("/vendors/acme/releases", content=b"{}")
    assert not_a_form.status_code == 415 and "multipart" in not_a_form.json()["detail"]
    assert app.received == 0


class Busy:
    """ASGI wrapper answering the first ``refusals`` uploads with 503 and Retry-After."""

    def __init__(self, app, refusals: int, retry_after: str = "7") -> None:
        self.app, self.refusals, self.retry_after = app, refusals, retry_after
        self.uploads = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/releases"):
            self.uploads += 1
            if self.uploads <= self.refusals:
                headers = {"Retry-After": self.retry_after}
                response = JSONResponse({"detail": "busy; retry"}, 503, headers=headers)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def acme_key(tmp_path: Path):
    """The vendor's key, as the ``registry`` fixture wrote it."""
    return load_signer(tmp_path / "acme.pem")


def test_a_remote_publish_retries_a_503_after_retry_after_then_succeeds(registry, tmp_path):
    app = Busy(create_app(registry.service), refusals=2)
    waits: list[float] = []
    remote = RemoteRegistry(
        "http://testserver",
        RegistryPaths(tmp_path / "reg").trusted_root,
        TestClient(app),
        sleep=waits.append,
    )
    folder = release_folder("acme/quick@1", tmp_path / "release")
    assert publish(remote, "acme", folder, [acme_key(tmp_path)]) == 1
    assert app.uploads == 3
    assert len(waits) == 2 and all(7 <= wait <= 7 * 1.25 for wait in waits)  # Retry-After: 7


def test_a_remote_publish_gives_up_after_a_few_retries_with_backoff(registry, tmp_path):
    app = Busy(create_app(registry.service), refusals=10**6, retry_after="0")
    waits: list[float] = []
    remote = RemoteRegistry(
        "http://testserver",
        RegistryPaths(tmp_path / "reg").trusted_root,
        TestClient(app),
        retries=3,
        backoff_s=2.0,
        sleep=waits.append,
    )
    folder = release_folder("acme/quick@1", tmp_path / "release")
    with pytest.raises(RegistryUnavailableError, match=r"busy.*after 4 attempts"):
        publish(remote, "acme", folder, [acme_key(tmp_path)])
    assert app.uploads == 4
    # Retry-After: 0, so the backoff decides: 2, 4, 8 s (and up to a quarter more, jitter)
    assert all(base <= wait <= base * 1.25 for wait, base in zip(waits, [2, 4, 8], strict=True))
