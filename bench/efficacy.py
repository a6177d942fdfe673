"""How much does immunization disrupt edits? The issue-4 table, on the validation photos.

For each budget and method we immunize each held-out photo, run the same img2img
edits (fixed prompts and seed) on the clean and the treated photo, and report
SSIM and PSNR between the two edits (lower = the edit was disrupted more):

* noise:           uniform random noise of the same L∞ budget (the paper's baseline)
* defaults:        ``immunize`` as the target recommends (tiny-ldm@3: its edit-trained
                   pass and 40 steps of the edit attack; @1 and @2: the encoder attack)
* encoder/gray:    our encoder attack, PhotoGuard's mid-gray target
* encoder/checker: our encoder attack, a high-contrast checkerboard target (Mist-like)
* diffusion:       our diffusion attack
* ref-encoder:     bench/reference.py's PhotoGuard encoder loop (demo schedule) at the same ε
* ref-diffusion:   bench/reference.py's PhotoGuard diffusion loop (L2 radius scaled to the
                   resolution), then clipped to the same L∞ ε and rounded to 8 bits

Every treated image is 8-bit with max|δ| ≤ ε, as it would be saved.

    .venv/bin/python bench/efficacy.py [--model tiny-ldm@1] [--steps 100] [--diffusion-steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import reference  # bench/ is on sys.path when this script runs
import torch

from photoimmune.sdk import immunize
from photoimmune.sdk.evaluate import same_eps_noise
from photoimmune.sdk.evaluate.metrics import edit_similarity
from photoimmune.sdk.io import pixels_to_tensor, tensor_to_pixels
from photoimmune.sdk.models import load_pipeline, resolve_model
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.models.train_tiny import VALIDATION_PHOTOS
from photoimmune.sdk.samples import sample_pixels

PROMPTS = ("a photo of a cat in the snow", "an oil painting of a landscape")


def clip_to_budget(original: np.ndarray, treated: torch.Tensor, levels: int) -> np.ndarray:
    """Round a [0, 1] tensor to 8 bits and clip it into the L∞ budget around ``original``."""
    pixels = tensor_to_pixels(treated)[0].astype(int)
    base = original.astype(int)
    return np.clip(pixels, base - levels, base + levels).clip(0, 255).astype(np.uint8)


def apply_method(
    method: str, photo: np.ndarray, model: str, levels: int, args, pipes
) -> np.ndarray:
    """``photo`` treated by ``method`` at ``levels``/255, 8-bit, as it would be saved."""
    eps = f"{levels}/255"
    if method == "noise":
        return same_eps_noise(photo, eps, np.random.default_rng(0))
    if method == "defaults":
        return immunize(photo, model, eps=eps).pixels
    if method.startswith("encoder/"):
        recipe = method.split("/")[1]
        return immunize(
            photo, model, method="encoder", eps=eps, steps=args.steps, recipe=recipe
        ).pixels
    if method == "diffusion":
        return immunize(
            photo, model, method="diffusion", eps=eps, steps=args.diffusion_steps
        ).pixels
    x = pixels_to_tensor(photo) * 2 - 1
    if method == "ref-encoder":
        vae = pipes["img2img"].vae
        with torch.no_grad():
            target = vae.encode(torch.zeros_like(x)).latent_dist.mean
        # The demo schedule (ε 0.12, step 0.01, 200 iterations) scaled to this ε.
        adv = reference.encoder_attack(
            vae,
            x,
            eps=2 * levels / 255,
            step=2 * levels / 255 / 12,
            iters=args.steps,
            target_latent=target,
        )
    else:
        h = photo.shape[0]
        mask = torch.zeros(1, 1, h, h)
        mask[..., h // 4 : 3 * h // 4, h // 4 : 3 * h // 4] = 1
        adv = reference.diffusion_attack(
            pipes["inpaint"],
            x,
            mask,
            eps=16.0 * h / 512,
            step=h / 512,
            iters=args.diffusion_steps,
            grad_reps=2,
        )
    return clip_to_budget(photo, (adv + 1) / 2, levels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-ldm@1")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--diffusion-steps", type=int, default=20)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            "noise",
            "defaults",
            "encoder/gray",
            "encoder/checker",
            "diffusion",
            "ref-encoder",
            "ref-diffusion",
        ],
    )
    parser.add_argument(
        "--eps", nargs="+", type=int, default=[8, 16], help="budgets in 8-bit levels"
    )
    args = parser.parse_args()
    resolve_model(args.model)
    pipes = {"img2img": load_pipeline(args.model), "inpaint": load_pipeline(args.model, "inpaint")}
    photos = {name: sample_pixels(name, args.size) for name in VALIDATION_PHOTOS}
    clean_edits = {
        (name, p): edit_image(pipes["img2img"], px, p, strength=args.strength)
        for name, px in photos.items()
        for p in PROMPTS
    }
    print(f"model {args.model}, {args.size}px, img2img strength {args.strength}, prompts {PROMPTS}")
    print(f"{'eps':>7} {'method':16} {'SSIM':>13} {'PSNR (dB)':>13} {'max|δ|':>7} {'sec/img':>8}")
    for levels in args.eps:
        for method in args.methods:
            ssims, psnrs, worst, seconds = [], [], 0, []
            for name, photo in photos.items():
                started = time.perf_counter()
                treated = apply_method(method, photo, args.model, levels, args, pipes)
                seconds.append(time.perf_counter() - started)
                worst = max(worst, int(np.abs(treated.astype(int) - photo.astype(int)).max()))
                for p in PROMPTS:
                    ssim, psnr = edit_similarity(
                        clean_edits[(name, p)],
                        edit_image(pipes["img2img"], treated, p, strength=args.strength),
                    )
                    ssims.append(ssim)
                    psnrs.append(psnr)
            ssim = f"{statistics.mean(ssims):6.3f}±{statistics.pstdev(ssims):5.3f}"
            psnr = f"{statistics.mean(psnrs):6.2f}±{statistics.pstdev(psnrs):5.2f}"
            sec = statistics.mean(seconds)
            row = f"{levels:>3}/255 {method:16} {ssim} {psnr} {worst:>7} {sec:8.1f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
