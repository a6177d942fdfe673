"""Issue 30's five suspicions "from reading", each reproduced and then fixed or pinned.

1. Blobs written before the database commit: a failed commit left them behind.
2. No per-vendor quotas: a vendor could fill the registry's disk with releases.
3. A parent that can't be attached as an ingredient failed the whole pipeline call.
4. The plugin checked and edited frame 0 of a multi-frame PIL image, not the one selected.
5. ``keys init --dir EXISTING`` re-moded the user's folder to 0700.

All five were confirmed; each test here failed on the code before its fix.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import event, select
from tuf.api.exceptions import UnsignedMetadataError

from photoimmune.cli import main
from photoimmune.registry.admin import (
    LocalRegistry,
    RemoteRegistry,
    add_vendor,
    init_registry,
    open_registry,
    publish,
)
from photoimmune.registry.errors import QuotaExceededError, ReleaseRejectedError
from photoimmune.registry.keys import load_signer, write_key
from photoimmune.registry.quotas import DEFAULT_VENDOR_QUOTA, VendorQuotas
from photoimmune.registry.server import create_app
from photoimmune.registry.service import RegistryPaths
from photoimmune.registry.storage import MetadataFile, TargetFileRow
from photoimmune.sdk.errors import ManifestError
from photoimmune.sdk.keys import KeyFolderWarning, ManifestSigner, init_keys
from photoimmune.sdk.manifest import read_manifest, sign_pixels
from photoimmune.sdk.samples import sample_pixels

from .helpers import edit, protection
from .test_hardening import BodyCounter, release_folder

V2 = "photoimmune/tiny-ldm@2"

# -- shared set-up ----------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path) -> LocalRegistry:
    """A registry folder with two vendors, ``acme`` and ``beta``; no releases yet."""
    paths = init_registry(tmp_path / "reg", root_keys=1, root_threshold=1)
    registry = open_registry(paths.root)
    assert isinstance(registry, LocalRegistry)
    targets_key = load_signer(paths.keys / "targets.pem")
    for vendor in ("acme", "beta"):
        key = write_key(tmp_path / f"{vendor}.pem")
        add_vendor(registry, vendor, [key.public_key], 1, [targets_key])
    return registry


def blob_files(registry: LocalRegistry) -> set[str]:
    return {p.name for p in registry.service.store.blobs.root.rglob("*") if p.is_file()}


def release(tmp_path: Path, ref: str, seed: int) -> Path:
    """A release folder for ``ref``; releases with the same ``seed`` share their tensors."""
    return release_folder(ref, tmp_path / ref.replace("/", "-").replace("@", "-"), seed=seed)


def vendor_key(tmp_path: Path, vendor: str = "acme"):
    return load_signer(tmp_path / f"{vendor}.pem")


# -- 1. blobs written before the commit -------------------------------------------------


def fail_next_commit(registry: LocalRegistry) -> list[int]:
    """Make the database's next commit fail (once), as a full disk or a lost connection
    would; the list counts the commits that failed."""
    failed: list[int] = []

    def commit(_conn) -> None:
        if not failed:
            failed.append(1)
            raise RuntimeError("disk I/O error (simulated failed commit)")

    event.listen(registry.service.store.engine, "commit", commit)
    return failed


def test_a_failed_commit_leaves_no_orphan_blobs(registry, tmp_path):
    folder = release(tmp_path, "acme/quick@1", seed=1)
    failed = fail_next_commit(registry)
    with pytest.raises(RuntimeError, match="simulated failed commit"):
        publish(registry, "acme", folder, [vendor_key(tmp_path)])
    assert failed == [1]
    assert blob_files(registry) == set()  # before the fix: both files of the release
    assert registry.current("acme") is None
    # The same release goes through once the database is back, its files stored anew.
    assert publish(registry, "acme", folder, [vendor_key(tmp_path)]) == 1
    with registry.service.store.read() as session:
        named = {row.sha256 for row in registry.service.store.targets(session)}
    assert blob_files(registry) == named and len(named) == 2


def test_a_release_whose_signing_fails_after_its_blobs_leaves_none(registry, tmp_path):
    """The online snapshot key fails (a KMS outage) after the blobs were written."""
    good = registry.service.snapshot_signer
    publish(registry, "acme", release(tmp_path, "acme/quick@1", seed=1), [vendor_key(tmp_path)])
    before = blob_files(registry)

    class Broken:
        public_key = good.public_key

        def sign(self, _payload: bytes):
            raise RuntimeError("snapshot key unavailable")

    registry.service.snapshot_signer = Broken()
    folder = release(tmp_path, "acme/quick@2", seed=2)
    with pytest.raises(UnsignedMetadataError, match="snapshot key unavailable"):
        publish(registry, "acme", folder, [vendor_key(tmp_path)])
    assert blob_files(registry) == before  # the first release's files are kept
    registry.service.snapshot_signer = good
    assert publish(registry, "acme", folder, [vendor_key(tmp_path)]) == 2


def test_blobs_a_killed_publish_left_behind_are_removed_when_the_server_starts(registry, tmp_path):
    publish(registry, "acme", release(tmp_path, "acme/quick@1", seed=1), [vendor_key(tmp_path)])
    kept = blob_files(registry)
    orphan, written = registry.service.store.blobs.put(b"written, then the process was killed")
    assert written and orphan in blob_files(registry)
    with TestClient(create_app(registry.service)) as http:  # runs the app's startup
        assert http.get("/metadata/1.root.json").status_code == 200
    assert blob_files(registry) == kept


# -- 2. per-vendor storage quotas -------------------------------------------------------


def set_quota(registry: LocalRegistry, tmp_path: Path, vendor: str, quota: int) -> None:
    VendorQuotas(vendors={vendor: quota}).save(tmp_path / "reg" / "quotas.json")


def usage(registry: LocalRegistry, vendor: str) -> int:
    """What ``vendor`` stores, counted from the rows: each metadata version, each file once."""
    with registry.service.store.read() as session:
        metadata = session.scalars(select(MetadataFile).where(MetadataFile.role == vendor))
        files = {
            row.sha256: row.length
            for row in session.scalars(select(TargetFileRow))
            if row.path.startswith(f"{vendor}/")
        }
        return sum(len(row.data) for row in metadata) + sum(files.values())


def test_the_default_quota_is_generous_and_per_vendor(registry):
    assert DEFAULT_VENDOR_QUOTA == 2 * 1024**3
    assert registry.service.vendor_quota("acme") == DEFAULT_VENDOR_QUOTA


def test_a_vendor_cannot_publish_past_its_storage_quota(registry, tmp_path):
    """Over HTTP: 413 with a JSON error that says the quota and how to raise it, before
    a byte of the release is stored; other vendors publish as before."""
    key = vendor_key(tmp_path)
    publish(registry, "acme", release(tmp_path, "acme/quick@1", seed=1), [key])
    set_quota(registry, tmp_path, "acme", usage(registry, "acme") + 1000)
    stored = blob_files(registry)
    responses = []
    http = TestClient(create_app(registry.service))
    http.event_hooks["response"] = [responses.append]
    remote = RemoteRegistry(
        "http://testserver", RegistryPaths(tmp_path / "reg").trusted_root, http, retries=0
    )
    with pytest.raises(ReleaseRejectedError, match="quota"):
        publish(remote, "acme", release(tmp_path, "acme/quick@2", seed=2), [key])
    refused = responses[-1]
    refused.read()
    body = refused.json()
    assert refused.status_code == 413  # before the fix: 200, the release stored
    assert body["quota_bytes"] == usage(registry, "acme") + 1000
    assert body["vendor"] == "acme" and body["release_bytes"] > 1000
    assert "quotas.json" in body["detail"] and '"acme"' in body["detail"]
    assert blob_files(registry) == stored and registry.service.current("acme")
    beta = release(tmp_path, "beta/quick@1", seed=3)
    assert publish(remote, "beta", beta, [vendor_key(tmp_path, "beta")]) == 1
    # Raising the quota takes effect at the next upload, without a restart.
    set_quota(registry, tmp_path, "acme", 10 * 1024**2)
    assert publish(remote, "acme", release(tmp_path, "acme/quick@3", seed=2), [key]) == 2


def test_a_vendor_whose_quota_is_used_up_is_refused_before_the_body_is_read(registry, tmp_path):
    publish(registry, "acme", release(tmp_path, "acme/quick@1", seed=1), [vendor_key(tmp_path)])
    set_quota(registry, tmp_path, "acme", usage(registry, "acme"))
    app = BodyCounter(create_app(registry.service))
    http = TestClient(app, raise_server_exceptions=False)
    answer = http.post("/vendors/acme/releases", files={"metadata": ("m.json", b"x" * 10**6)})
    assert answer.status_code == 413 and "at least its metadata" in answer.json()["detail"]
    assert app.received == 0


def test_a_quota_counts_each_stored_file_once_and_every_metadata_version(registry, tmp_path):
    """Files already stored in the vendor's namespace cost nothing again; metadata does."""
    key = vendor_key(tmp_path)
    publish(registry, "acme", release(tmp_path, "acme/quick@1", seed=1), [key])
    first = usage(registry, "acme")
    again = release(tmp_path, "acme/again@1", seed=1)  # the same tensors, another name
    publish(registry, "acme", again, [key])
    added = len(registry.service.current("acme")) + (again / "target.json").stat().st_size
    assert usage(registry, "acme") == first + added
    with registry.service.store.read() as session:
        assert registry.service.store.vendor_usage(session, "acme")[0] == first + added
    set_quota(registry, tmp_path, "acme", usage(registry, "acme") + 10)
    with pytest.raises(QuotaExceededError) as refused:
        publish(registry, "acme", release(tmp_path, "acme/quick@3", seed=4), [key])
    assert refused.value.quota == usage(registry, "acme") + 10 and refused.value.adds > 10


