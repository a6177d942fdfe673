"""How far can a small L-inf perturbation move a VAE's latent towards a target?

This is the "attackability" figure of the tiny-model issue: for each validation
photo, plain sign-gradient PGD (PhotoGuard's encoder attack: random start, step
decaying linearly to 1/100, 200 iterations) pushes E(x + delta) towards the latent
of a mid-gray image, and we print how much of the distance it removed:

    reduction = 1 - ||E(x + delta) - z_gray|| / ||E(x) - z_gray||

measured on the 8-bit image actually saved (delta rounded to whole levels).
The production attack lives in photoimmune.sdk.attacks; this script keeps its
own loop so the number describes the model, not our attack's tricks.

    .venv/bin/python bench/vae_attackability.py [--steps 200] [--models tiny-ldm@1 tiny-ldm@2]
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AutoencoderKL

from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.models import resolve_model
from photoimmune.sdk.models.train_tiny import VALIDATION_PHOTOS
from photoimmune.sdk.samples import sample_pixels


def latent(vae: AutoencoderKL, x01: torch.Tensor) -> torch.Tensor:
    return vae.encode(x01 * 2 - 1).latent_dist.mean


def attack(vae, x, target, eps, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    for i in range(steps):
        step = eps / 3 * (1 - 0.99 * i / max(1, steps - 1))  # their 0.02 for 0.06, to 1/100
        delta.requires_grad_(True)
        loss = (latent(vae, (x + delta).clamp(0, 1)) - target).norm()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() - step * grad.sign()).clamp(-eps, eps)
    return ((x + delta).clamp(0, 1) * 255).round() / 255  # what an 8-bit file holds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=["tiny-ldm@1", "tiny-ldm@2"])
    args = parser.parse_args()
    print(f"{'model':12} {'eps':>7} {'photo':12} {'reduction':>9}")
    for model in args.models:
        vae = (
            AutoencoderKL.from_pretrained(resolve_model(model) / "vae").eval().requires_grad_(False)
        )
        gray = torch.full((1, 3, args.size, args.size), 0.5)
        target = latent(vae, gray).detach()
        for eps_levels in (8, 16):
            for name in VALIDATION_PHOTOS:
                x = pixels_to_tensor(sample_pixels(name, args.size))
                before = (latent(vae, x) - target).norm()
                x_adv = attack(vae, x, target, eps_levels / 255, args.steps, seed=0)
                after = (latent(vae, x_adv) - target).norm()
                print(f"{model:12} {eps_levels:>3}/255 {name:12} {1 - after / before:>9.1%}")


if __name__ == "__main__":
    main()
