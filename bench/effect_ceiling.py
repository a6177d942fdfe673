"""Where does the effect stop? The issue-23 diagnosis of a bundled model, in five tables.

An immunized edit differs from the clean one only as far as (a) the attack moves
the VAE latent and (b) the edit carries a latent change through to its output.
This script measures each link on the held-out photos, with the issue's edit
settings (img2img, 20 steps, guidance 7.5, prompt "a photo", seed 1234):

1. fidelity: SSIM(edit, photo) per strength, and the VAE's own reconstruction
   (strength 0), so one sees where a clean edit loses the photo;
2. sensitivity: SSIM(edit of a moved latent, clean edit) when the latent is moved
   a fraction of the way to the gray target's latent, to the checker's, or by
   random noise of that fraction of its std (an oracle: no attack involved);
3. the ceiling: the SSIM gap over same-ε noise of ``immunize``'s defaults (the
   target's one-pass immunizer and finishing steps, where it carries one) per
   strength, down to the reconstruction itself (strength 0), which is the most a
   perfectly faithful denoiser could carry. ``--pass-from tiny-ldm@3`` runs a
   candidate release that ships no one-pass immunizer as that version's defaults
   would: with its budgets, started from its pass (docs/research.md, "Fidelity and
   protection pull against each other");
4. targets and objectives: the gap at strength 0.5 for each target recipe, for
   PID's posterior-variance objective (maximise the encoder's log-variance), and
   for three untargeted ones: the latent pushed away from the clean latent, the
   same with a smooth δ and the latent change pooled (what img2img's noise leaves
   of it), and the edit-aware one, the decoded one-step x0 prediction at strength
   0.5 pushed away from the clean photo's, unguided with the check's prompt
   (``edit-away``) or guided at 7.5 over five other edit prompts
   (``guided-away``), the latter also over timesteps 300-700 (``guided-away-t``;
   docs/research.md);
5. working size: the encoder attack's gap when it runs through a resize to 32,
   64 or 128 px, or at the photo's own size.

    .venv/bin/python bench/effect_ceiling.py [--model tiny-ldm@1] [--size 128] [--tables 12345]
        [--photos chelsea.png,coffee.png,camera.png] [--levers gray,edit-away]
        [--pass-from tiny-ldm@3]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from photoimmune.sdk import AttackTarget, immunize
from photoimmune.sdk.attacks.base import Attack
from photoimmune.sdk.attacks.edit import (
    EDIT_PROMPTS,
    EDIT_TIMESTEPS,
    EditAwayAttack,
    EditPrediction,
)
from photoimmune.sdk.attacks.encoder import EncoderAttack, VAEEncoder
from photoimmune.sdk.evaluate import edit_similarity, same_eps_noise
from photoimmune.sdk.io import pixels_to_tensor, tensor_to_pixels
from photoimmune.sdk.models import load_pipeline, resolve_model
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.models.train_tiny import VALIDATION_PHOTOS
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import build_target, target_image, with_bundled_immunizer

EDIT = {"prompt": "a photo", "guidance_scale": 7.5, "steps": 20, "seed": 1234}
STRENGTHS = (0.05, 0.1, 0.2, 0.3, 0.5)
FRACTIONS = (0.05, 0.1, 0.2, 0.4)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return edit_similarity(a, b)[0]


def noisy(photo: np.ndarray, levels: int) -> np.ndarray:
    return same_eps_noise(photo, f"{levels}/255", np.random.default_rng(0))


def gap_over_noise(
    s: Session,
    photo: np.ndarray,
    protected: np.ndarray,
    strength: float,
    levels: int,
    clean: np.ndarray,
) -> float:
    """SSIM(edit of the same-ε noisy copy, clean edit) - SSIM(edit of ``protected``, clean
    edit): how much more the protection disrupts the edit than noise does."""
    noise = ssim(s.edit(noisy(photo, levels), strength), clean)
    return noise - ssim(s.edit(protected, strength), clean)


class Session:
    """One pipeline and the edits every table shares."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.pipe = load_pipeline(model)
        self.vae = self.pipe.vae

    def edit(self, pixels: np.ndarray, strength: float) -> np.ndarray:
        if strength == 0:
            return self.reconstruct(pixels)
        return edit_image(
            self.pipe,
            pixels,
            EDIT["prompt"],
            strength=strength,
            guidance_scale=EDIT["guidance_scale"],
            steps=EDIT["steps"],
            seed=EDIT["seed"],
        )

    @torch.no_grad()
    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        latent = self.vae.encode(pixels_to_tensor(pixels) * 2 - 1).latent_dist.mean
        return tensor_to_pixels((self.vae.decode(latent).sample.clamp(-1, 1) + 1) / 2)[0]

    @torch.no_grad()
    def edit_latent(self, latent: torch.Tensor, strength: float) -> np.ndarray:
        """The img2img edit started from a given (unscaled) latent instead of an encoding."""
        size = tuple(s * self.pipe.vae_scale_factor for s in latent.shape[-2:])
        encode = self.vae.encode
        self.vae.encode = lambda *_, **__: _Fixed(latent)  # the one call img2img makes
        try:
            out = self.pipe(
                EDIT["prompt"],
                image=torch.zeros(1, 3, *size),
                strength=strength,
                guidance_scale=EDIT["guidance_scale"],
                num_inference_steps=EDIT["steps"],
                generator=torch.Generator().manual_seed(EDIT["seed"]),
                output_type="np",
            ).images[0]
        finally:
            self.vae.encode = encode
        return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)

    @torch.no_grad()
    def latent(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The latent mean of uint8 pixels or of a [0, 1] tensor."""
        x = pixels_to_tensor(image) if isinstance(image, np.ndarray) else image
        return self.vae.encode(x * 2 - 1).latent_dist.mean


class _Fixed:
    """What ``vae.encode`` returns, holding a latent chosen by the caller."""

    def __init__(self, latent: torch.Tensor) -> None:
        self.latent_dist = self
        self._latent = latent

    def sample(self, generator=None) -> torch.Tensor:
        return self._latent

    def mode(self) -> torch.Tensor:
        return self._latent


class PosteriorVariance(Attack):
    """PID's objective (ICML 2024): raise the encoder's log-variance, so that the
    latent img2img samples is noise; computed before diffusers' clamp at -30."""

    method = "pid"

    def __init__(self, vae, **overrides) -> None:
        super().__init__(**overrides)
        self.vae = vae

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        moments = self.vae.quant_conv(self.vae.encoder(x * 2 - 1))
        return -moments.chunk(2, dim=1)[1].clamp(max=20).flatten(1).mean(1)


def _latent_mean(vae, x: torch.Tensor) -> torch.Tensor:
    return vae.quant_conv(vae.encoder(x * 2 - 1)).chunk(2, dim=1)[0]


class LatentAway(Attack):
    """Untargeted encoder objective: push the latent mean away from the clean photo's."""

    method = "latent-away"

    def __init__(self, vae, **overrides) -> None:
        super().__init__(**overrides)
        self.vae = vae.requires_grad_(False)

    def prepare(self, x: torch.Tensor, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.clean = _latent_mean(self.vae, x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return -(_latent_mean(self.vae, x) - self.clean).pow(2).flatten(1).mean(1)


class SmoothAway(LatentAway):
    """Latent-away on what survives denoising: a smooth δ (bilinear from a grid ``factor``
    times coarser) and the latent change average-pooled over ``pool`` x ``pool`` cells,
    since img2img's noise drowns fine latent changes and the encoder passes coarse ones."""

    method = "smooth-away"

    def __init__(self, vae, factor: int = 4, pool: int = 8, **overrides) -> None:
        super().__init__(vae, **overrides, quantize=False)
        self.factor, self.pool = factor, pool

    def prepare(self, x: torch.Tensor, generator: torch.Generator) -> None:
        super().prepare(x, generator)
        self.x = x

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        coarse = F.avg_pool2d(x - self.x, self.factor)  # a PGD step moves each cell as one
        delta = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (self.x + delta).clamp(0, 1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        change = _latent_mean(self.vae, self.smooth(x)) - self.clean
        return -F.avg_pool2d(change, self.pool).pow(2).flatten(1).mean(1)

    def __call__(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        smooth = self.smooth(self.perturb(x, **kwargs).x_adv)  # |δ| <= eps still: averages
        return (smooth * 255).round() / 255


def fidelity(s: Session, photos: dict) -> None:
    print("\n1. fidelity: SSIM(edit of the clean photo, photo); strength 0 = VAE reconstruction")
    print(f"{'photo':14}" + "".join(f"{st:>8}" for st in (0, *STRENGTHS)) + "   PSNR(recon)")
    for name, px in photos.items():
        row = [ssim(s.edit(px, st), px) for st in (0, *STRENGTHS)]
        psnr = edit_similarity(s.reconstruct(px), px)[1]
        print(f"{name:14}" + "".join(f"{v:8.3f}" for v in row) + f"   {psnr:8.2f} dB")


def sensitivity(s: Session, photos: dict) -> None:
    print("\n2. sensitivity at strength 0.5: SSIM(edit of a moved latent, clean edit)")
    print(f"{'photo':14}{'move':10}" + "".join(f"{f:>8}" for f in FRACTIONS))
    size = next(iter(photos.values())).shape[0]
    goals = {name: s.latent(target_image(name, (size, size))) for name in ("gray", "checker")}
    for name, px in photos.items():
        z = s.latent(px)
        base = s.edit_latent(z, 0.5)
        directions = {"to gray": goals["gray"] - z, "to checker": goals["checker"] - z}
        directions["random"] = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        directions["random"] *= z.std()
        for label, direction in directions.items():
            row = [ssim(s.edit_latent(z + f * direction, 0.5), base) for f in FRACTIONS]
            print(f"{name:14}{label:10}" + "".join(f"{v:8.3f}" for v in row))


def lent_target(model: str, donor: str) -> AttackTarget:
    """``model``'s published target with the bundled ``donor``'s budgets and one-pass
    immunizer, bound to it as a bundle binds the pass it ships: a candidate release
    with no pass of its own, attacked as the donor's defaults would attack it."""
    target = build_target(model, budgets=build_target(donor).budgets)
    return with_bundled_immunizer(target, resolve_model(donor))


def ceiling(
    s: Session, photos: dict, levels: int, target: AttackTarget | None = None, seed: int = 0
) -> None:
    print(f"\n3. the ceiling: SSIM gap over same-ε noise, immunize's defaults at {levels}/255")
    print(f"{'photo':14}" + "".join(f"{st:>8}" for st in (0, *STRENGTHS)))
    rows = []
    for name, px in photos.items():
        adv = immunize(px, target or s.model, eps=f"{levels}/255", seed=seed).pixels
        row = [gap_over_noise(s, px, adv, st, levels, s.edit(px, st)) for st in (0, *STRENGTHS)]
        rows.append(row)
        print(f"{name:14}" + "".join(f"{v:8.3f}" for v in row))
    print(f"{'mean':14}" + "".join(f"{v:8.3f}" for v in np.mean(rows, axis=0)))


def levers(s: Session, photos: dict, levels: int, only: list[str] | None = None) -> None:
    print(f"\n4. targets and objectives: gap at strength 0.5, {levels}/255, 100 steps")
    encoder = VAEEncoder(s.vae)
    size = next(iter(photos.values())).shape[0]
    budget = {"eps": levels / 255, "steps": 100}
    targets = {
        "gray": None,
        **{f"checker{c}": _checker(c) for c in (4, 8, 16, 32)},
        "black": torch.zeros(1, 3, 1, 1),
        "white": torch.ones(1, 3, 1, 1),
    }
    attacks: dict[str, Attack] = {
        name: EncoderAttack(encoder, image, resolution=size, **budget)
        for name, image in targets.items()
    }
    attacks["pid-variance"] = PosteriorVariance(s.vae, **budget)
    attacks["latent-away"] = LatentAway(s.vae, **budget)
    # Its best step on the held-out three (eps / 3 and eps / 5 gave 0.079, eps / 10 0.088)
    attacks["smooth-away"] = SmoothAway(s.vae, **budget, step_size=levels / 255 / 10)
    unguided = EditPrediction(s.pipe, prompts=(EDIT["prompt"],), guidance=1)
    attacks["edit-away"] = EditAwayAttack(unguided, timesteps=(500,), **budget)
    # Guided as the edit is, over edit prompts other than the check's own "a photo"
    # (the first five: the figures in docs/research.md were measured with them).
    guided = EditPrediction(s.pipe, prompts=EDIT_PROMPTS[:5])
    attacks["guided-away"] = EditAwayAttack(guided, timesteps=(500,), **budget)
    # The same for any strength from 0.3 to 0.7, not the check's 0.5 alone.
    attacks["guided-away-t"] = EditAwayAttack(guided, timesteps=EDIT_TIMESTEPS, **budget)
    attacks = {k: a for k, a in attacks.items() if not only or k in only}
    print(f"{'attack':14}" + "".join(f"{n:>14}" for n in photos) + f"{'mean':>8}")
    for label, attack in attacks.items():
        gaps = []
        for px in photos.values():
            adv = tensor_to_pixels(attack(pixels_to_tensor(px)))[0]
            gaps.append(gap_over_noise(s, px, adv, 0.5, levels, s.edit(px, 0.5)))
        print(f"{label:14}" + "".join(f"{g:14.3f}" for g in gaps) + f"{statistics.mean(gaps):8.3f}")


def working_sizes(s: Session, photos: dict, levels: int) -> None:
    size = next(iter(photos.values())).shape[0]
    resolutions = sorted({32, 64, 128, size})
    print(f"\n5. working size: gap at strength 0.5, {levels}/255, 100 steps, gray target,")
    print(f"   the attack run through a resize to each resolution ({size} = the photo's own)")
    encoder = VAEEncoder(s.vae)
    print(f"{'photo':14}" + "".join(f"{r:>8}" for r in resolutions))
    for name, px in photos.items():
        clean = s.edit(px, 0.5)
        noise_ssim = ssim(s.edit(noisy(px, levels), 0.5), clean)
        row = []
        for r in resolutions:
            attack = EncoderAttack(encoder, resolution=r, eps=levels / 255, steps=100)
            adv = tensor_to_pixels(attack(pixels_to_tensor(px)))[0]
            row.append(noise_ssim - ssim(s.edit(adv, 0.5), clean))
        print(f"{name:14}" + "".join(f"{v:8.3f}" for v in row))


def _checker(cell: int) -> torch.Tensor:
    n = torch.arange(2 * cell)
    cells = (n[:, None] // cell + n[None, :] // cell) % 2
    return cells.float().expand(1, 3, 2 * cell, 2 * cell).clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-ldm@1")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--eps", type=int, default=8, help="budget in 8-bit levels")
    parser.add_argument("--tables", default="1234", help="which tables to print, e.g. 135")
    parser.add_argument(
        "--photos",
        default=",".join(VALIDATION_PHOTOS),
        help="held-out scikit-image photos, comma-separated (e.g. add camera.png)",
    )
    parser.add_argument("--levers", help="table 4's rows only, e.g. gray,edit-away")
    parser.add_argument(
        "--guidance", type=float, default=7.5, help="the edits' guidance (1: no guidance)"
    )
    parser.add_argument(
        "--pass-from", help="table 3: a bundled version whose budgets and pass --model runs"
    )
    parser.add_argument("--seed", type=int, default=0, help="table 3: immunize's seed")
    args = parser.parse_args()
    EDIT["guidance_scale"] = args.guidance
    s = Session(args.model)
    photos = {name: sample_pixels(name, args.size) for name in args.photos.split(",")}
    print(f"{args.model}, {args.size} px, held-out photos {', '.join(photos)}, edits {EDIT}")
    tables = {"1": fidelity, "2": sensitivity}
    for key in args.tables:
        if key in tables:
            tables[key](s, photos)
        elif key == "3":
            lent = lent_target(args.model, args.pass_from) if args.pass_from else None
            ceiling(s, photos, args.eps, lent, args.seed)
        elif key == "4":
            levers(s, photos, args.eps, args.levers.split(",") if args.levers else None)
        elif key == "5":
            working_sizes(s, photos, args.eps)


if __name__ == "__main__":
    main()
