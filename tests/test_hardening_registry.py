"""Regression tests for issue 30's registry defects (#7, #8, #9, #16, #18, #19): each
reproduces the attack or the outage on loopback or in a scratch folder.

None needs a model: releases carry small synthetic targets. Waits have generous
limits; the only time asserted is an upper bound on a deadline the test sets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as save_safetensors
from tuf.api.metadata import Metadata, TargetFile

from photoimmune.registry import metadata as tm
from photoimmune.registry.admin import (
    RemoteRegistry,
    add_vendor,
    init_registry,
    open_registry,
    publish,
)
from photoimmune.registry.client import RegistryClient
from photoimmune.registry.errors import (
    InvalidNameError,
    MetadataExpiredError,
    RegistryError,
    RegistryUnavailableError,
    UnknownVendorError,
)
from photoimmune.registry.keys import load_signer, write_key
from photoimmune.registry.server import create_app
from photoimmune.sdk.errors import OutputPathError, PhotoimmuneError
from photoimmune.sdk.refs import ModelRef
from photoimmune.sdk.targets import (
    AttackTarget,
    EncoderSpec,
    TensorFile,
    WeightFingerprints,
)

from .helpers import LoopbackServer

WAIT_S = 120.0  # how long a test waits for a server before it gives up (never asserted)


# -- shared set-up ----------------------------------------------------------------------


def fake_release(ref: str, folder: Path, seed: int = 0) -> Path:
    """A small, valid release folder (what `targets build` writes) without any model."""
    tensors = {
        "x_target": torch.full((1, 3, 8, 8), seed / 10.0),
        "z_target": torch.full((1, 4, 1, 1), float(seed)),
    }
    data = save_safetensors(tensors)
    target = AttackTarget(
        ref=ModelRef.parse(ref),
        fingerprints=WeightFingerprints(vae="a" * 64, denoiser=f"{seed:064x}"),
        encoder=EncoderSpec(resolution=8, latent_scaling="0.18215"),
        tensors=TensorFile(sha256=hashlib.sha256(data).hexdigest(), length=len(data)),
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tensors.safetensors").write_bytes(data)
    (folder / "target.json").write_text(json.dumps(target.model_dump(mode="json")))
    return folder


class Reg:
    """A registry folder with vendor ``acme``, its keys, and a way to publish releases."""

    def __init__(self, root: Path, vendor: str = "acme") -> None:
        self.root = root
        self.paths = init_registry(root / "reg", root_keys=1, root_threshold=1)
        self.registry = open_registry(self.paths.root)
        self.service = self.registry.service
        self.targets_key = load_signer(self.paths.keys / "targets.pem")
        self.vendor = vendor
        self.vendor_key = write_key(root / f"{vendor}.pem")
        add_vendor(self.registry, vendor, [self.vendor_key.public_key], 1, [self.targets_key])
        self.count = 0

    def publish(self, ref: str, seed: int = 0) -> int:
        self.count += 1
        folder = fake_release(ref, self.root / f"rel-{self.count}", seed)
        return publish(self.registry, self.vendor, folder, [self.vendor_key])

    def mirror(self, name: str = "mirror") -> Path:
        out = self.root / name
        shutil.rmtree(out, ignore_errors=True)
        self.service.export(out)
        return out

    def client(self, source, cache: str = "cache", **kwargs) -> RegistryClient:
        return RegistryClient(
            source, trusted_root=self.paths.trusted_root, cache_dir=self.root / cache, **kwargs
        )


@pytest.fixture
def reg(tmp_path) -> Reg:
    reg = Reg(tmp_path)
    reg.publish("acme/quick@1")
    return reg


@pytest.fixture
def server(reg) -> Iterator[LoopbackServer]:
    server = LoopbackServer(create_app(reg.service))
    server.start()
    yield server
    if server.running:
        server.stop()


# -- #7 a long-lived client refreshes on a schedule and on expiry -----------------------


def test_a_long_lived_client_sees_new_and_replaced_releases(reg, server):
    client = reg.client(server.url)
    first = client.get("acme/quick@1").digest
    assert str(client.latest("acme/quick")) == "acme/quick@1"
    reg.publish("acme/quick@2")
    reg.publish("acme/quick@1", seed=7)  # the vendor replaces @1's target
    # Within its refresh interval a client answers from the state it verified last...
    assert str(client.latest("acme/quick")) == "acme/quick@1"
    # ...and once the interval is over, its next query refreshes by itself.
    client.refresh_interval = 0.0
    assert str(client.latest("acme/quick")) == "acme/quick@2"
    replaced = client.get("acme/quick@1")
    assert replaced.digest != first
    assert replaced.fingerprints.denoiser == f"{7:064x}"
    assert str(client.identify(replaced.fingerprints)) == "acme/quick@1"


def test_a_long_lived_client_notices_when_its_timestamp_expires(reg):
    mirror = reg.mirror()
    ts = mirror / "metadata" / "timestamp.json"
    md = Metadata.from_bytes(ts.read_bytes())
    timestamp_key = load_signer(reg.paths.keys / "timestamp.pem")
    # A mirror frozen from now on: its timestamp runs out in a few seconds.
    expires = tm.expiry(timedelta(seconds=10))
    md.signed.expires = expires
    ts.write_bytes(tm.sign(md, [timestamp_key]))
    client = reg.client(mirror)  # the default interval (minutes) does not come round here
    assert str(client.latest("acme/quick")) == "acme/quick@1"
    give_up = time.monotonic() + WAIT_S
    while datetime.now(UTC) <= expires:
        assert time.monotonic() < give_up
        time.sleep(0.2)
    with pytest.raises(MetadataExpiredError, match="frozen mirror"):
        client.latest("acme/quick")
    # The registry signs a new timestamp: the very next query recovers.
    md.signed.version += 1
    md.signed.expires = tm.expiry(timedelta(days=1))
    ts.write_bytes(tm.sign(md, [timestamp_key]))
    assert str(client.latest("acme/quick")) == "acme/quick@1"


# -- #8 an outage is never remembered as "no releases" ----------------------------------


def test_an_outage_is_never_remembered_as_no_releases(reg, server):
    client = reg.client(server.url)
    assert client.vendors() == ["acme"]
    server.stop()
    with pytest.raises(RegistryUnavailableError):
        client.releases()  # acme's role was never fetched: no answer, rather than {}
    server.start()
    assert str(client.latest("acme/quick")) == "acme/quick@1"
    assert list(map(str, client.releases())) == ["acme/quick@1"]


def test_a_client_started_during_an_outage_works_once_the_registry_is_back(reg, server):
    server.stop()
    client = reg.client(server.url)
    with pytest.raises(RegistryUnavailableError):
        client.latest("acme/quick")
    server.start()
    assert str(client.latest("acme/quick")) == "acme/quick@1"


def test_a_registry_restarted_under_a_running_client(reg, server, caplog):
    client = reg.client(server.url, refresh_interval=0.0)  # refresh on every query
    digest = client.get("acme/quick@1").digest
    server.stop()
    # The last verified state is unexpired: queries keep answering from it, and say so.
    assert str(client.latest("acme/quick")) == "acme/quick@1"
    assert client.get("acme/quick@1").digest == digest  # from the cache, verified
    assert "refresh failed" in caplog.text
    reg.publish("acme/quick@2")  # published while the server was down
    server.start()
    assert str(client.latest("acme/quick")) == "acme/quick@2"


# -- #9 one refresh has one deadline, however slowly a server drips ----------------------


@contextmanager
def dripping_server(part: str, give_up_s: float = 45.0) -> Iterator[int]:
    """A server that answers every request one byte per second: in its ``part`` ("body":
    after complete headers; "headers": after the status line).

    It stops after ``give_up_s`` (closing the connection), so a client without a
    deadline fails this test by taking that long instead of hanging it.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    stop = threading.Event()
    start, drop = {
        "body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"{"),
        "headers": (b"HTTP/1.1 200 OK\r\nX-Drip: ", b"a"),
    }[part]

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(WAIT_S)
            request = b""
            while b"\r\n\r\n" not in request and (data := conn.recv(4096)):
                request += data
            conn.sendall(start)
            end = time.monotonic() + give_up_s
            while not stop.is_set() and time.monotonic() < end:
                try:
                    conn.sendall(drop)
                except OSError:
                    return  # the client hung up
                stop.wait(1.0)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(WAIT_S)
        listener.close()


@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_dripping_server_cannot_hold_a_refresh_past_its_deadline(reg, part):
    with dripping_server(part) as port:
        client = reg.client(f"http://127.0.0.1:{port}", refresh_deadline=3.0)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError, match="deadline"):
            client.refresh()
        assert time.monotonic() - started < 30.0  # 3 s deadline; generous for a busy machine
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError, match="deadline"):
            client.latest("acme/quick")  # queries refresh under the same deadline
        assert time.monotonic() - started < 30.0


