"""A new user's first hour (issue 31): quick answers to bad options, readable tables.

Bad options are answered before torch is imported (seconds) or any attack runs
(minutes); ``--verbose`` works anywhere; file names are shown as written, never
parsed as markup; tables wrap rather than cut; listings have ``--json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from photoimmune.cli import checks
from photoimmune.sdk.errors import InputError, OutputExistsError, OutputPathError
from photoimmune.sdk.io import check_output_dir, check_output_path, save_image
from photoimmune.sdk.samples import sample_pixels

# The five bad-option cases bench/cli_latency.py times, as (arguments, what the error says).
BAD_OPTIONS = [
    (["immunize", "photo.jpg", "-o", "out", "--eps", "16"], "--eps"),
    (["immunize", "photo.jpg", "-o", "out", "--method", "foo"], "--method"),
    (["immunize", "photo.jpg", "-o", "out", "--steps", "0"], "--steps"),
    (["immunize", "photo.jpg", "-o", "out", "--model", "nope"], "--model"),
    (["immunize", "photo.jpg", "-o", "photo.jpg"], "is a file, not a folder"),
]


def _cli(*args: str, cwd: Path, columns: int = 100) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: a fresh process (module-level consoles read the width
    once), the given terminal width, keys in the test's own folder."""
    env = {**os.environ, "COLUMNS": str(columns), "PHOTOIMMUNE_KEY_DIR": str(cwd / "keys")}
    code = "import sys; from photoimmune.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    save_image(sample_pixels("chelsea.png", 64), path)
    return path


