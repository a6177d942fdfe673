"""The evaluation harness: the paper's table on the bundled model, with and without processing.

The FID/PR and CLIP code paths run on small *randomly initialised* networks built
from config (a torchvision ResNet-18 and a tiny CLIPModel with the bundled
tokenizer), saved to local files the way real weights would be: their numbers
mean nothing, only that the paths work end to end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torchvision
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from photoimmune.cli import main
from photoimmune.sdk.errors import InputError
from photoimmune.sdk.evaluate import PROCESSING, EvalReport, EvalSettings, evaluate
from photoimmune.sdk.io import load_image
from photoimmune.sdk.models import resolve_model
from photoimmune.sdk.samples import sample_path

PHOTOS = [sample_path("chelsea.png"), sample_path("coffee.png")]
QUICK = {"size": 64, "steps": 3, "diffusion_steps": 1, "edit_steps": 4}
RANGES = {
    "ssim": (-1, 1),
    "psnr": (0, 100),
    "vif_p": (0, 2),
    "fsim": (0, 1),
    "fid": (0, math.inf),
    "precision": (0, 1),
    "recall": (0, 1),
    "clip": (-100, 100),
}


@pytest.fixture(scope="module")
def feature_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("features") / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    tokenizer = CLIPTokenizer.from_pretrained(resolve_model("tiny-ldm@1") / "tokenizer")
    torch.manual_seed(0)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
    }
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor.save_pretrained(folder)
    return folder


def _check_numbers(report: EvalReport, expected: set[str]) -> None:
    for row in report.rows:
        assert {k for k, v in row.metrics.items() if v is not None} == expected, row
        for name, stat in row.metrics.items():
            low, high = RANGES[name]
            assert math.isfinite(stat.mean) and low <= stat.mean <= high, (row.method, name, stat)
            assert stat.std is None or (math.isfinite(stat.std) and stat.std >= 0)


def test_full_table_with_robustness_fid_and_clip(feature_weights, clip_folder, tmp_path):
    settings = EvalSettings(
        prompts=("a photo of a cat", "a painting"),
        features=str(feature_weights),
        features_arch="resnet18",
        clip=str(clip_folder),
        processing=tuple(PROCESSING),  # the purifiers: tests/test_purifiers.py
        **QUICK,
    )
    report = evaluate(PHOTOS, settings, out_dir=tmp_path)
    assert [(r.method, r.processing) for r in report.rows] == [
        (m, p) for m in ("noise", "encoder", "diffusion") for p in PROCESSING
    ]
    _check_numbers(report, set(RANGES))
    assert report.absent == {} and -100 <= report.reference_clip.mean <= 100
    assert len(report.grids) == 2 and all(load_image(g).width > 0 for g in report.grids)
    assert load_image(report.chart).width > 0
    rows = [r for r in csv.DictReader(io.StringIO(report.to_csv())) if r["metric"] in RANGES]
    assert len(rows) == 1 + len(report.rows) * len(RANGES)  # the clean edits' CLIP first
    assert (rows[0]["method"], rows[0]["metric"]) == ("clean", "clip")
    assert EvalReport.model_validate_json(report.model_dump_json()) == report


def test_inpaint_without_local_networks_the_columns_say_why():
    settings = EvalSettings(
        edit="inpaint",
        prompts=("a cat",),
        methods=("noise", "encoder"),
        processing=("none", "jpeg50"),
        **QUICK,
    )
    report = evaluate(PHOTOS[:1], settings)
    _check_numbers(report, {"ssim", "psnr", "vif_p", "fsim"})
    assert set(report.absent) == {"fid", "precision", "recall", "clip"}
    assert "--features" in report.absent["fid"] and "--clip" in report.absent["clip"]
    assert report.grids == [] and report.chart is None


def test_treatments_stay_in_budget_and_in_the_kept_region():
    from photoimmune.sdk.evaluate import treat

    pixels = load_image(PHOTOS[0]).pixels[:64, :64]
    keep = np.zeros((64, 64), np.uint8)
    keep[16:48, 16:48] = 1
    settings = EvalSettings(eps="0.03", steps=2, **{k: v for k, v in QUICK.items() if k != "steps"})
    for method in ("noise", "encoder"):
        (treated,) = treat(method, [pixels], settings, "tiny-ldm@1", keep)
        delta = np.abs(treated.astype(int) - pixels.astype(int))
        assert 0 < delta.max() <= 7  # 0.03 of 255 is 7.65: whole levels within the budget
        assert delta[keep == 0].max() == 0


def test_cli_refuses_unknown_settings_with_a_clear_message(capsys):
    assert main(["eval", "--methods", "noise,difusion"]) == 2
    assert "methods" in capsys.readouterr().err


def test_processing_keeps_size_and_changes_pixels():
    pixels = load_image(PHOTOS[0]).pixels[:64, :64]
    for name, process in PROCESSING.items():
        out = process(pixels)
        assert out.shape == pixels.shape and out.dtype == pixels.dtype
        assert (out != pixels).any() == (name != "none")


def test_eval_cli_prints_table_json_and_csv(tmp_path, capsys):
    args = [
        "eval",
        "chelsea.png",
        "--methods",
        "noise,encoder",
        "--no-robustness",
        "--prompt",
        "a cat",
        "--steps",
        "2",
        "--edit-steps",
        "3",
        "--size",
        "64",
        "--out",
        str(tmp_path / "pictures"),
        "--csv",
        str(tmp_path / "table.csv"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ssim" in out and "encoder" in out and "no feature extractor" in out
    assert (tmp_path / "table.csv").read_text().startswith("method,processing,metric,mean,std")
    assert main([*args, "--methods", "noise", "--json"]) == 0  # the last --methods wins
    report = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in report["rows"]] == ["noise"]
    assert set(report["absent"]) == {"fid", "precision", "recall", "clip"}


def test_eval_never_writes_its_pictures_or_csv_over_an_input_photo(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "metrics.png"  # the name of the chart eval draws
    shutil.copy(PHOTOS[0], photo)
    before = photo.read_bytes()
    quick = ["--methods", "noise", "--no-robustness", "--edit-steps", "4", "--size", "64"]
    assert main(["eval", str(photo), "--out", str(folder), *quick]) == 2
    assert "is one of the input photos" in capsys.readouterr().err
    csv_over_it = ["--out", str(tmp_path / "o"), "--csv", str(photo)]
    assert main(["eval", str(photo), *csv_over_it, *quick]) == 2
    assert "--csv" in capsys.readouterr().err
    assert photo.read_bytes() == before


def test_an_edit_that_would_run_no_denoising_step_is_refused_in_the_settings():
    with pytest.raises(InputError, match="at least 10 edit steps"):
        EvalSettings(strength=0.1, edit_steps=9)
    assert EvalSettings(strength=0.1, edit_steps=10).edit_steps == 10
    assert EvalSettings(edit="inpaint", strength=0.1, edit_steps=9).edit == "inpaint"
