"""Regression tests for a hardening probe of the messages about keys, paths, model
references and the manifest store: each mistake is refused as bad input (exit status 2)
with a message that names the real problem, and where a path came from (an option or an
environment variable), never a cause that sends the user looking in the wrong place.

Special files are real (a FIFO from ``os.mkfifo``, ``/dev/zero``), and keys are made by
the project's own functions. A read that would block on a FIFO runs under a watchdog, so
a broken check fails its test instead of hanging the suite.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from photoimmune.cli import main
from photoimmune.registry.client import CACHE_DIR_ENV, default_cache_dir
from photoimmune.registry.keys import load_public_key, load_signer, public_path, write_key
from photoimmune.resolver import ManifestStore
from photoimmune.sdk.errors import ImageLoadError, InputError, OutputPathError
from photoimmune.sdk.io import check_input_file, load_image, save_image
from photoimmune.sdk.keys import (
    KEY_DIR_ENV,
    ManifestSigner,
    SigningKeyError,
    default_key_dir,
    init_keys,
    read_trust_anchors,
    resolve_signer,
)
from photoimmune.sdk.manifest import sign_pixels
from photoimmune.sdk.refs import NAME_RULE, VERSION_RULE, ModelRef, check_model_name
from photoimmune.sdk.samples import sample_pixels

from .helpers import protection
from .test_fuzz import watchdog
from .test_hardening_cli import photo, refused, registry  # noqa: F401 (fixtures)


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo.pem"
    os.mkfifo(path)
    return path


def specials(tmp_path: Path, fifo: Path) -> dict[str, tuple[Path, str]]:
    """Paths that are not regular files, and how the message must describe each."""
    folder = tmp_path / "a-folder.pem"
    folder.mkdir()
    return {
        "fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
        "device": (Path("/dev/zero"), "is a character device, not a regular file"),
        "folder": (folder, "is a directory, not a regular file"),
    }


# -- 1. the key folder: which file is missing, and where the folder came from -------------


def test_a_key_folder_missing_its_publisher_key_names_the_file_and_makes_no_keys(
    tmp_path,
    photo,  # noqa: F811
    capsys,
):
    keys = init_keys(tmp_path / "k2")
    keys.key("publisher").unlink()
    before = sorted(os.listdir(keys.path))
    text = refused(
        capsys, "immunize", str(photo), "-o", str(tmp_path / "o3"), "--keys", str(keys.path)
    )
    assert f"{keys.key('publisher')}: missing from --keys {keys.path}, which holds" in text
    assert "restore it from your backup" in text
    assert "--dir" not in text and "already holds keys" not in text  # immunize has no --dir
    assert sorted(os.listdir(keys.path)) == before  # no second CA beside the first
    with pytest.raises(SigningKeyError, match=r"publisher\.key: missing from key folder"):
        resolve_signer(keys_dir=keys.path)  # the SDK says the same, without the CLI's option


def test_a_key_folder_set_in_the_environment_is_named_by_the_variable(
    tmp_path,
    photo,  # noqa: F811
    capsys,
    monkeypatch,
):
    out = str(tmp_path / "out")
    monkeypatch.setenv(KEY_DIR_ENV, str(photo))
    text = refused(capsys, "immunize", str(photo), "-o", out)
    assert f"${KEY_DIR_ENV} {photo}: is a file, not a folder" in text
    assert "--dir" not in text
    # Given on the command line, the option is named instead.
    text = refused(capsys, "immunize", str(photo), "-o", out, "--keys", str(photo))
    assert f"--keys {photo}: is a file, not a folder" in text
    partial = init_keys(tmp_path / "partial")
    partial.cert("publisher").unlink()
    monkeypatch.setenv(KEY_DIR_ENV, str(partial.path))
    text = refused(capsys, "immunize", str(photo), "-o", out)
    assert f"{partial.cert('publisher')}: missing from ${KEY_DIR_ENV} {partial.path}" in text


# -- 4. empty environment variables, and a cache folder that is a file -------------------


def test_empty_path_variables_count_as_unset_never_the_current_folder(
    tmp_path,
    registry,  # noqa: F811
    capsys,
    monkeypatch,
):
    home, here = tmp_path / "home", tmp_path / "here"
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(KEY_DIR_ENV, "")
    monkeypatch.setenv(CACHE_DIR_ENV, "")
    monkeypatch.chdir(here)
    assert default_key_dir() == home / ".photoimmune" / "keys"
    assert default_cache_dir("file:///r", b"root").parent == home / ".cache/photoimmune/registry"
    assert main(["registry", "list", "--registry", str(registry)]) == 0, capsys.readouterr()
    assert os.listdir(here) == []  # it once made ./registry/ here
    assert (home / ".cache" / "photoimmune" / "registry").is_dir()


def test_a_cache_folder_that_is_a_file_is_named_by_its_variable(
    registry,  # noqa: F811
    photo,  # noqa: F811
    capsys,
    monkeypatch,
):
    monkeypatch.setenv(CACHE_DIR_ENV, str(photo))
    text = refused(capsys, "registry", "list", "--registry", str(registry))
    assert f"${CACHE_DIR_ENV} {photo}: is a file, not a folder" in text
    assert "/registry/" not in text  # not the path of a folder it failed to make under it


# -- 2. and 3. key files: missing, special, or the private half ---------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_vendor_add_says_what_a_key_path_is_instead_of_blaming_its_pem(
    tmp_path,
    registry,  # noqa: F811
    fifo,
    kind,
    capfd,  # not capsys: the watchdog's faulthandler needs a real stderr
):
    path, says = specials(tmp_path, fifo)[kind]
    with watchdog(30):
        text = refused(
            capfd, "registry", "vendor", "add", "acme", "--key", str(path),
            "--registry", str(registry),
        )  # fmt: skip
        assert f"{path}: {says}; pass the public key (.pub.pem) itself" in text
        text = refused(
            capfd, "registry", "vendor", "add", "acme", "--key", str(path),
            "--targets-key", str(path), "--registry", str(registry),
        )  # fmt: skip
    assert "not a PEM" not in text and says in text


def test_vendor_add_names_a_missing_key_file(
    tmp_path,
    registry,  # noqa: F811
    capsys,
):
    missing = tmp_path / "nowhere" / "x.pub.pem"
    text = refused(
        capsys, "registry", "vendor", "add", "acme", "--key", str(missing),
        "--registry", str(registry),
    )  # fmt: skip
    assert f"{missing}: no such public key (.pub.pem); check the path" in text
    assert "PEM file" not in text  # the old message quoted cryptography's MalformedFraming


def test_vendor_add_refuses_a_private_key_and_names_its_public_half(
    tmp_path,
    registry,  # noqa: F811
    capsys,
):
    private = tmp_path / "vk" / "acme.pem"
    write_key(private)
    text = refused(
        capsys, "registry", "vendor", "add", "acme", "--key", str(private),
        "--registry", str(registry),
    )  # fmt: skip
    assert f"{private}: a private key, which must never leave its owner" in text
    assert f"pass its public half ({public_path(private)}" in text
    with pytest.raises(InputError, match="a private key"):
        load_public_key(private)
    # The public half keygen wrote beside it is what the admin takes.
    args = ["registry", "vendor", "add", "acme", "--key", str(public_path(private))]
    assert main([*args, "--registry", str(registry)]) == 0, capsys.readouterr()


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_key_certificate_and_trust_files_that_are_not_regular_files_are_named_so(
    tmp_path, fifo, kind
):
    path, says = specials(tmp_path, fifo)[kind]
    keys = init_keys(tmp_path / "keys")
    expected = re.escape(f"{path}: {says}")
    with watchdog(30):
        with pytest.raises(SigningKeyError, match=expected + "; pass the private key itself"):
            ManifestSigner.from_pem(path, keys.cert("publisher"))
        with pytest.raises(SigningKeyError, match=expected + "; pass the certificate itself"):
            ManifestSigner.from_pem(keys.key("publisher"), path)
        with pytest.raises(SigningKeyError, match=expected):
            read_trust_anchors([keys.ca_cert, path])
        with pytest.raises(InputError, match=expected):
            load_signer(path)
        with pytest.raises(InputError, match=re.escape(f"--cert {path}: {says}")):
            check_input_file(path, "certificate", option="--cert")


# -- 5. SDK input that is not an image or a path -----------------------------------------


@pytest.mark.parametrize("name", ["empty.png", "empty.webp", "empty.jpg"])
def test_save_image_refuses_an_empty_picture_as_bad_input(tmp_path, name):
    for pixels in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(InputError, match=r"an empty picture \(\d+x\d+\) cannot be saved"):
            save_image(pixels, tmp_path / name)  # WebP used to raise MemoryError
    assert os.listdir(tmp_path) == []


def test_save_image_refuses_what_is_no_array_saying_what_to_pass(tmp_path):
    with pytest.raises(InputError, match=r"got a list; pass a uint8 numpy array"):
        save_image([[1, 2, 3]], tmp_path / "list.png")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_paths_with_a_nul_character_are_bad_input(tmp_path):
    with pytest.raises(ImageLoadError, match=r"a path cannot contain a NUL character"):
        load_image("a.png\x00x")
    pixels = sample_pixels("coffee.png", 8)
    with pytest.raises(OutputPathError, match=r"a path cannot contain a NUL character"):
        save_image(pixels, tmp_path / "x\x00.png")
    with pytest.raises(InputError, match=r"a path cannot contain a NUL character"):
        check_input_file("key\x00.pem")
    assert os.listdir(tmp_path) == []


# -- 6. model references: the characters allowed, from one wording ------------------------


def test_a_reference_of_the_right_shape_says_which_part_breaks_which_rule(
    tmp_path,
    capsys,
):
    with pytest.raises(InputError) as parsed:
        ModelRef.parse("Acme/m@1")
    message = str(parsed.value)
    assert message.startswith("'Acme/m@1' is not a model reference: the vendor 'Acme' must be")
    assert NAME_RULE in message and "write vendor/model@version" not in message
    with pytest.raises(InputError, match=re.escape(f"the version '1 2' must be {VERSION_RULE}")):
        ModelRef.parse("acme/m@1 2")
    # One wording for a model name, a reference and a ModelRef built field by field.
    with pytest.raises(InputError, match=re.escape(f"the vendor 'Acme' must be {NAME_RULE}")):
        check_model_name("Acme/m")
    with pytest.raises(ValueError, match=re.escape(f"the model 'M' must be {NAME_RULE}")):
        ModelRef(vendor="acme", model="M", version="1")
    text = refused(
        capsys, "targets", "build", "--model", "tiny-ldm@1", "--ref", "Acme/m@1",
        "-o", str(tmp_path / "t"),
    )  # fmt: skip
    assert "the vendor 'Acme' must be 1-64 lowercase letters" in text


def test_nothing_named_is_not_a_model_reference_nor_a_model_name():
    with pytest.raises(InputError, match=r"^'' is not a model reference; write vendor/model@"):
        ModelRef.parse("")
    with pytest.raises(InputError, match=r"^'' is not a model name; write vendor/model, e\.g\."):
        check_model_name("")


# -- 7. manifests add: the good files recorded, each bad one named -------------------------


def test_manifests_add_records_the_signed_files_and_names_each_bad_one(
    tmp_path,
    photo,  # noqa: F811
    fifo,
    capfd,  # not capsys: the watchdog's faulthandler needs a real stderr
):
    signer = init_keys(tmp_path / "keys").signer("publisher")
    signed = tmp_path / "signed.png"
    signed.write_bytes(sign_pixels(sample_pixels("coffee.png", 64), [protection()], signer))
    folder, empty = tmp_path / "dir.png", tmp_path / "empty.png"
    folder.mkdir()
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    db = tmp_path / "m.db"
    files = [signed, folder, empty, fifo, missing, photo]
    with watchdog(60):
        status = main(["manifests", "add", *map(str, files), "--db", str(db)])
    printed = capfd.readouterr()
    assert status == 2, printed.out + printed.err
    assert "Traceback" not in printed.err
    assert "signed.png" in printed.out and "1 signed files" in printed.out
    for path, says in [
        (folder, "is a directory, not a regular file"),
        (empty, "file is empty (0 bytes)"),
        (fifo, "is a FIFO (named pipe), not a regular file"),
        (missing, "no such file"),
        (photo, "missing, no signed immunization manifest"),
    ]:
        assert f"{path}: {says}" in printed.err
    assert "<bytes>" not in printed.err
    store = ManifestStore(f"sqlite:///{db}")
    assert store.count() == 1
    store.dispose()


def test_registry_show_names_a_reference_it_cannot_parse_before_asking_the_registry(
    tmp_path, capsys
):
    missing = tmp_path / "no-registry"  # never opened: the reference is refused first
    for ref, says in (("", "'' is not a model name"), ("Acme/m@1", "the vendor 'Acme'")):
        text = refused(capsys, "registry", "show", ref, "-r", str(missing))
        assert says in text


def test_manifests_add_makes_no_store_when_no_file_is_there(tmp_path, capsys):
    db = tmp_path / "m.db"
    text = refused(capsys, "manifests", "add", str(tmp_path / "nosuch.png"), "--db", str(db))
    assert "nosuch.png: no such file" in text
    assert not db.exists()  # `manifests serve --db m.db` still refuses the typo