def test_bad_options_are_answered_before_torch_is_imported(tmp_path, photo):
    # One process runs every case: torch imported by any of them would stay in sys.modules.
    script = (
        "import json, sys, time\n"
        "from photoimmune.cli import main\n"
        "for args, _ in json.loads(sys.argv[1]):\n"
        "    started = time.perf_counter()\n"
        "    status = main(args)\n"
        "    print(json.dumps([status, 'torch' in sys.modules, time.perf_counter() - started]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(BAD_OPTIONS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [status for status, _, _ in results] == [2] * len(BAD_OPTIONS), out.stderr
    assert not any(torch for _, torch, _ in results)
    assert max(seconds for _, _, seconds in results) < 1.0  # milliseconds, in fact
    for (_, says), line in zip(BAD_OPTIONS, out.stderr.split("\n\n"), strict=False):
        assert says in out.stderr, line
    assert not (tmp_path / "out").exists()  # nothing was written, not even the folder


def test_an_existing_file_as_output_folder_is_refused_at_once(tmp_path, photo):
    started = time.perf_counter()
    out = _cli("immunize", "photo.jpg", "-o", "photo.jpg", cwd=tmp_path)
    assert time.perf_counter() - started < 10  # a process start; the attack took 22 s
    assert out.returncode == 2
    assert "-o/--out photo.jpg: is a file, not a folder" in out.stderr
    assert "Traceback" not in out.stderr


def test_output_checks_in_the_sdk(tmp_path, photo):
    with pytest.raises(OutputExistsError, match="already exists"):
        check_output_path(photo, overwrite=False)
    assert check_output_path(photo) == photo  # replacing is the caller's choice
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_path(photo / "x.png")
    with pytest.raises(OutputPathError, match=r"-o .*is a file, not a folder"):
        check_output_dir(photo, option="-o")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_dir(photo / "deeper", option="-o")
    assert check_output_dir(tmp_path / "new" / "folder") == tmp_path / "new" / "folder"


def test_sdk_writers_refuse_a_file_as_folder_before_any_compute(photo):
    # Nothing is loaded before the check: no catalog, registry or model is even looked at.
    from photoimmune.sdk.evaluate import evaluate
    from photoimmune.sdk.jobs.runner import run

    with pytest.raises(OutputPathError, match=r"out_dir .*is a file"):
        evaluate([photo], out_dir=photo)
    with pytest.raises(OutputPathError, match=r"out_dir .*is a file"):
        run(None, None, ["photoimmune/tiny-ldm"], out_dir=photo)  # type: ignore[arg-type]


def test_option_checks_name_the_option_and_the_choices():
    assert checks.budget("16/255") == "16/255"
    assert checks.budget("0.03") == "0.03"
    with pytest.raises(InputError, match="--eps"):
        checks.budget("16")
    with pytest.raises(InputError, match="choose one of encoder, diffusion"):
        checks.one_of("foo", checks.METHODS, "--method")
    with pytest.raises(InputError, match="not a version"):
        checks.subscriptions(["photoimmune/tiny-ldm@1"])
    assert checks.subscriptions(["a/b,c/d", "e/f"]) == ["a/b", "c/d", "e/f"]
    with pytest.raises(InputError, match="--model"):
        checks.models(["no-such-model"])


def test_the_eval_methods_mirror_the_harness():
    # The one choice the CLI mirrors: the harness that defines it imports torch.
    from photoimmune.cli.evaluate import EVAL_METHODS
    from photoimmune.sdk.evaluate.harness import DEFAULT_METHODS, EvalMethod

    assert typing.get_args(EvalMethod) == EVAL_METHODS
    assert set(DEFAULT_METHODS) <= set(EVAL_METHODS)  # what runs unless told


@pytest.mark.parametrize("where", ["first", "last", "middle"])
def test_verbose_works_anywhere(tmp_path, where):
    args = ["info", "missing.png"]
    position = {"first": 0, "last": len(args), "middle": 1}[where]
    args.insert(position, "--verbose")
    out = _cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" in out.stderr and "missing.png: no such file" in out.stderr


def test_verbose_after_a_double_dash_is_a_file_name(tmp_path):
    out = _cli("info", "--", "-v", cwd=tmp_path)
    assert out.returncode == 2
    assert "-v: no such file" in out.stderr and "Traceback" not in out.stderr


def test_file_names_are_never_markup(tmp_path):
    # Issue 30 #12: `photoimmune info '[/]x.png'` crashed rich instead of saying "no such file".
    out = _cli("info", "[/]x.png", cwd=tmp_path)
    assert out.returncode == 2
    assert "[/]x.png: no such file" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "[").mkdir()
    save_image(sample_pixels("coffee.png", 32), tmp_path / "[" / "]x.jpg")
    save_image(sample_pixels("coffee.png", 32), tmp_path / "[red]y.jpg")
    out = _cli("info", "[/]x.jpg", "[red]y.jpg", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[/]x.jpg" in out.stdout and "[red]y.jpg" in out.stdout


def test_registry_url_without_root_names_it_with_both_slashes(tmp_path):
    out = _cli("registry", "list", "--registry", "http://127.0.0.1:8470", cwd=tmp_path)
    assert out.returncode != 0
    assert "http://127.0.0.1:8470/root.json" in out.stderr
    assert "http:/127" not in out.stderr.replace("http://", "")


def test_listings_have_json(tmp_path, photo):
    models = _cli("model", "list", "--json", cwd=tmp_path)
    assert [json.loads(line)["name"] for line in models.stdout.splitlines()] == [
        "tiny-ldm@1",
        "tiny-ldm@2",
        "tiny-ldm@3",
        "tiny-ldm@4",
        "tiny-ldm@6",
    ]
    info = _cli("info", "--json", "photo.jpg", cwd=tmp_path)
    assert json.loads(info.stdout) == {
        "image": "photo.jpg",
        "format": "JPEG",
        "mode": "RGB",
        "width": 64,
        "height": 64,
    }


def test_model_list_shows_whole_names_and_paths(tmp_path):
    out = _cli("model", "list", cwd=tmp_path, columns=100)
    assert "…" not in out.stdout
    assert "photoimmune/tiny-ldm@1" in out.stdout and "photoimmune/tiny-ldm@2" in out.stdout


def test_catalog_list_shows_whole_file_names_at_100_columns(tmp_path):
    name = "2025-06-14 press conference, second row, left.jpg"
    (tmp_path / "photos").mkdir()
    save_image(sample_pixels("coffee.png", 32), tmp_path / "photos" / name)
    added = _cli("catalog", "add", "photos", "--db", "catalog.db", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    listed = _cli("catalog", "list", "--db", "catalog.db", cwd=tmp_path, columns=100)
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout
    # Whole, relative to where the user stands (wrapped lines joined, as a reader does).
    assert _squeezed(f"photos/{name}") in _column(listed.stdout, 0)


def test_verify_shows_every_ref_at_100_columns(tmp_path):
    from photoimmune.sdk.keys import open_keys
    from photoimmune.sdk.manifest import sign_pixels

    from .helpers import protection

    keys, _ = open_keys(tmp_path / "keys")
    refs = [f"example-vendor/stable-diffusion-xl-refiner@1.{n}.0" for n in range(3)]
    protections = [protection(ref) for ref in refs]
    data = sign_pixels(sample_pixels("coffee.png", 32), protections, keys.signer("publisher"))
    (tmp_path / "signed.png").write_bytes(data)
    out = _cli("verify", "signed.png", cwd=tmp_path, columns=100)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout
    protected = _column(out.stdout, 4)
    assert all(_squeezed(ref) in protected for ref in refs), out.stdout


def _column(table: str, index: int) -> str:
    """One column of a rich table, its wrapped lines joined back (spaces dropped: a line
    may end at a space or in the middle of a word)."""
    cells = []
    for line in table.splitlines():
        parts = line.split("│")
        if len(parts) > index + 1:
            cells.append(_squeezed(parts[index + 1]))
    return "".join(cells)


def _squeezed(text: str) -> str:
    return "".join(text.split())


def test_help_names_values_not_python_types_and_says_the_defaults(tmp_path):
    # Issue 31: `<bool>` beside every flag, `<list[Path]>` beside repeatable options.
    for command in (["immunize"], ["reimmunize"], ["catalog", "add"], ["verify"]):
        out = _cli(*command, "--help", cwd=tmp_path, columns=240)
        assert out.returncode == 0, out.stderr
        assert "<bool>" not in out.stdout and "<list[" not in out.stdout, out.stdout
    help_text = " ".join(_cli("immunize", "--help", cwd=tmp_path, columns=240).stdout.split())
    assert "--eps EPS" in help_text and "--keys KEYS" in help_text
    assert "(default: tiny-ldm@1)" in help_text  # --model
    assert help_text.count("default: the target's recommendation") >= 3  # method, eps, steps


@pytest.mark.slow
def test_immunize_follows_the_targets_budget_for_what_is_not_given(tmp_path):
    # Issue 23 #5: `--method diffusion` alone used the CLI's own 8/255, not the 16/255
    # the target recommends for that method.
    save_image(sample_pixels("chelsea.png", 32), tmp_path / "small.png")
    out = _cli(
        "immunize", "small.png", "-o", "out", "--method", "diffusion", "--steps", "1",
        "--no-sign", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (protection,) = json.loads(out.stdout)["protections"]
    assert (protection["method"], protection["eps"]) == ("diffusion", "16/255")


@pytest.mark.parametrize("verbose", [False, True])
def test_library_notices_are_quiet_unless_verbose(monkeypatch, verbose):
    # Issue 31: diffusers' float32 notices and Ray's token-auth warning on a normal run.
    import logging
    import warnings

    import diffusers

    from photoimmune.cli import common

    before = diffusers.utils.logging.get_verbosity()
    monkeypatch.setenv("RAY_LOGGER_LEVEL", "")  # recorded, so the test leaves it as it was
    monkeypatch.delenv("RAY_LOGGER_LEVEL")
    monkeypatch.setattr(common.options, "verbose", verbose)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            common.quiet_libraries()
            warnings.warn_explicit(
                "The VAE should be kept in float32", UserWarning, "m.py", 1, module="diffusers.m"
            )
            warnings.warn_explicit("ours", UserWarning, "m.py", 1, module="photoimmune.sdk.m")
        shown = [str(w.message) for w in caught]
        quiet = diffusers.utils.logging.get_verbosity() == logging.ERROR
    finally:
        diffusers.utils.logging.set_verbosity(before)
    assert "ours" in shown  # our own warnings are the user's business
    assert ("The VAE should be kept in float32" in shown) == verbose
    assert (os.environ.get("RAY_LOGGER_LEVEL") == "error") != verbose  # Ray starts at it
    assert quiet != verbose or before == logging.ERROR


def test_progress_counts_the_steps_asked_for_and_names_the_finish(tmp_path):
    # Issue 31: the bar read 110/110 for 100 steps (the 8-bit finish counted as steps).
    save_image(sample_pixels("chelsea.png", 32), tmp_path / "small.png")
    out = _cli("immunize", "small.png", "-o", "out", "--steps", "10", "--no-sign", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "10/10" in out.stderr and "finishing 1/1" in out.stderr, out.stderr
    assert "11/11" not in out.stderr


def test_registry_show_of_a_bundled_release_prints_no_loading_bars(tmp_path):
    from photoimmune.registry.admin import local_registry

    local_registry(tmp_path / "reg", ["tiny-ldm@4"])  # its target loads v4's gated VAE
    shown = _cli(
        "registry", "show", "photoimmune/tiny-ldm@4", "--registry", "reg", "--json", cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["ref"]["version"] == "4"
    assert "Loading" not in shown.stderr
