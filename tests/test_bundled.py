"""The bundled weights: layout, size, offline loading, and the quality bars."""

from __future__ import annotations

import json
import subprocess
import sys

from photoimmune.sdk.cli import main
from photoimmune.sdk.models import bundled_models, check_model, resolve_model


def test_bundled_models_are_in_diffusers_layout_and_small():
    models = bundled_models()
    assert [m.name for m in models][:1] == ["tiny-ldm@1"]
    for m in models:
        index = json.loads((m.path / "model_index.json").read_text())
        assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
        for part in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
            assert (m.path / part).is_dir()
    total = sum(f.stat().st_size for m in models for f in m.path.rglob("*") if f.is_file())
    assert total < 40e6


def test_bundled_names_resolve():
    assert resolve_model("tiny-ldm@1") == resolve_model("photoimmune/tiny-ldm@1")
    assert resolve_model("tiny-ldm") == bundled_models()[-1].path  # the latest version


def test_bundled_models_meet_the_quality_bars():
    for m in bundled_models():
        report = check_model(m.name)
        assert min(report.vae_psnr_db.values()) >= 22.0, report
        assert min(report.img2img_psnr_db.values()) >= 16.0, report


def test_plain_diffusers_loads_the_printed_folder(capfd):
    assert main(["model", "path", "tiny-ldm@1"]) == 0
    folder = capfd.readouterr().out.strip().splitlines()[-1]
    code = (
        "import sys; from diffusers import StableDiffusionImg2ImgPipeline as P; "
        "P.from_pretrained(sys.argv[1], local_files_only=True)"
    )
    out = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_make_demo_default_runs_on_the_bundled_model(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "10"]) == 0
    assert "SSIM" in capsys.readouterr().out
    assert (tmp_path / "grid.png").is_file()
