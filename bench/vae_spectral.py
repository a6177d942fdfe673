"""Does a frequency-weighted reconstruction loss make a small VAE's encoder attackable?

Issue 23's ceiling is the encoder: trained on MSE, a small VAE learns to ignore
faint fine detail, and an 8/255 encoder attack is nothing but faint fine detail.
This trains release 1's stage-1 VAE (random weights, 1,200 steps on 48 px
crops, seed ``--seed``) once per ``--weights`` value of ``TrainConfig.vae_spectral_weight``
(:func:`~photoimmune.sdk.models.train_tiny.spectral_l1`), then reports, on the
held-out photos at 128 px:

* the latent-distance cut of ``bench/vae_attackability.py``'s PGD toward the gray
  latent (8/255, ``--steps``), the encoder's attackability;
* the VAE's reconstruction PSNR (stage 1 only: a release adds a decoder fine-tune,
  which raises it and leaves the encoder, and the cut, as they are).

Bundled releases are listed too, for reference (their PSNR includes that fine-tune).

    .venv/bin/python bench/vae_spectral.py [--weights 0 1 4] [--seed 1] [--steps 100]
        [--photos chelsea.png coffee.png camera.png] [--reference tiny-ldm@1 tiny-ldm@3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from diffusers import AutoencoderKL
from honour import reconstruction_psnr
from vae_attackability import attack, latent

from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.models import resolve_model
from photoimmune.sdk.models.train_tiny import RELEASES, TRAIN_PHOTOS, load_photos, train_vae
from photoimmune.sdk.samples import sample_pixels

SIZE = 128


def measure(vae: AutoencoderKL, photos: list[str], steps: int) -> tuple[list[float], list[float]]:
    """Per photo: the attack's cut of the latent distance to gray, and the VAE's PSNR."""
    vae = vae.eval().requires_grad_(False)
    target = latent(vae, torch.full((1, 3, SIZE, SIZE), 0.5))
    cuts, psnrs = [], []
    for name in photos:
        pixels = sample_pixels(name, SIZE)
        x = pixels_to_tensor(pixels)
        before = (latent(vae, x) - target).norm()
        adv = attack(vae, x, target, 8 / 255, steps, seed=0)
        cuts.append(float(1 - (latent(vae, adv) - target).norm() / before))
        psnrs.append(reconstruction_psnr(vae, pixels))
    return cuts, psnrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 1.0, 4.0])
    parser.add_argument("--seed", type=int, default=1, help="training seed (release 1's: 1)")
    parser.add_argument("--steps", type=int, default=100, help="PGD steps")
    parser.add_argument("--photos", nargs="+", default=["chelsea.png", "coffee.png", "camera.png"])
    parser.add_argument("--reference", nargs="*", default=["tiny-ldm@1", "tiny-ldm@3"])
    args = parser.parse_args()
    rows = {}
    for model in args.reference:
        rows[model] = measure(
            AutoencoderKL.from_pretrained(resolve_model(model) / "vae"), args.photos, args.steps
        )
    photos = load_photos(list(TRAIN_PHOTOS))
    for weight in args.weights:
        started = time.perf_counter()
        cfg = replace(RELEASES[1], seed=args.seed, vae_spectral_weight=weight)
        vae = train_vae(cfg, photos, lambda *_: None)
        label = f"stage 1, seed {args.seed}, spectral weight {weight:g}"
        rows[label] = measure(vae, args.photos, args.steps)
        print(f"{label}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\n8/255, {args.steps} PGD steps, {SIZE} px, photos {' / '.join(args.photos)}")
    print(f"{'VAE':40} {'latent cut':>28} {'PSNR (dB)':>24}")
    for label, (cuts, psnrs) in rows.items():
        cut = " / ".join(f"{c:.1%}" for c in cuts) + f" ({statistics.fmean(cuts):.1%})"
        psnr = " / ".join(f"{p:.1f}" for p in psnrs) + f" ({statistics.fmean(psnrs):.1f})"
        print(f"{label:40} {cut:>28} {psnr:>24}")


if __name__ == "__main__":
    main()
