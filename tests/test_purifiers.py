"""Purifiers as processing steps of the evaluation, the EOT transforms that harden against
them, and the gap-over-noise report."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from photoimmune.cli import main
from photoimmune.sdk.attacks.transforms import NoisyUpscale as EotUpscale
from photoimmune.sdk.attacks.transforms import RandomNoise, default_eot
from photoimmune.sdk.errors import InputError
from photoimmune.sdk.evaluate import EvalReport, EvalSettings, evaluate
from photoimmune.sdk.evaluate.harness import EvalRow, Stat
from photoimmune.sdk.evaluate.processing import PROCESSING_NAMES, processing_steps
from photoimmune.sdk.evaluate.purifiers import DiffPure, GaussianNoise, Impress, NoisyUpscale
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.samples import sample_path, sample_pixels


@pytest.fixture(scope="module")
def pipe(tiny_models):
    return load_pipeline(tiny_models[0])


def test_model_free_purifiers_keep_size_are_seeded_and_change_pixels():
    pixels = sample_pixels("coffee.png", 64)
    for purifier in (GaussianNoise(), NoisyUpscale()):
        out = purifier(pixels)
        assert out.shape == pixels.shape and out.dtype == np.uint8
        assert (out != pixels).any()
        assert np.array_equal(out, purifier(pixels))  # same seed, same noise
    noise = GaussianNoise(sigma=0.03)(np.full((64, 64, 3), 128, np.uint8)).astype(float) - 128
    assert 0.025 * 255 < noise.std() < 0.035 * 255
    # Downscaling averages the noise away: on a flat photo, little of it is left.
    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = GaussianNoise(sigma=0.05)(flat).astype(float)
    upscaled = NoisyUpscale(sigma=0.05)(flat).astype(float)
    assert np.abs(upscaled - 128).mean() < 0.6 * np.abs(noisy - 128).mean()


def test_model_purifiers_make_a_photo_consistent_and_re_diffuse_it(pipe, tiny_models):
    from photoimmune.sdk.immunization import immunize
    from photoimmune.sdk.io import pixels_to_tensor

    def inconsistency(pixels: np.ndarray) -> float:
        """How far the VAE's round trip moves the photo: what IMPRESS minimises."""
        x = pixels_to_tensor(pixels)
        with torch.no_grad():
            latent = pipe.vae.encode(x * 2 - 1).latent_dist.mean
            decoded = (pipe.vae.decode(latent).sample + 1) / 2
        return float((decoded - x).pow(2).mean())

    immunized = immunize(sample_pixels("chelsea.png", 64), tiny_models[0], steps=5).pixels
    purified = Impress(pipe.vae, iterations=5)(immunized)
    assert purified.shape == immunized.shape and purified.dtype == np.uint8
    assert inconsistency(purified) < inconsistency(immunized)
    assert np.abs(purified.astype(int) - immunized).mean() < 8  # it stays close to the photo
    purified = DiffPure(pipe, steps=10)(immunized)  # t* 0.1: one denoising step
    assert purified.shape == immunized.shape and (purified != immunized).any()
    with pytest.raises(InputError, match="no denoising step"):
        DiffPure(pipe, steps=4)


def test_processing_steps_by_name_and_clear_errors():
    steps = processing_steps(["none", "jpeg75", "gauss", "upscale"])
    assert list(steps) == ["none", "jpeg75", "gauss", "upscale"]
    assert PROCESSING_NAMES[0] == "none" and {"diffpure", "impress"} <= set(PROCESSING_NAMES)
    with pytest.raises(InputError, match="unknown processing"):
        processing_steps(["jpeg76"])
    with pytest.raises(InputError, match="model="):
        processing_steps(["impress"])


def test_eot_transforms_cover_noise_and_upscaling_and_pass_gradients():
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    for transform in (RandomNoise(), EotUpscale(), default_eot()):
        out = transform(x, gen)
        assert out.shape == x.shape
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0
    names = {type(t).__name__ for t in default_eot().transforms}
    assert {"RandomNoise", "NoisyUpscale", "JpegApprox"} <= names


def _row(method: str, processing: str, ssim: float, psnr: float) -> EvalRow:
    return EvalRow(
        method=method,
        processing=processing,
        metrics={"ssim": Stat(mean=ssim, std=0.0), "psnr": Stat(mean=psnr, std=0.0)},
    )


def test_report_gives_the_gap_over_noise_and_the_fraction_kept():
    rows = [
        _row("noise", "none", 0.99, 50),
        _row("noise", "jpeg75", 0.98, 40),
        _row("encoder", "none", 0.89, 30),
        _row("encoder", "jpeg75", 0.93, 35),
    ]
    report = EvalReport(settings=EvalSettings(), photos=["a"], rows=rows)
    kept = {k.processing: k for k in report.kept()}
    assert kept["none"].gap["ssim"] == pytest.approx(0.10)
    assert kept["jpeg75"].gap["ssim"] == pytest.approx(0.05)
    assert kept["jpeg75"].kept["ssim"] == pytest.approx(0.5)
    assert kept["jpeg75"].kept["psnr"] == pytest.approx(0.25)
    lines = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert set(lines[0]) == {"method", "processing", "metric", "mean", "std"}
    (row,) = [r for r in lines if (r["processing"], r["metric"]) == ("jpeg75", "ssim_kept")]
    assert float(row["mean"]) == pytest.approx(0.5)


def test_evaluate_with_purifiers_and_eot(tiny_models):
    settings = EvalSettings(
        model=str(tiny_models[0]),
        prompts=("a cat",),
        methods=("noise", "encoder"),
        processing=("none", "gauss", "upscale", "diffpure", "impress"),
        eot=True,
        size=64,
        steps=3,
        edit_steps=3,
    )
    report = evaluate([sample_path("chelsea.png")], settings)
    assert [(r.method, r.processing) for r in report.rows] == [
        (m, p) for m in settings.methods for p in settings.processing
    ]
    assert {k.processing for k in report.kept()} == set(settings.processing)
    assert set(report.treat_seconds) == {"noise", "encoder"}


def test_eval_cli_refuses_an_unknown_processing_step(capsys):
    assert main(["eval", "--processing", "none,jpeg76"]) == 2
    assert "--processing" in capsys.readouterr().err
