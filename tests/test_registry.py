"""The registry against the attacks TUF exists for, in the style of python-tuf's
repository simulator: a real registry signs real metadata, a *mirror* (a static
export) is what clients read, and each test plays an attacker who controls the
mirror (and, where the attack needs it, some keys), then checks the client
refuses with the specific error.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tuf.api.metadata import Metadata

from photoimmune.registry import metadata as tm
from photoimmune.registry.admin import (
    RemoteRegistry,
    add_vendor,
    init_registry,
    open_registry,
    publish,
    rotate_root,
)
from photoimmune.registry.client import RegistryClient
from photoimmune.registry.errors import (
    MetadataExpiredError,
    MetadataRollbackError,
    MixAndMatchError,
    OversizedDataError,
    RegistryUnavailableError,
    ReleaseRejectedError,
    SignatureThresholdError,
    TamperedTargetError,
    UnknownReleaseError,
    UnknownVendorError,
)
from photoimmune.registry.keys import generate_signer, load_signer, write_key
from photoimmune.registry.server import create_app
from photoimmune.sdk.refs import ModelRef
from photoimmune.sdk.targets import build_target, save_target


@pytest.fixture(scope="module")
def base_target(tiny_models):
    return build_target(tiny_models[0], ref="acme/quick@1")


def release(base_target, ref: str, folder: Path) -> Path:
    """The base target re-labelled as ``ref``, saved like `targets build` would."""
    save_target(base_target.model_copy(update={"ref": ModelRef.parse(ref)}), folder)
    return folder


class Repo:
    """A registry plus the keys an attacker might hold, and a mirror to tamper with."""

    def __init__(self, root: Path, base_target) -> None:
        self.root = root
        self.base = base_target
        self.paths = init_registry(root / "reg", root_keys=2, root_threshold=2)
        self.registry = open_registry(root / "reg")
        self.service = self.registry.service
        self.keys = {
            name: load_signer(self.paths.keys / f"{name}.pem")
            for name in ("root-1", "root-2", "targets", "snapshot", "timestamp")
        }
        self.acme = write_key(root / "acme.pem")
        add_vendor(self.registry, "acme", [self.acme.public_key], 1, [self.keys["targets"]])
        self.count = 0

    def publish(self, ref: str, signers=None, vendor: str = "acme") -> int:
        self.count += 1
        folder = release(self.base, ref, self.root / f"rel-{self.count}")
        return publish(self.registry, vendor, folder, signers or [self.acme])

    def mirror(self, name: str = "mirror") -> Path:
        out = self.root / name
        shutil.rmtree(out, ignore_errors=True)
        self.service.export(out)
        return out

    def client(self, source: Path | str, cache: str = "cache", **kwargs) -> RegistryClient:
        return RegistryClient(
            source, trusted_root=self.paths.trusted_root, cache_dir=self.root / cache, **kwargs
        )

    def resign(self, path: Path, role_key: str, **changes) -> None:
        """Rewrite a mirror's metadata file with changed fields, validly signed by ``role_key``."""
        md = Metadata.from_bytes(path.read_bytes())
        for field, value in changes.items():
            setattr(md.signed, field, value)
        path.write_bytes(tm.sign(md, [self.keys[role_key]]))


@pytest.fixture
def repo(tmp_path, base_target) -> Repo:
    repo = Repo(tmp_path, base_target)
    repo.publish("acme/quick@1")
    return repo


def newest(mirror: Path, role: str) -> Path:
    files = sorted(
        (mirror / "metadata").glob(f"*.{role}.json"), key=lambda p: int(p.name.split(".")[0])
    )
    return files[-1]


# -- what honest use looks like ---------------------------------------------------------