# -- 3. a parent that can't be attached -------------------------------------------------


@pytest.fixture
def failing_ingredients(monkeypatch) -> None:
    """c2pa refuses every ingredient, as it may for a parent it can't read."""
    import c2pa

    def refuse(self, *_args, **_kwargs):
        raise c2pa.C2paError.Other("asset could not be parsed (simulated)")

    monkeypatch.setattr(c2pa.Builder, "add_ingredient", refuse)


def test_a_parent_that_cannot_be_attached_is_left_out_with_a_warning(
    tmp_path, failing_ingredients, caplog
):
    keys = init_keys(tmp_path / "keys")
    cat = sample_pixels("chelsea.png", 64)
    parent = sign_pixels(cat, [protection()], keys.signer("publisher"))
    child = cat ^ 1
    with caplog.at_level(logging.WARNING, logger="photoimmune.sdk.manifest"):
        signed = sign_pixels(
            child, [protection(V2)], keys.signer("vendor"), parent=parent, title="cat.png"
        )
    report = read_manifest(signed, trust=keys.trust_anchor_pem())
    assert report.ok and report.covers(V2) and len(report.history) == 1
    assert "cat.png: the parent image could not be attached" in caplog.text


def test_a_signer_that_fails_is_still_an_error_with_or_without_a_parent(
    tmp_path, failing_ingredients
):
    keys = init_keys(tmp_path / "keys")
    cat = sample_pixels("chelsea.png", 64)
    parent = sign_pixels(cat, [protection()], keys.signer("publisher"))

    def broken_kms(_data: bytes) -> bytes:
        raise RuntimeError("KMS unreachable")

    signer = ManifestSigner.from_callback(broken_kms, "es256", keys.cert("vendor").read_bytes())
    for given in (parent, None):
        with pytest.raises(ManifestError, match="signing failed"):
            sign_pixels(cat ^ 1, [protection()], signer, parent=given)