# -- #16 vendor names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("..", "lowercase letters"),
        ("Bad", "lowercase letters"),
        ("a/b", "lowercase letters"),
        ("", "lowercase letters"),
        ("root", "reserved"),
        ("targets", "reserved"),
        ("snapshot", "reserved"),
        ("timestamp", "reserved"),
    ],
)
def test_bad_vendor_names_are_refused_saying_what_is_allowed(tmp_path, name, says):
    reg = Reg(tmp_path)
    with pytest.raises(InvalidNameError, match=says) as caught:
        add_vendor(reg.registry, name, [reg.vendor_key.public_key], 1, [reg.targets_key])
    assert isinstance(caught.value, PhotoimmuneError) and caught.value.exit_code == 2
    assert reg.registry.current("targets").signed.version == 2  # nothing was stored


@pytest.mark.parametrize("name", ["..", "Bad", "root"])
def test_cli_vendor_add_refuses_bad_names_without_a_traceback(tmp_path, name):
    reg = Reg(tmp_path)
    script = Path(sys.executable).with_name("photoimmune")
    args = ["registry", "vendor", "add", name, "--key", str(tmp_path / "acme.pub.pem")]
    result = subprocess.run(
        [str(script), *args, "--registry", str(reg.paths.root)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "vendor name" in result.stderr


# -- #18 target paths a server could never serve ----------------------------------------


def _release_with_extra_file(reg: Reg, path: str) -> tuple[bytes, dict[str, bytes]]:
    """acme's next role version listing a release plus one more file at ``path``."""
    folder = fake_release("acme/quick@2", reg.root / "extra")
    descriptor = (folder / "target.json").read_bytes()
    tensors = (folder / "tensors.safetensors").read_bytes()
    current = Metadata.from_bytes(reg.service.current("acme"))
    md = tm.vendor_release(current, descriptor, tensors, tm.LIFETIMES["vendor"])
    extra = b"anything"
    md.signed.targets[path] = TargetFile.from_data(path, extra, ["sha256"])
    files = {
        "acme/quick/2/target.json": descriptor,
        "acme/quick/2/tensors.safetensors": tensors,
        path: extra,
    }
    return tm.sign(md, [reg.vendor_key]), files


@pytest.mark.parametrize(
    "path", ["acme/%2e%2e/x/y", "acme/quick/2/%74arget.json", "acme/quick/2/a b", "acme/q/2/x?y"]
)
def test_target_paths_that_need_url_encoding_are_refused_at_publish(reg, path):
    data, files = _release_with_extra_file(reg, path)
    http = TestClient(create_app(reg.service))
    parts = [("metadata", ("metadata.json", data))]
    parts += [(p, (p.rpartition("/")[2], blob)) for p, blob in files.items()]
    response = http.post("/vendors/acme/releases", files=parts)
    assert 400 <= response.status_code < 500, response.text
    assert "no percent-encoding" in response.json()["detail"]
    # The rule holds wherever releases are accepted, and nothing was stored.
    with pytest.raises(RegistryError, match="no percent-encoding"):
        reg.service.publish("acme", data, files)
    assert Metadata.from_bytes(reg.service.current("acme")).signed.version == 1


# -- #19 the trusted root given to a client beats whatever its cache holds ---------------


def test_a_planted_cache_does_not_override_the_trusted_root(tmp_path, reg):
    other = Reg(tmp_path / "other", vendor="evil")
    other.publish("evil/model@1")
    shared = tmp_path / "shared-cache"
    # The other registry's client fills the cache (or an attacker plants those files).
    other_client = RegistryClient(
        other.mirror(), trusted_root=other.paths.trusted_root, cache_dir=shared
    )
    assert other_client.vendors() == ["evil"]
    # A client that trusts only `reg`'s root, pointed at the other registry's mirror:
    victim = RegistryClient(other.mirror(), trusted_root=reg.paths.trusted_root, cache_dir=shared)
    with pytest.raises(RegistryError):
        victim.vendors()
    # The same cache, the right registry: the planted state is replaced, not trusted.
    honest = RegistryClient(reg.mirror(), trusted_root=reg.paths.trusted_root, cache_dir=shared)
    assert honest.vendors() == ["acme"]
    assert str(honest.latest("acme/quick")) == "acme/quick@1"


def test_an_upload_answered_200_by_something_else_is_named_not_a_traceback():
    from .test_resolver_client import MisbehavingResolver

    for body in (b"<html>welcome</html>", b'{"version": "x"}'):
        with MisbehavingResolver(body) as url:
            registry = RemoteRegistry(url, b"{}")
            with pytest.raises(RegistryUnavailableError, match="not as a photoimmune registry"):
                registry.update_root(b"{}")


# -- a vendor the registry does not know, and paths the file system refuses --------------


def _photoimmune(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a child process, as a user runs it."""
    script = Path(sys.executable).with_name("photoimmune")
    return subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_publishing_as_an_unknown_vendor_is_refused_alike_by_a_folder_and_a_server(reg, server):
    key = write_key(reg.root / "stranger.pem")
    release = fake_release("stranger/model@1", reg.root / "stranger-release")
    said = {}
    for registry in (reg.registry, open_registry(server.url, trusted_root=reg.paths.trusted_root)):
        with pytest.raises(UnknownVendorError) as caught:
            publish(registry, "stranger", release, [key])
        said[type(registry).__name__] = str(caught.value)
    assert said["RemoteRegistry"] == said["LocalRegistry"], said
    assert "'stranger' is not a vendor of this registry" in said["RemoteRegistry"]
    assert "registry vendor add stranger" in said["RemoteRegistry"]
    # The CLI says it in one line, without a traceback.
    result = _photoimmune(
        "registry", "publish", str(release), "--key", str(reg.root / "stranger.pem"),
        "--registry", server.url, "--root", str(reg.paths.trusted_root),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [f"error: {said['RemoteRegistry']}"]


needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


@needs_proc
def test_a_registry_folder_the_file_system_refuses_is_named_as_asked(tmp_path):
    with pytest.raises(OutputPathError) as caught:
        init_registry(Path("/proc/reg"), root_keys=1, root_threshold=1)
    # The hidden folder it is built in is no name the user knows.
    assert str(caught.value).startswith("/proc/reg: "), caught.value
    assert ".init-" not in str(caught.value)
    result = _photoimmune("registry", "init", "/proc/reg")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {caught.value}"]


@needs_proc
@pytest.mark.parametrize("path", ["/proc/x.pem", "/proc/missing/x.pem"])
def test_a_key_path_the_file_system_refuses_is_bad_input(path):
    with pytest.raises(OutputPathError, match=f"^{path}: cannot create the key file"):
        write_key(Path(path))
    result = _photoimmune("registry", "keygen", path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith(f"error: {path}: ")


def test_probing_the_key_folder_leaves_no_file_behind(tmp_path):
    write_key(tmp_path / "keys" / "acme.pem")
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["acme.pem", "acme.pub.pem"]


def test_a_key_whose_public_half_cannot_be_written_leaves_no_private_half(tmp_path, monkeypatch):
    from photoimmune.registry import keys as registry_keys
    from photoimmune.sdk.errors import ImageWriteError

    real_write = registry_keys.atomic_write_bytes

    def disk_full_double(path, data, **options):  # the disk fills between the two halves
        if str(path).endswith(".pub.pem"):
            raise ImageWriteError(f"{path}: No space left on device")
        return real_write(path, data, **options)

    monkeypatch.setattr(registry_keys, "atomic_write_bytes", disk_full_double)
    with pytest.raises(ImageWriteError, match="No space left"):
        write_key(tmp_path / "acme.pem")
    assert list(tmp_path.iterdir()) == []  # a rerun finds the path free
    monkeypatch.setattr(registry_keys, "atomic_write_bytes", real_write)
    write_key(tmp_path / "acme.pem")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.pem", "acme.pub.pem"]
