"""ruff is configured in pyproject.toml and the tree is clean."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    ruff = Path(sysconfig.get_paths()["scripts"]) / "ruff"
    out = subprocess.run([str(ruff), "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
