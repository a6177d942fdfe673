"""The distribution installs only under `photoimmune.*`, built or editable."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import photoimmune.sdk

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ("sdk", "registry", "diffusers_plugin", "cli")

# Checks that run in a clean interpreter: -S skips site-packages' .pth hooks (the
# editable finder), so only the paths we put first can supply `photoimmune`.
PROBE = """
import importlib.util, sys
sys.path[:0] = sys.argv[1:]
import photoimmune.sdk, photoimmune.registry, photoimmune.diffusers_plugin, photoimmune.cli
print(photoimmune.sdk.__file__)
for name in {generic!r}:
    assert importlib.util.find_spec(name) is None, name
"""


def _package_inits() -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for folder in GENERIC
        for p in (ROOT / folder).rglob("__init__.py")
    )


def _probe(paths: list[str], cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-S", "-c", PROBE.format(generic=GENERIC), *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
def test_wheel_installs_only_under_photoimmune(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("photoimmune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"photoimmune"}
    # Every package folder in the repo made it in (pyproject lists them by hand).
    for init in _package_inits():
        assert f"photoimmune/{init}" in names, f"{init} is missing from pyproject's packages"
    # The registry's Alembic migrations are data files, so they are checked by name.
    assert "photoimmune/registry/migrations/versions/0001_initial.py" in names
    # So did the bundled model weights, in builds that carry them.
    from photoimmune.sdk.models import bundled_models

    for model in bundled_models():
        assert f"photoimmune/sdk/models/bundled/{model.path.name}/model_index.json" in names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    assert not any((target / name).exists() for name in GENERIC)
    deps = sysconfig.get_paths()["purelib"]  # torch, pydantic... but no .pth hooks under -S
    located = _probe([str(target), deps], cwd=tmp_path)
    assert located.startswith(str(target))
    # The console script points at the moved CLI.
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "photoimmune = photoimmune.cli:main" in scripts


def test_editable_install_maps_the_repo_folders(tmp_path):
    # The running interpreter has the project installed editable (make venv).
    assert Path(photoimmune.sdk.__file__).resolve().parent == ROOT / "sdk"
    site = Path(sysconfig.get_paths()["purelib"])
    assert not any((site / name).exists() for name in GENERIC)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(generic=GENERIC)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().parent == ROOT / "sdk"
