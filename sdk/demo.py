"""``photoimmune demo``: immunize a sample photo, edit it, and show what changed.

Everything is embedded: the bundled tiny model (it stands in for Stable
Diffusion; its numbers are not SD's), a scikit-image sample photo, and a fixed
prompt and seed, so two runs print the same table and draw the same grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .immunization import immunize
from .io import save_image
from .models.bundled import VENDOR
from .models.pipelines import edit_image, load_pipeline
from .pictures import amplify_delta, comparison_grid, loss_curve
from .samples import sample_pixels


@dataclass(frozen=True)
class DemoSettings:
    model: str = "tiny-ldm@1"
    photo: str = "chelsea.png"
    size: int = 128
    eps: str = "16/255"  # PhotoGuard's demo budget (0.12 in its [-1, 1] scale)
    steps: int = 100
    prompt: str = "a photo of a cat in the snow"
    strength: float = 0.5
    edit_steps: int = 20
    seed: int = 0


@dataclass(frozen=True)
class DemoReport:
    settings: DemoSettings
    ssim: float  # between the edit of the clean photo and the edit of the immunized one
    psnr: float
    max_abs_delta: int
    loss_before: str
    loss_after: str
    immunize_seconds: float
    grid: Path
    curve: Path
    target_ref: str = ""
    target_digest: str = ""


def edit_similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """SSIM and PSNR (dB) between two uint8 images, computed with piq.

    Example:
        >>> edit_similarity(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8))[0]
        1.0
    """
    import piq
    import torch

    from .io import pixels_to_tensor

    x, y = pixels_to_tensor(a), pixels_to_tensor(b)
    ssim = float(piq.ssim(x, y, data_range=1.0))
    mse = float(torch.mean((x - y) ** 2))
    psnr = float("inf") if mse == 0 else float(piq.psnr(x, y, data_range=1.0))
    return round(ssim, 4), round(psnr, 2)


def run_demo(out_dir: Path, settings: DemoSettings | None = None, progress=None) -> DemoReport:
    """Run the demo, write ``grid.png``, ``loss.png`` and ``immunized.png`` to ``out_dir``.

    Example:
        >>> report = run_demo(Path("out/demo"))  # doctest: +SKIP
        >>> report.ssim < 0.9  # doctest: +SKIP
        True
    """
    from photoimmune.registry.admin import local_registry

    s = settings or DemoSettings()
    photo = sample_pixels(s.photo, s.size)
    # The vendor publishes the model's target; the publisher fetches it back, verified.
    client = local_registry(out_dir / "registry", [s.model])
    target = client.get(f"{VENDOR}/{s.model}")
    started = time.perf_counter()
    result = immunize(photo, target, eps=s.eps, steps=s.steps, seed=s.seed, progress=progress)
    seconds = time.perf_counter() - started
    pipe = load_pipeline(s.model)
    edit = {"strength": s.strength, "steps": s.edit_steps, "seed": s.seed}
    edit_clean = edit_image(pipe, photo, s.prompt, **edit)
    edit_immunized = edit_image(pipe, result.pixels, s.prompt, **edit)
    ssim, psnr = edit_similarity(edit_clean, edit_immunized)
    grid = comparison_grid(
        [photo, result.pixels, edit_clean, edit_immunized, amplify_delta(photo, result.pixels)],
        ["original", f"immunized ({s.eps})", "edit of original", "edit of immunized", "delta x10"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_path = out_dir / "grid.png"
    curve_path = out_dir / "loss.png"
    # Demo outputs are regenerated on every run; they are never originals.
    save_image(np.asarray(grid), grid_path, overwrite=True)
    save_image(
        np.asarray(loss_curve(result.loss_history, title="encoder loss")),
        curve_path,
        overwrite=True,
    )
    save_image(result.pixels, out_dir / "immunized.png", overwrite=True)
    protection = result.protections[0]
    return DemoReport(
        settings=s,
        ssim=ssim,
        psnr=psnr,
        max_abs_delta=result.max_abs_delta,
        loss_before=protection.loss_before,
        loss_after=protection.loss_after,
        immunize_seconds=round(seconds, 2),
        grid=grid_path,
        curve=curve_path,
        target_ref=str(target.ref),
        target_digest=target.digest,
    )