# -- 3 and 4 through the plugin ---------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_setup(tmp_path_factory):
    """A registry with tiny-ldm@1 and @2, development keys, and chelsea immunized for @1."""
    from photoimmune.registry.admin import local_registry
    from photoimmune.sdk import immunize

    root = tmp_path_factory.mktemp("plugin")
    client = local_registry(root / "reg", ["tiny-ldm@1", "tiny-ldm@2"])
    keys = init_keys(root / "keys")
    photo = sample_pixels("chelsea.png", 128)
    result = immunize(photo, client.get("photoimmune/tiny-ldm@1"), eps="8/255", steps=4, seed=0)
    signed = root / "chelsea-v1.png"
    signed.write_bytes(sign_pixels(result.pixels, result.protections, keys.signer("publisher")))
    return root / "reg", keys, signed


def checked_pipeline(plugin_setup, **settings):
    import photoimmune.diffusers_plugin  # noqa: F401 (gives pipelines enable_immunization_check)
    from photoimmune.sdk.models import load_pipeline

    registry_dir, keys, _ = plugin_setup
    pipe = load_pipeline("tiny-ldm@2")
    pipe.enable_immunization_check(
        registry_dir, signer=keys.signer("vendor"), trust=keys.ca_cert, steps=4, **settings
    )
    return pipe