def test_client_lists_orders_and_verifies_releases(repo):
    repo.publish("acme/quick@2")
    repo.publish("acme/quick@10")
    client = repo.client(repo.mirror())
    assert client.vendors() == ["acme"]
    assert client.models() == ["acme/quick"]
    assert client.versions("acme/quick") == ["1", "2", "10"]  # numeric, not lexical
    assert str(client.latest("acme/quick")) == "acme/quick@10"
    target = client.get("acme/quick@2")
    assert str(target.ref) == "acme/quick@2"
    assert target.tensor("z_target").shape == repo.base.tensor("z_target").shape
    assert str(client.identify(repo.base.fingerprints)) == "acme/quick@10"  # newest of equals
    # A loaded pipeline (any dtype) is recognised by its weights alone.
    import torch

    from photoimmune.sdk.models import load_pipeline
    from photoimmune.sdk.targets import WeightFingerprints, pipeline_fingerprints

    pipe = load_pipeline(repo.base.model_path, dtype=torch.float16)
    assert str(client.identify(pipeline_fingerprints(pipe))) == "acme/quick@10"
    assert client.identify(WeightFingerprints(vae="0" * 64, denoiser="0" * 64)) is None
    with pytest.raises(UnknownReleaseError, match="registry list"):
        client.get("acme/quick@3")
    with pytest.raises(UnknownReleaseError):
        client.latest("acme/nothing")


def test_registry_folder_and_http_server_give_the_same_answers(repo):
    http = TestClient(create_app(repo.service))
    over_http = repo.client("http://testserver", cache="http-cache", http=http)
    direct = repo.client(repo.paths.root, cache="direct-cache")
    assert over_http.get("acme/quick@1").digest == direct.get("acme/quick@1").digest
    # Publishing through the HTTP API: the vendor's upload is verified the same way.
    remote = RemoteRegistry("http://testserver", repo.paths.trusted_root, http)
    folder = release(repo.base, "acme/quick@2", repo.root / "rel-http")
    assert publish(remote, "acme", folder, [repo.acme]) == 2
    assert str(repo.client("http://testserver", cache="c2", http=http).latest("acme/quick")) == (
        "acme/quick@2"
    )
    with pytest.raises(ReleaseRejectedError, match="not signed by enough"):
        publish(remote, "acme", folder, [generate_signer()])


def test_an_unreachable_server_is_named_by_an_admins_upload_as_by_a_read(repo):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.Client(transport=httpx.MockTransport(refuse))
    remote = RemoteRegistry("http://registry.invalid", repo.paths.trusted_root, http)
    with pytest.raises(RegistryUnavailableError, match=r"^registry unreachable: ") as upload:
        remote.update_targets(b"{}")
    assert "http://registry.invalid/admin/targets: connection refused" in str(upload.value)
    reader = repo.client("http://registry.invalid", cache="unreachable", http=http)
    with pytest.raises(RegistryUnavailableError, match=r"^registry unreachable: "):
        reader.refresh()


