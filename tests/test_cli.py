"""The CLI frame: version, help, and errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from photoimmune.cli import main
from photoimmune.sdk import __version__


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    exe = [
        sys.executable,
        "-c",
        "import sys; from photoimmune.cli import main; sys.exit(main())",
    ]
    return subprocess.run([*exe, *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"photoimmune {__version__}"
    assert main(["--help"]) == 0
    assert "immunization" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_bad_image_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = _cli("info", str(bad))
    assert out.returncode == 2
    assert "broken.png" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_image_too_elongated_to_attack_is_named_before_any_is_protected(tmp_path):
    photo, line = tmp_path / "photo.png", tmp_path / "banner.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    Image.fromarray(np.zeros((2, 400, 3), np.uint8)).save(line)
    out = _cli("immunize", str(photo), str(line), "-o", str(tmp_path / "out"), "--no-sign")
    assert out.returncode == 2
    assert "banner.png: 400x2 is 200:1" in out.stderr
    assert "Traceback" not in out.stderr
    # The batch failed before its first photo, so nothing half-done was written.
    assert not list((tmp_path / "out").glob("*.png"))


def test_verbose_shows_the_traceback(tmp_path):
    out = _cli("--verbose", "info", str(tmp_path / "missing.png"))
    assert out.returncode == 2
    assert "Traceback" in out.stderr
    assert "no such file" in out.stderr


def test_info_reports_mode_and_size(tmp_path, capsys):
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((5, 7), np.uint16)).save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "I;16" in out and "7" in out and "5" in out


def test_console_script_is_installed():
    bindir = __import__("sysconfig").get_paths()["scripts"]
    out = subprocess.run([f"{bindir}/photoimmune", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_reading_images_does_not_import_torch():
    # The CLI's quick commands stay quick: torch costs seconds to import.
    code = "import sys, photoimmune.sdk.io, photoimmune.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_info_names_each_unreadable_image_and_still_shows_the_others(tmp_path, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "broken.png"
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["info", str(bad), str(tmp_path / "missing.png"), str(good)]) == 2
    out, err = capsys.readouterr()
    assert "good.png" in out and "broken.png" not in out
    assert "broken.png" in err and "missing.png" in err and "Traceback" not in err