@pytest.mark.slow
def test_a_failing_parent_attachment_does_not_fail_the_pipeline_call(
    plugin_setup, failing_ingredients, caplog
):
    """An outdated image is re-immunized and signed without its parent, not lost."""
    _, keys, signed = plugin_setup
    pipe = checked_pipeline(plugin_setup)
    with caplog.at_level(logging.WARNING, logger="photoimmune.sdk.manifest"):
        edit(pipe, str(signed))  # before the fix: ManifestError from the pipeline call
    (check,) = pipe.immunization_report.images
    assert (check.status, check.action) == ("outdated", "reimmunized")
    report = read_manifest(check.signed_image, trust=keys.trust_anchor_pem())
    assert report.ok and report.covers(V2)
    assert "could not be attached" in caplog.text
    # The output is signed too, still as an AI edit, without the input it could not attach.
    (output,) = pipe.immunization_report.outputs
    made = read_manifest(output.signed_image, trust=keys.trust_anchor_pem())
    assert made.digital_source_type.endswith("/compositeWithTrainedAlgorithmicMedia")
    assert "the edited input could not be attached" in caplog.text


@pytest.mark.slow
def test_the_plugin_checks_and_edits_the_frame_a_multi_frame_image_is_at(plugin_setup, tmp_path):
    from photoimmune.sdk.models import load_pipeline

    first, selected = sample_pixels("chelsea.png", 128), sample_pixels("coffee.png", 128)
    path = tmp_path / "frames.tiff"
    Image.fromarray(first).save(path, save_all=True, append_images=[Image.fromarray(selected)])
    image = Image.open(path)
    image.seek(1)
    pipe = checked_pipeline(plugin_setup, policy="allow")
    edited = edit(pipe, image)
    expected = edit(load_pipeline("tiny-ldm@2"), Image.fromarray(selected))
    assert np.array_equal(edited, expected)  # before the fix: frame 0 was edited
    assert image.tell() == 1  # the caller's image is where they left it (was: rewound)


# -- 5. keys init on an existing folder -------------------------------------------------


def test_keys_init_leaves_an_existing_folders_mode_and_warns_when_others_can_reach_it(
    tmp_path,
):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o750)
    with pytest.warns(KeyFolderWarning, match=r"mode 0750.*chmod 700"):
        keys = init_keys(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750  # before the fix: 0700
    for name in ("ca.key", "publisher.key", "vendor.key"):
        assert stat.S_IMODE((keys.path / name).stat().st_mode) == 0o600

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init_keys(private)
    created = init_keys(tmp_path / "new" / "keys")
    assert stat.S_IMODE(created.path.stat().st_mode) == 0o700


def test_cli_keys_init_on_an_existing_folder_keeps_its_mode(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    os.chmod(folder, 0o755)
    assert main(["keys", "init", "--dir", str(folder)]) == 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    printed = capsys.readouterr()
    assert "publisher.key" in printed.out
    assert "warning: " in printed.err and "consider `chmod 700" in printed.err  # one line