def test_an_upload_for_an_unknown_vendor_is_told_apart_from_a_missing_server(repo):
    remote = RemoteRegistry(
        "http://testserver", repo.paths.trusted_root, TestClient(create_app(repo.service))
    )
    with pytest.raises(UnknownVendorError, match="'nobody' is not a vendor of this registry"):
        remote.publish("nobody", b"{}", {})

    def static_mirror_double(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>Not Found</html>", request=request)

    http = httpx.Client(transport=httpx.MockTransport(static_mirror_double))
    mirror = RemoteRegistry("http://mirror.invalid", repo.paths.trusted_root, http)
    with pytest.raises(RegistryUnavailableError, match="HTTP 404"):
        mirror.publish("acme", b"{}", {})


def test_offline_mode_answers_from_the_cache_only(repo):
    mirror = repo.mirror()
    online = repo.client(mirror)
    digest = online.get("acme/quick@1").digest
    shutil.rmtree(mirror)  # the network is gone
    offline = repo.client(repo.root / "reg", offline=True)
    assert str(offline.latest("acme/quick")) == "acme/quick@1"
    assert offline.get("acme/quick@1").digest == digest
    repo.publish("acme/quick@2")
    fresh_cache = repo.client(repo.root / "reg", cache="empty", offline=True)
    with pytest.raises(RegistryUnavailableError):
        fresh_cache.latest("acme/quick")


def test_server_resigns_the_timestamp_before_it_expires(repo, monkeypatch):
    first = Metadata.from_bytes(repo.service.metadata_file("timestamp.json")).signed
    assert Metadata.from_bytes(repo.service.metadata_file("timestamp.json")).signed == first
    # A timestamp past half its lifetime is replaced by the next version on the next read.
    monkeypatch.setitem(tm.LIFETIMES, "timestamp", (first.expires - datetime.now(UTC)) * 2.1)
    fresh = Metadata.from_bytes(repo.service.metadata_file("timestamp.json")).signed
    assert fresh.version == first.version + 1
    assert fresh.snapshot_meta.version == first.snapshot_meta.version


# -- what the server refuses -------------------------------------------------------------


def test_server_refuses_a_vendor_publishing_in_another_namespace(repo):
    evil = write_key(repo.root / "evil.pem")
    add_vendor(repo.registry, "evil", [evil.public_key], 1, [repo.keys["targets"]])
    folder = release(repo.base, "acme/quick@2", repo.root / "evil-rel")
    with pytest.raises(ReleaseRejectedError, match="belongs to vendor 'acme'"):
        publish(repo.registry, "evil", folder, [evil])
    # Built by hand, past the SDK's own check: the server refuses it too.
    md = tm.vendor_release(
        None,
        (folder / "target.json").read_bytes(),
        (folder / "tensors.safetensors").read_bytes(),
        tm.LIFETIMES["vendor"],
    )
    files = {
        f"acme/quick/2/{n}": (folder / n).read_bytes()
        for n in ("target.json", "tensors.safetensors")
    }
    with pytest.raises(ReleaseRejectedError, match="outside evil's namespace"):
        repo.service.publish("evil", tm.sign(md, [evil]), files)
    # Nor may evil sign acme's next version.
    acme_next = tm.vendor_release(
        Metadata.from_bytes(repo.service.current("acme")),
        (folder / "target.json").read_bytes(),
        (folder / "tensors.safetensors").read_bytes(),
        tm.LIFETIMES["vendor"],
    )
    with pytest.raises(ReleaseRejectedError, match="not signed by enough"):
        repo.service.publish("acme", tm.sign(acme_next, [evil]), files)


def test_server_refuses_too_few_signatures_stale_versions_and_bad_uploads(repo):
    second = write_key(repo.root / "acme-2.pem")
    add_vendor(
        repo.registry, "acme", [repo.acme.public_key, second.public_key], 2, [repo.keys["targets"]]
    )
    with pytest.raises(ReleaseRejectedError, match="not signed by enough"):
        repo.publish("acme/quick@2", [repo.acme])
    assert repo.publish("acme/quick@2", [repo.acme, second]) == 2
    # Replaying an old, validly signed version is not a new release.
    old = repo.service.metadata_file("1.acme.json")
    with pytest.raises(ReleaseRejectedError, match="not the next version"):
        repo.service.publish("acme", old, {})
    # Bytes that differ from what the vendor signed never reach the blob store.
    folder = release(repo.base, "acme/quick@3", repo.root / "bad")
    current = Metadata.from_bytes(repo.service.current("acme"))
    md = tm.vendor_release(
        current,
        (folder / "target.json").read_bytes(),
        (folder / "tensors.safetensors").read_bytes(),
        tm.LIFETIMES["vendor"],
    )
    bad = bytearray((folder / "tensors.safetensors").read_bytes())
    bad[-1] ^= 1
    files = {
        "acme/quick/3/target.json": (folder / "target.json").read_bytes(),
        "acme/quick/3/tensors.safetensors": bytes(bad),
    }
    with pytest.raises(ReleaseRejectedError, match="do not match the signed"):
        repo.service.publish("acme", tm.sign(md, [repo.acme, second]), files)


def test_unknown_vendor_and_forged_admin_changes_are_refused(repo):
    with pytest.raises(ReleaseRejectedError, match="not a vendor of this registry"):
        repo.publish("nobody/m@1", [generate_signer()], vendor="nobody")
    with pytest.raises(ReleaseRejectedError, match="not signed by enough"):
        add_vendor(repo.registry, "mallory", [generate_signer().public_key], 1, [generate_signer()])


# -- what the client refuses -------------------------------------------------------------


def test_timestamp_rollback_is_refused(repo):
    old = repo.mirror("old")
    repo.publish("acme/quick@2")
    mirror = repo.mirror()
    repo.client(mirror).refresh()
    shutil.copy(old / "metadata" / "timestamp.json", mirror / "metadata" / "timestamp.json")
    with pytest.raises(MetadataRollbackError, match="older metadata") as caught:
        repo.client(mirror).refresh()
    assert not isinstance(caught.value, MixAndMatchError)


def test_snapshot_rollback_is_refused_even_with_the_timestamp_key(repo):
    repo.publish("acme/quick@2")
    mirror = repo.mirror()
    repo.client(mirror).refresh()
    ts = mirror / "metadata" / "timestamp.json"
    current = Metadata.from_bytes(ts.read_bytes()).signed
    meta = current.snapshot_meta
    meta.version -= 1
    repo.resign(ts, "timestamp", version=current.version + 1, snapshot_meta=meta)
    with pytest.raises(MetadataRollbackError, match="snapshot version must be >="):
        repo.client(mirror).refresh()


@pytest.mark.parametrize("role", ["targets", "acme"])
def test_targets_and_vendor_role_rollback_is_refused(repo, role):
    beta = generate_signer()
    add_vendor(repo.registry, "beta", [beta.public_key], 1, [repo.keys["targets"]])  # targets v3
    repo.publish("acme/quick@2")  # acme v2
    mirror = repo.mirror()
    client = repo.client(mirror)
    client.get("acme/quick@2")  # trusts the newest snapshot, targets and acme
    # An attacker holding the online keys lists the role's previous version.
    snap_path = newest(mirror, "snapshot")
    snapshot = Metadata.from_bytes(snap_path.read_bytes()).signed
    snapshot.meta[f"{role}.json"].version -= 1
    new_version = snapshot.version + 1
    md = Metadata(snapshot)
    md.signed.version = new_version
    (mirror / "metadata" / f"{new_version}.snapshot.json").write_bytes(
        tm.sign(md, [repo.keys["snapshot"]])
    )
    ts = mirror / "metadata" / "timestamp.json"
    current = Metadata.from_bytes(ts.read_bytes()).signed
    meta = current.snapshot_meta
    meta.version = new_version
    repo.resign(ts, "timestamp", version=current.version + 1, snapshot_meta=meta)
    with pytest.raises(MetadataRollbackError, match=f"{role}.json version") as caught:
        repo.client(mirror).refresh()
    assert not isinstance(caught.value, MixAndMatchError)


def test_freeze_with_an_expired_timestamp_is_refused(repo):
    mirror = repo.mirror()
    ts = mirror / "metadata" / "timestamp.json"
    current = Metadata.from_bytes(ts.read_bytes()).signed
    # What a mirror frozen since yesterday serves: the last timestamp, now expired.
    repo.resign(
        ts, "timestamp", expires=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    )
    with pytest.raises(MetadataExpiredError, match="frozen mirror"):
        repo.client(mirror).refresh()
    assert current.version == Metadata.from_bytes(ts.read_bytes()).signed.version


@pytest.mark.parametrize("role", ["targets", "acme"])
def test_mix_and_match_is_refused(repo, role):
    repo.publish("acme/quick@2")
    beta = generate_signer()
    add_vendor(repo.registry, "beta", [beta.public_key], 1, [repo.keys["targets"]])
    mirror = repo.mirror()
    # The mirror answers a request for the newest version with an older (validly signed) one.
    latest = newest(mirror, role)
    version = int(latest.name.split(".")[0])
    shutil.copy(mirror / "metadata" / f"{version - 1}.{role}.json", latest)
    client = repo.client(mirror)
    with pytest.raises(MixAndMatchError, match=f"Expected {role} v{version}, got v{version - 1}"):
        client.get("acme/quick@2")


def test_snapshot_mix_and_match_is_refused(repo):
    repo.publish("acme/quick@2")
    mirror = repo.mirror()
    latest = newest(mirror, "snapshot")
    version = int(latest.name.split(".")[0])
    shutil.copy(mirror / "metadata" / f"{version - 1}.snapshot.json", latest)
    with pytest.raises(MixAndMatchError, match="Expected snapshot version"):
        repo.client(mirror).refresh()


def test_metadata_below_the_vendor_threshold_is_refused(repo):
    second = write_key(repo.root / "acme-2.pem")
    add_vendor(
        repo.registry, "acme", [repo.acme.public_key, second.public_key], 2, [repo.keys["targets"]]
    )
    repo.publish("acme/quick@2", [repo.acme, second])
    mirror = repo.mirror()
    path = newest(mirror, "acme")
    md = Metadata.from_bytes(path.read_bytes())
    md.signatures.pop(second.public_key.keyid)
    path.write_bytes(md.to_bytes())
    with pytest.raises(SignatureThresholdError, match="enough valid signatures"):
        repo.client(mirror).get("acme/quick@2")


def test_a_revoked_vendor_key_signs_nothing(repo):
    rotated = write_key(repo.root / "acme-new.pem")
    add_vendor(repo.registry, "acme", [rotated.public_key], 1, [repo.keys["targets"]])
    with pytest.raises(ReleaseRejectedError, match="not signed by enough"):
        repo.publish("acme/quick@2", [repo.acme])  # the old key
    assert repo.publish("acme/quick@2", [rotated]) == 2
    mirror = repo.mirror()
    # A mirror serving acme's metadata re-signed with the revoked key:
    path = newest(mirror, "acme")
    md = Metadata.from_bytes(path.read_bytes())
    path.write_bytes(tm.sign(md, [repo.acme]))
    with pytest.raises(SignatureThresholdError):
        repo.client(mirror).get("acme/quick@2")


def test_a_key_rotation_skipped_to_its_last_step_is_named_as_such(repo, capsys):
    # Issue 31: the vendor guide's rotation done in one step gave an empty `registry list`
    # (exit 0), then "forged or signed with revoked keys" on a publish through the server.
    from photoimmune.cli import main

    new = write_key(repo.root / "acme-new.pem")
    add_vendor(repo.registry, "acme", [new.public_key], 1, [repo.keys["targets"]])
    http = TestClient(create_app(repo.service))
    client = repo.client("http://testserver", cache="http-cache", http=http)
    assert client.releases() == {}
    assert "key rotation in progress" in client.skipped_vendors["acme"]
    assert main(["registry", "list", "--registry", str(repo.paths.root)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "left out acme's releases" in err and "key rotation in progress" in err
    folder = release(repo.base, "acme/quick@2", repo.root / "rel-rotated")
    remote = RemoteRegistry("http://testserver", repo.paths.trusted_root, http)
    with pytest.raises(SignatureThresholdError, match="registry vendor add acme --key OLD"):
        publish(remote, "acme", folder, [new])
    # The recovery the message names: both keys, then a publish with the new one.
    both = [repo.acme.public_key, new.public_key]
    add_vendor(repo.registry, "acme", both, 1, [repo.keys["targets"]])
    assert publish(remote, "acme", folder, [new]) == 2
    assert main(["registry", "list", "--registry", str(repo.paths.root)]) == 0


def test_another_registrys_root_is_named_as_the_likely_cause(repo):
    other = init_registry(repo.root / "other", root_keys=1, root_threshold=1)
    client = RegistryClient(
        repo.mirror(), trusted_root=other.trusted_root, cache_dir=repo.root / "other-cache"
    )
    with pytest.raises(SignatureThresholdError, match=r"another registry's root\.json"):
        client.refresh()


@pytest.mark.parametrize("file", ["tensors.safetensors", "target.json"])
def test_tampered_target_files_are_refused(repo, file):
    mirror = repo.mirror()
    (path,) = (mirror / "targets" / "acme" / "quick" / "1").glob(f"*.{file}")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedTargetError, match="tampered"):
        repo.client(mirror).get("acme/quick@1")


@pytest.mark.parametrize("role", ["timestamp", "snapshot"])
def test_endless_data_is_cut_off(repo, role):
    mirror = repo.mirror()
    path = mirror / "metadata" / "timestamp.json" if role == "timestamp" else newest(mirror, role)
    path.write_bytes(b" " * (tm.MAX_METADATA_BYTES + 1) + path.read_bytes())
    with pytest.raises(OversizedDataError, match="endless data"):
        repo.client(mirror).refresh()


def test_root_rotation_is_followed_and_old_root_keys_lose_power(repo):
    client = repo.client(repo.mirror())
    client.refresh()
    new_keys = [generate_signer(), generate_signer()]
    old = [repo.keys["root-1"], repo.keys["root-2"]]
    assert rotate_root(repo.registry, old, new_keys, threshold=2) == 2
    repo.publish("acme/quick@2")
    mirror = repo.mirror()
    after = repo.client(mirror)
    assert str(after.latest("acme/quick")) == "acme/quick@2"
    cached = json.loads((repo.root / "cache" / "metadata" / "root.json").read_bytes())
    assert cached["signed"]["version"] == 2
    # Root v3 signed only with the retired keys: clients (and the server) refuse it.
    forged = Metadata.from_bytes((mirror / "metadata" / "2.root.json").read_bytes())
    forged.signed.version = 3
    data = tm.sign(forged, old)
    with pytest.raises(ReleaseRejectedError, match="not signed by enough"):
        repo.service.update_root(data)
    (mirror / "metadata" / "3.root.json").write_bytes(data)
    with pytest.raises(SignatureThresholdError):
        repo.client(mirror).refresh()


# -- the command line ---------------------------------------------------------------------


def test_cli_vendor_workflow_end_to_end(tmp_path, tiny_models, capsys):
    from photoimmune.cli import main

    reg = tmp_path / "reg"
    assert main(["registry", "init", str(reg), "--root-keys", "1", "--root-threshold", "1"]) == 0
    assert main(["registry", "keygen", str(tmp_path / "acme.pem")]) == 0
    pub = str(tmp_path / "acme.pub.pem")
    assert main(["registry", "vendor", "add", "acme", "--key", pub, "--registry", str(reg)]) == 0
    rel = tmp_path / "release"
    args = ["--model", str(tiny_models[0]), "--ref", "acme/quick@1", "-o", str(rel)]
    assert main(["targets", "build", *args]) == 0
    key = str(tmp_path / "acme.pem")
    assert main(["registry", "publish", str(rel), "--key", key, "--registry", str(reg)]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--registry", str(reg)]) == 0
    assert "acme/quick@1" in capsys.readouterr().out
    assert main(["registry", "show", "acme/quick", "--registry", str(reg)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert main(["registry", "show", "acme/quick", "--registry", str(reg), "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()  # one line, for scripts
    assert json.loads(line) == shown
    assert shown["ref"] == {"vendor": "acme", "model": "quick", "version": "1"}
    assert main(["registry", "export", str(reg), str(tmp_path / "static")]) == 0
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (48, 40), (120, 80, 40)).save(image)
    out = tmp_path / "out"
    immunize = ["immunize", str(image), "-o", str(out), "--steps", "2", "--no-sign", "--json"]
    static = ["--registry", str(tmp_path / "static"), "--root", str(reg / "root.json")]
    # Non-bundled weights must be named, and must be the release's weights.
    assert main([*immunize, "--target", "acme/quick@1", *static]) == 2
    assert "--model FOLDER" in capsys.readouterr().err
    wrong = ["--model", str(tiny_models[1])]
    assert main([*immunize, "--target", "acme/quick@1", *static, *wrong]) == 2
    assert "fingerprints differ" in capsys.readouterr().err
    right = ["--model", str(tiny_models[0])]
    capsys.readouterr()
    assert main([*immunize, "--target", "acme/quick", *static, *right]) == 0  # latest
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["protections"][0]["target_ref"] == "acme/quick@1"
    assert record["protections"][0]["target_digest"] == shown["digest"]
    assert (out / "in.png").is_file()


# -- review findings: a vendor cannot speak for others, nor break the registry for them ----


def _hand_built(repo: Repo, vendor: str, ref: str, signer, edit=None):
    """A vendor role built past the SDK's own checks, as a malicious vendor would."""
    folder = release(repo.base, ref, repo.root / f"hand-{vendor}-{ref.replace('/', '_')}")
    descriptor = (folder / "target.json").read_bytes()
    tensors = (folder / "tensors.safetensors").read_bytes()
    current = repo.service.current(vendor) if vendor == "acme" else None
    md = tm.vendor_release(
        None if current is None else Metadata.from_bytes(current),
        descriptor,
        tensors,
        tm.LIFETIMES["vendor"],
    )
    files = {
        f"{tm.release_dir(ModelRef.parse(ref))}/{n}": (folder / n).read_bytes()
        for n in ("target.json", "tensors.safetensors")
    }
    if edit is not None:
        files = edit(md.signed, files) or files
    return tm.sign(md, [signer]), files


def test_server_refuses_descriptors_that_name_another_vendor_or_break_clients(repo):
    evil = write_key(repo.root / "evil.pem")
    add_vendor(repo.registry, "evil", [evil.public_key], 1, [repo.keys["targets"]])

    def move_under_evil(signed, files):  # acme's descriptor, listed under evil's own paths
        for name in ("target.json", "tensors.safetensors"):
            info = signed.targets.pop(f"acme/quick/99/{name}")
            info.path = f"evil/x/1/{name}"
            signed.targets[info.path] = info
        return {p.replace("acme/quick/99", "evil/x/1"): b for p, b in files.items()}

    data, files = _hand_built(repo, "evil", "acme/quick@99", evil, move_under_evil)
    with pytest.raises(ReleaseRejectedError, match="does not live at this path"):
        repo.service.publish("evil", data, files)

    def garble(signed, files):
        signed.targets["evil/x/1/target.json"].unrecognized_fields["custom"] = {"descriptor": {}}

    data, files = _hand_built(repo, "evil", "evil/x@1", evil, garble)
    with pytest.raises(ReleaseRejectedError, match="not a valid attack target"):
        repo.service.publish("evil", data, files)

    def dot_dot(signed, files):
        info = signed.targets.pop("evil/x/1/tensors.safetensors")
        info.path = "evil/x/../tensors.safetensors"
        signed.targets[info.path] = info
        return {info.path if p.endswith("safetensors") else p: b for p, b in files.items()}

    data, files = _hand_built(repo, "evil", "evil/x@1", evil, dot_dot)
    with pytest.raises(ReleaseRejectedError, match="outside evil's namespace"):
        repo.service.publish("evil", data, files)

    md = Metadata.from_bytes(_hand_built(repo, "evil", "evil/x@1", evil)[0])
    md.signed.expires = tm.expiry(timedelta(hours=1))
    with pytest.raises(ReleaseRejectedError, match="at least 7 days"):
        repo.service.publish(
            "evil", tm.sign(md, [evil]), _hand_built(repo, "evil", "evil/x@1", evil)[1]
        )
    # Clients still see exactly what was accepted.
    client = repo.client(repo.mirror())
    assert list(map(str, client.releases())) == ["acme/quick@1"]


def test_an_idle_registry_renews_its_snapshot(repo, monkeypatch):
    first = Metadata.from_bytes(repo.service.metadata_file("timestamp.json")).signed
    remaining = first.expires - datetime.now(UTC)
    monkeypatch.setitem(tm.LIFETIMES, "timestamp", remaining * 2.1)  # due for re-signing
    monkeypatch.setitem(tm.LIFETIMES, "snapshot", timedelta(days=7) * 2.1)  # snapshot too
    fresh = Metadata.from_bytes(repo.service.metadata_file("timestamp.json")).signed
    assert fresh.snapshot_meta.version == first.snapshot_meta.version + 1
    assert str(repo.client(repo.mirror()).latest("acme/quick")) == "acme/quick@1"


def test_each_trust_anchor_and_database_gets_its_own_state(tmp_path, base_target):
    from photoimmune.registry.client import default_cache_dir

    assert default_cache_dir("file:///r", b"root-a") != default_cache_dir("file:///r", b"root-b")
    # A registry created with --db keeps using that database from its folder.
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    paths = init_registry(tmp_path / "reg", root_keys=1, root_threshold=1, database_url=url)
    assert not (tmp_path / "reg" / "registry.db").exists()
    registry = open_registry(paths.root)
    targets = load_signer(paths.keys / "targets.pem")
    assert add_vendor(registry, "acme", [generate_signer().public_key], 1, [targets]) == 2
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "reg" / "registry.db").exists()


def _refresh_often(source: Path, root: Path, cache: Path, times: int) -> int:
    client = RegistryClient(source, trusted_root=root, cache_dir=cache)
    for _ in range(times):
        client.refresh()
    return len(client.releases())


def test_processes_sharing_one_cache_refresh_without_tripping_over_each_other(repo):
    # Two jobs on one machine share ~/.cache/photoimmune: ngclient re-links root.json with a
    # remove-then-symlink, so unlocked refreshes at once fail with FileExistsError.
    import multiprocessing

    mirror = repo.mirror()
    args = (mirror, repo.paths.trusted_root, repo.root / "shared-cache", 25)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        assert pool.starmap(_refresh_often, [args] * 4) == [1] * 4
