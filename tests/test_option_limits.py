"""Regression tests for option checking from a hardening probe: sizes past the working
area, a demo that failed only after its header, budgets too small to change a pixel or
too long to read, and options that were ignored without a word.

Each bad option is refused with exit status 2 and a message that names it, before any
model loads and before anything is written. None of them loads a model, nor even
imports torch: the limits live in torch-free modules (``sdk.attacks.sizing``,
``sdk.limits``), so a typo is answered at once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from photoimmune.sdk.attacks.budget import MAX_BUDGET_CHARS, MIN_BUDGET, parse_budget
from photoimmune.sdk.errors import InputError

from . import test_hardening_cli as hardening

refused = hardening.refused
photo = hardening.photo  # the fixture: a small PNG, tmp_path / "ok.png"


def _nothing_written(folder: Path, *kept: Path) -> None:
    assert sorted(folder.iterdir()) == sorted(kept)


# -- eval --size and demo --size: the working area immunize enforces ---------------------


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "ok.png", "--size", "100000", "--steps", "1", "--edit-steps", "2", "-o", "ev"],
        ["demo", "--size", "100000", "--steps", "1", "--edit-steps", "5", "-o", "dm"],
        ["demo", "--size", "2056", "-o", "dm"],  # the first multiple of 8 past the limit
    ],
)
def test_a_size_past_the_working_area_is_refused_before_any_work(
    args, photo, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    text = refused(capsys, *args)
    assert f"size {args[args.index('--size') + 1]}" in text
    assert "over the limit of 4194304; use a size of at most 2048" in text
    assert "chelsea.png at" not in text  # the demo's header: nothing started
    _nothing_written(tmp_path, photo)  # no keys, no registry, no pictures


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--size", "100000", "-o", "ev"],
        ["eval", "--edit-steps", "1", "--strength", "0.5", "-o", "ev"],
        ["demo", "--size", "100000", "-o", "dm"],
        ["demo", "--edit-steps", "2", "-o", "dm"],
    ],
)
def test_eval_and_demo_refuse_sizes_and_edit_steps_before_importing_torch(args, tmp_path):
    # A fresh interpreter: this one has imported torch long ago.
    script = (
        "import sys\n"
        "from photoimmune.cli.app import main\n"
        f"code = main({args!r})\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert "size" in done.stderr or "edit steps" in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())


def test_the_size_limit_is_the_working_area_of_an_attack():
    from photoimmune.sdk.attacks.sizing import MAX_WORKING_PIXELS, check_photo_size
    from photoimmune.sdk.evaluate.harness import EvalSettings

    check_photo_size(2048)  # exactly the working area: a 2048 px square
    assert MAX_WORKING_PIXELS == 2048 * 2048
    assert EvalSettings(size=2048).size == 2048
    with pytest.raises(InputError, match=r"size 2056: .* at most 2048"):
        EvalSettings(size=2056)


def test_demo_settings_are_checked_when_made():
    from dataclasses import replace

    from photoimmune.cli.demo import DemoSettings

    with pytest.raises(InputError, match="size 4096"):
        replace(DemoSettings(), size=4096)
    with pytest.raises(InputError, match="use at least 5 edit steps"):
        replace(DemoSettings(), edit_steps=2)


# -- demo: every option checked before its header ----------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--edit-steps", "2"], "0.2 of 2 edit steps runs none of them"),
        (["--edit-steps", "4", "--strength", "0.2"], "use at least 5 edit steps"),
        (["--edit-steps", "99999999"], "--edit-steps"),
        (["--size", "100"], "--size 100: use a multiple of 8"),
        (["--eps", "1/1000"], "below 1/255"),
    ],
)
def test_demo_refuses_a_bad_option_before_its_header(args, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    text = refused(capsys, "demo", "-o", "dm", *args)
    assert says in text
    assert "chelsea.png at" not in text  # its header
    assert time.perf_counter() - started < 60  # imports at most: the attack took minutes
    _nothing_written(tmp_path)


# -- budgets below one 8-bit level --------------------------------------------------------


@pytest.mark.parametrize("eps", ["1e-300", "1e-5", "1/510", "0.0039", "1e-999999999"])
def test_immunize_refuses_a_budget_that_changes_no_pixel(eps, photo, tmp_path, capsys):
    text = refused(capsys, "immunize", str(photo), "-o", str(tmp_path / "oe"), "--eps", eps)
    assert f"--eps={eps!r} is below 1/255, one 8-bit level" in text
    assert "would change no pixel" in text
    _nothing_written(tmp_path, photo)


@pytest.mark.parametrize("upper", [Fraction(1), None], ids=["linf", "l2"])
def test_the_budget_floor_is_one_level_for_either_norm(upper):
    # L∞: one level per pixel. L2: the shortest change on the 8-bit grid, one channel of
    # one pixel by one level, has norm 1/255 too.
    assert Fraction(1, 255) == MIN_BUDGET
    assert parse_budget("1/255", upper=upper) == MIN_BUDGET
    assert parse_budget(1 / 255, upper=upper) > 0  # a float 1/255, a hair under, is one level
    assert parse_budget("0.004", upper=upper) == Fraction(1, 250)
    for small in ("0.0039", "1/256", 1e-5, Fraction(1, 300), "1e-400"):
        with pytest.raises(InputError, match="below 1/255"):
            parse_budget(small, upper=upper)


# -- budgets too long to read, or past a float's range -----------------------------------


def test_an_over_long_budget_is_refused_by_its_length_not_echoed():
    nines = "9" * 5000
    with pytest.raises(InputError) as refusal:
        parse_budget(nines)
    message = str(refusal.value)
    assert "5000 characters long, over the 32 a budget needs" in message
    assert "not a number" not in message  # it is one, only too long
    assert len(message) < 200  # not the 5000 characters back
    longest = "0.03".ljust(MAX_BUDGET_CHARS, "0")
    assert parse_budget(longest) == Fraction(3, 100)
    with pytest.raises(InputError, match="33 characters long"):
        parse_budget(longest + "0")


def test_an_over_long_budget_is_refused_by_the_command_line(photo, tmp_path, capsys):
    out = str(tmp_path / "oe")
    text = refused(capsys, "immunize", str(photo), "-o", out, "--eps", "9" * 5000)
    assert "5000 characters long" in text
    assert len(text) < 400


def test_a_budget_exponent_is_answered_at_once():
    # Fraction("1e999999999") computes 10**999999999 exactly: minutes and gigabytes.
    started = time.perf_counter()
    for huge in ("1e999999999", "1E999999999", "0e999999999", "1e-999999999"):
        with pytest.raises(InputError):
            parse_budget(huge, upper=None)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(InputError, match="beyond a float's range"):
        parse_budget("1e999999999", upper=None)


# -- options that would be ignored --------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--registry", "reg"], "--registry is only for fetching a --target"),
        (["--root", "root.json"], "--root is only for fetching a --target"),
        (
            ["--target", "acme/quick@1", "--registry", "reg", "--recipe", "checker"],
            "a --target's release carries its own target image: drop --recipe",
        ),
    ],
)
def test_immunize_refuses_options_it_would_ignore(extra, says, photo, tmp_path, capsys):
    text = refused(capsys, "immunize", str(photo), "-o", str(tmp_path / "out"), *extra)
    assert says in text
    _nothing_written(tmp_path, photo)


def test_targets_build_refuses_a_recipe_beside_a_target_image(photo, tmp_path, capsys):
    args = ["targets", "build", "--model", "tiny-ldm@1", "--ref", "acme/quick@1"]
    text = refused(
        capsys, *args, "-o", str(tmp_path / "rel"), "--target-image", str(photo), "--recipe", "gray"
    )
    assert "--recipe and --target-image both choose the target image: drop --recipe" in text
    _nothing_written(tmp_path, photo)


def test_immunize_refuses_signing_options_with_no_sign(tmp_path, photo, capsys):
    key = tmp_path / "k.pem"
    key.write_text("unused")
    for option, value in (("--key", key), ("--keys", tmp_path)):
        args = ["immunize", str(photo), "-o", str(tmp_path / "out"), "--no-sign", option]
        text = refused(capsys, *args, str(value))
        assert f"{option} is for signing, and --no-sign is given" in text
    assert not (tmp_path / "out").exists()


def test_eval_refuses_features_arch_without_features(tmp_path, photo, capsys):
    args = ["eval", str(photo), "--features-arch", "resnet50", "-o", str(tmp_path / "ev")]
    assert "--features-arch names the --features weights' architecture" in refused(capsys, *args)
    assert not (tmp_path / "ev").exists()


# -- a CLI probe after the day's argument checks (2026-12-07) ----------------------------


def test_train_immunizer_refuses_a_learning_rate_that_is_not_finite(tmp_path, capsys):
    out = tmp_path / "release"
    args = ["targets", "train-immunizer", "--model", "tiny-ldm@2", "--steps", "1", "-o", str(out)]
    assert "lr=inf: give a finite learning rate" in refused(capsys, *args, "--lr", "inf")
    assert "--seed" in refused(capsys, *args, "--seed", str(2**64))
    assert not out.exists()  # it used to train, then write NaN weights


def test_eval_names_its_size_option_for_a_size_off_the_latent_grid(tmp_path, capsys):
    text = refused(capsys, "eval", "--size", "65", "-o", str(tmp_path / "ev"))
    assert "--size 65: use a multiple of 8" in text and "Input should" not in text


def test_keys_init_lists_what_it_wrote_and_warns_in_one_line(tmp_path, capsys):
    from photoimmune.cli.app import main

    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "dangling").symlink_to(tmp_path / "nowhere")  # not the command's to list
    assert main(["keys", "init", "--dir", str(folder)]) == 0
    printed = capsys.readouterr()
    assert "dangling" not in printed.out and printed.out.count("0o600") == 3
    assert printed.err.startswith("warning: ") and "KeyFolderWarning" not in printed.err
