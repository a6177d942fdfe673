"""Regression tests for the command line's hardening defects: each bad input is refused
with exit status 2 and one line that names the problem, never a traceback, and leaves
files as they were.

They run in-process through ``main`` and need no model, except the one that rebuilds a
release over an old one (the bundled tiny model, seconds).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from photoimmune.cli import main
from photoimmune.registry.admin import add_vendor, init_registry, open_registry, publish
from photoimmune.registry.keys import load_signer, write_key
from photoimmune.sdk import io as sdk_io
from photoimmune.sdk.errors import OutputPathError
from photoimmune.sdk.io import check_output_dir

from .helpers import tiny_release


def refused(capsys, *args: str, status: int = 2) -> str:
    """Run the command line; it must exit ``status`` (2: bad input) without a traceback.
    Returns what it printed."""
    code = main(list(args))
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert code == status, text
    assert "Traceback" not in text
    return text


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "ok.png"
    Image.new("RGB", (32, 32), (90, 120, 150)).save(path)
    return path


@pytest.fixture
def registry(tmp_path) -> Path:
    """A registry folder (one root key), vendor ``acme`` and its release acme/quick@1, whose
    weights ship with no one (made by hand: no model)."""
    paths = init_registry(tmp_path / "reg", root_keys=1, root_threshold=1)
    acme = write_key(tmp_path / "acme.pem")
    handle = open_registry(paths.root)
    add_vendor(handle, "acme", [acme.public_key], 1, [load_signer(paths.keys / "targets.pem")])
    release = tmp_path / "release"
    release.mkdir()
    for name, data in tiny_release("acme/quick@1").items():
        (release / Path(name).name).write_bytes(data)
    publish(handle, "acme", release, [acme])
    return paths.root


@pytest.fixture
def locked(tmp_path, monkeypatch) -> Path:
    """A folder this user may not create files in, whoever runs the tests."""
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    real_access = os.access

    def os_access_denying_writes_to_locked(path, mode, *args, **kwargs):
        # A stand-in for the OS's answer at its boundary: root, which runs CI, may
        # write anywhere, so the mode bits alone would not refuse it.
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    # sdk.io.check_output_dir asks os.access; every command's output folder goes through it.
    monkeypatch.setattr(sdk_io.os, "access", os_access_denying_writes_to_locked)
    return folder


# -- numbers out of range ----------------------------------------------------------------


SERVE = ["service", "serve", "--db", "s.db", "-r", "r", "--keys", "k"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["immunize", "ok.png", "-o", "out", "--seed", "99999999999999999999999"], "--seed"),
        (["immunize", "ok.png", "-o", "out", "--steps", "99999999"], "--steps"),
        (["eval", "ok.png", "--seed", "99999999999999999999999"], "--seed"),
        (["eval", "ok.png", "--diffusion-steps", "99999999"], "--diffusion-steps"),
        (["reimmunize", "--registry", "r", "--models", "a/b", "--seed", "-1"], "--seed"),
        (
            ["targets", "train-immunizer", "--model", "m", "-o", "o", "--steps", f"{10**12}"],
            "--steps",
        ),
        (["registry", "serve", "reg", "--port", "99999"], "--port"),
        (["manifests", "serve", "--port", "99999"], "--port"),
        ([*SERVE, "--port", "-1"], "--port"),
        ([*SERVE, "--max-upload-bytes", "-1"], "--max-upload-bytes"),
        ([*SERVE, "--steps", "0"], "--steps"),
        (["service", "key", "add", "q", "--db", "s.db", "--rate", "9" * 23], "--rate"),
        (
            ["registry", "vendor", "add", "b", "--key", "k", "-r", "r", "--threshold", "0"],
            "--threshold",
        ),
    ],
)
def test_numbers_out_of_range_are_refused_by_name(args, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = refused(capsys, *args)
    assert option in text
    assert "\n" not in text.split("Error:")[-1].strip()  # one line for the problem
    assert not list(tmp_path.iterdir())  # no database, no folder, no key made


def test_a_threshold_above_the_keys_given_is_bad_input(registry, tmp_path, capsys):
    write_key(tmp_path / "bob.pem")
    args = ["registry", "vendor", "add", "bob", "--key", str(tmp_path / "bob.pub.pem")]
    text = refused(capsys, *args, "--registry", str(registry), "--threshold", "2")
    assert "threshold 2" in text and "choose 1 to 1" in text


# -- trust anchors and URLs --------------------------------------------------------------


@pytest.mark.parametrize("content", [None, b"hello, not a certificate\n", b""])
def test_a_bad_trust_file_is_named_and_not_blamed_on_the_image(photo, tmp_path, capsys, content):
    trust = photo if content is None else tmp_path / "junk.pem"
    if content is not None:
        trust.write_bytes(content)
    text = refused(capsys, "verify", str(photo), "--trust", str(trust))
    assert f"--trust {trust}: not a PEM CA certificate" in text
    assert "altered" not in text


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:abc", "its port 'abc' is not a number"),
        ("http://[::1", "its host is not a well-formed [IPv6] address"),
        ("http://127.0.0.1:8480/ x", "it holds a space"),
        ("http://:80", "it names no host"),
    ],
)
def test_a_malformed_resolver_url_is_refused_before_any_lookup(photo, url, problem, capsys):
    text = refused(capsys, "verify", str(photo), "--resolver", url)
    assert f"--resolver {url!r}: {problem}" in text and "give an http(s) URL" in text


def test_a_malformed_registry_url_is_named(registry, capsys):
    args = ["--registry", "http://127.0.0.1:abc", "--root", str(registry / "root.json")]
    text = refused(capsys, "registry", "show", "acme/quick@1", *args)
    assert "'http://127.0.0.1:abc': not a registry URL" in text


@pytest.mark.parametrize("kind", ["missing", "folder", "not json", "not a root"])
def test_a_bad_root_is_named_before_anything_is_made(registry, photo, tmp_path, kind, capsys):
    root = {
        "missing": tmp_path / "nothere.json",
        "folder": registry,
        "not json": photo,
        "not a root": tmp_path / "other.json",
    }[kind]
    if kind == "not a root":
        root.write_text(json.dumps({"signed": {"_type": "targets"}, "signatures": []}))
    server = ["--registry", "http://127.0.0.1:9", "--root", str(root)]
    assert str(root) in refused(capsys, "registry", "list", *server)
    out = tmp_path / "out"
    text = refused(
        capsys, "immunize", str(photo), "-o", str(out), "--target", "acme/quick", *server
    )
    assert str(root) in text
    assert not out.exists() and not (tmp_path / "keys").exists()  # no keys made, no output


def test_a_registry_that_is_not_there_or_has_no_root_is_bad_input(registry, tmp_path, capsys):
    missing = str(tmp_path / "nothere")
    assert "no such registry folder" in refused(capsys, "registry", "list", "--registry", missing)
    text = refused(capsys, "registry", "list", "--registry", "http://127.0.0.1:9")
    assert "no trusted root given" in text
    before = (registry / "root.json").read_bytes()
    assert "already exists" in refused(capsys, "registry", "init", str(registry))
    assert (registry / "root.json").read_bytes() == before


def test_a_target_without_local_weights_asks_for_model_before_any_work(
    registry, photo, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["immunize", str(photo), "-o", str(out), "--target", "acme/quick@1"]
    text = refused(capsys, *args, "--registry", str(registry), "--no-sign")
    assert "--target acme/quick@1" in text and "pass --model FOLDER" in text
    assert "bind_model" not in text and not out.exists()


# -- files and folders -------------------------------------------------------------------


def test_keys_init_refuses_a_long_organization_and_a_folder_it_cannot_make(tmp_path, capsys):
    folder = tmp_path / "k"
    text = refused(capsys, "keys", "init", "--dir", str(folder), "--organization", "a" * 65)
    assert "--organization" in text and not folder.exists()
    (tmp_path / "file").write_text("x")
    assert "is a file" in refused(capsys, "keys", "init", "--dir", str(tmp_path / "file" / "k"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_the_system_refuses_is_one_line(capsys):
    # /proc takes no new folders (ENOENT as root, EACCES otherwise): the file system's
    # own refusal, which no check foresees, still reaches the user as one line.
    text = refused(capsys, "keys", "init", "--dir", "/proc/photoimmune-test")
    assert "/proc/photoimmune-test" in text and "check the path" in text


def test_an_unwritable_folder_is_refused_before_anything_is_written(registry, locked, capsys):
    for args in (
        ["keys", "init", "--dir", str(locked / "k")],
        ["registry", "init", str(locked / "reg")],
        ["registry", "export", str(registry), str(locked / "site")],
        ["registry", "keygen", str(locked / "k.pem")],
    ):
        assert "not writable" in refused(capsys, *args)
    assert not list(locked.iterdir())


def test_the_sdk_refuses_an_unwritable_folder_too(locked):
    with pytest.raises(OutputPathError, match="is not writable for you; choose another folder"):
        check_output_dir(locked / "copies", option="out_dir")
    assert not list(locked.iterdir())


def test_a_key_or_certificate_that_is_not_pem_is_refused_under_its_option(photo, tmp_path, capsys):
    assert main(["keys", "init", "--dir", str(tmp_path / "k")]) == 0
    bad = tmp_path / "bad.pem"
    bad.write_text("not a PEM file")
    args = ["immunize", str(photo), "-o", str(tmp_path / "out"), "--model", "tiny-ldm@1"]
    key, cert = str(tmp_path / "k" / "publisher.key"), str(tmp_path / "k" / "publisher.pem")
    text = refused(capsys, *args, "--key", key, "--cert", str(bad))
    assert f"--cert {bad}: no PEM certificates found" in text
    text = refused(capsys, *args, "--key", str(bad), "--cert", cert)
    assert f"--key {bad}: not an unencrypted PEM private key" in text
    assert not (tmp_path / "out").exists()


def test_a_dry_run_takes_any_out(registry, photo, locked, tmp_path, capsys):
    db = str(tmp_path / "c.db")
    assert main(["catalog", "add", str(photo), "--db", db]) == 0
    capsys.readouterr()
    args = ["reimmunize", "--registry", str(registry), "--root", str(registry / "root.json")]
    args += ["--models", "acme/quick", "--db", db, "--out", str(locked / "copies")]
    assert main([*args, "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert len(planned["images"]) == 1 and planned["targets"][0]["ref"] == "acme/quick@1"
    assert "not writable" in refused(capsys, *args)  # a run that writes still needs the folder
    assert not list(locked.iterdir())


def test_keygen_never_replaces_either_half_of_a_key(photo, tmp_path, capsys):
    public = tmp_path / "b.pub.pem"
    public.write_text("the public half handed to the admin\n")
    assert "keys are never replaced" in refused(
        capsys, "registry", "keygen", str(tmp_path / "b.pem")
    )
    assert public.read_text() == "the public half handed to the admin\n"
    assert not (tmp_path / "b.pem").exists()
    assert "is a file" in refused(capsys, "registry", "keygen", str(photo / "k.pem"))
    assert "is a file" in refused(capsys, "registry", "init", str(photo))


# -- databases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["catalog", "list"], "no such catalog"),
        (
            ["reimmunize", "--registry", "reg", "--models", "photoimmune/tiny-ldm", "--dry-run"],
            "no such catalog",
        ),
        (["service", "key", "list"], "no such service database"),
        (["service", "key", "revoke", "newsroom"], "no such service database"),
        (["manifests", "serve"], "no such manifest store"),
        (["registry", "serve", "reg"], "no such registry database"),
    ],
)
def test_commands_that_read_a_database_never_create_one(registry, args, what, tmp_path, capsys):
    typo = tmp_path / "typo.db"
    command = [a if a != "reg" else str(registry) for a in args]
    text = refused(capsys, *command, "--db", str(typo))
    assert f"--db {typo}: {what}" in text
    assert not typo.exists()


@pytest.mark.parametrize(
    ("db", "what"),
    [
        ("bogus://", "not a database URL"),
        ("sqlite:////nonexist/x.db", "/nonexist/x.db"),
        ("postgresql+pg8000://u@localhost/db", "its driver is not installed (pg8000)"),
    ],
)
def test_a_database_url_that_cannot_work_is_bad_input(registry, db, what, capsys):
    assert what in refused(capsys, "registry", "serve", str(registry), "--db", db)


def test_service_key_errors_name_the_service_database(tmp_path, capsys):
    text = refused(capsys, "service", "key", "add", "q", "--db", str(tmp_path / "no" / "s.db"))
    assert "catalog" not in text and str(tmp_path / "no") in text


def test_service_key_list_takes_json_and_never_shows_the_key(tmp_path, capsys):
    db = str(tmp_path / "service.db")
    assert main(["service", "key", "add", "newsroom", "--db", db, "--rate", "30"]) == 0
    key = capsys.readouterr().out.split()[-1]
    assert main(["service", "key", "revoke", "newsroom", "--db", db]) == 0
    capsys.readouterr()
    assert main(["service", "key", "list", "--db", db, "--json"]) == 0
    out = capsys.readouterr().out
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["name"] == "newsroom" and record["rate_per_minute"] == 30
    assert record["state"] == "revoked" and record["revoked_at"] and key not in out


# -- what a command refuses to replace or create ----------------------------------------


def test_targets_build_keeps_an_existing_release_unless_told(tmp_path, capsys):
    release = tmp_path / "rel"
    release.mkdir()
    for name, data in tiny_release("acme/quick@1").items():
        (release / Path(name).name).write_bytes(data)
    (release / "scorecard.json").write_text("{}")
    before = (release / "target.json").read_bytes()
    build = [
        "targets",
        "build",
        "--model",
        "tiny-ldm@1",
        "--ref",
        "acme/quick@2",
        "-o",
        str(release),
    ]
    text = refused(capsys, *build)
    assert "already holds a release" in text and "--overwrite" in text
    assert (release / "target.json").read_bytes() == before
    assert main([*build, "--overwrite"]) == 0
    assert json.loads((release / "target.json").read_text())["ref"]["version"] == "2"
    assert not (release / "scorecard.json").exists()  # it measured the release replaced


def test_service_refuses_a_key_folder_without_keys(registry, tmp_path, capsys):
    keys = tmp_path / "nokeys"
    args = ["--db", str(tmp_path / "s.db"), "--registry", str(registry), "--keys", str(keys)]
    text = refused(capsys, "service", "serve", *args)
    assert f"--keys {keys}" in text and "keys init" in text
    assert not keys.exists() and not (tmp_path / "s.db").exists()


# -- messages ------------------------------------------------------------------------------


def test_a_subscription_without_its_vendor_says_so(capsys):
    text = refused(capsys, "reimmunize", "--registry", "r", "--models", "tiny-ldm", "--dry-run")
    assert "photoimmune/tiny-ldm" in text and "vendor" in text and "not a version" not in text


def test_service_keys_that_name_a_file_are_refused_as_no_folder(registry, tmp_path, capsys):
    keys = tmp_path / "afile"
    keys.write_text("not a folder")
    args = ["--db", str(tmp_path / "s.db"), "--registry", str(registry), "--keys", str(keys)]
    text = refused(capsys, "service", "serve", *args)
    assert f"--keys {keys}: is a file, not a key folder" in text
    assert f"--dir {keys}" not in text  # keys init would refuse that file too
    assert keys.read_text() == "not a folder" and not (tmp_path / "s.db").exists()
