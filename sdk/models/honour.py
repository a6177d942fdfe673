"""Cooperative releases: a new version whose encoder honours earlier protections.

A photo immunized against release N carries a perturbation δ made against N's
encoder. Release N+1 would normally need the photo re-immunized (another ε
on top). Instead, as GuardDoor (Wang et al., ICML 2025) proposes, the vendor
fine-tunes N+1's encoder with two losses:

* **keep**: on clean crops, the same crops with same-ε uniform noise (and
  contrast-stretched, with ``honour_stretch``), and their JPEG 75 copies, the new
  encoder's latent stays the base encoder's, and so does
  its decoded picture (so the decoder and the UNet carry over unchanged and clean
  edits stay as they were);
* **honour**: on crops immunized as publishers immunize them (``immunize``'s
  defaults against the honoured target: its one-pass immunizer's start and a few
  PGD steps, or the pass alone) and their JPEG 75 copies, the new encoder's
  latent goes to the target latent (the base's latent of the gray target image,
  which the keep loss also pins), or ``honour_gain`` times as far as the base's
  went along the way the perturbation pushed it, never past the target
  (:func:`honour_goal`).

Only the encoder changes; the decoder, UNet, text encoder and scheduler are the
base release's. What honouring cannot do: an attacker who runs the older open
weights is not affected (docs/models.md).

Example:
    photoimmune model train-tiny --version 4 --out /tmp/tiny-ldm-4
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from diffusers import AutoencoderKL

from ..evaluate.processing import PROCESSING
from ..io import pixels_to_tensor, tensor_to_pixels
from .train_tiny import (
    TRAIN_PHOTOS,
    Progress,
    TrainConfig,
    clipped_step,
    load_photos,
    random_crops,
    soften,
    stretch,
)

_ATTACK_BATCH = 8


def _eight_bit(x01: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit values a saved photo has."""
    return pixels_to_tensor(list(tensor_to_pixels(x01)))


def _processed(x01: torch.Tensor, name: str) -> torch.Tensor:
    """Each image of the batch through a real re-upload step (``PROCESSING[name]``)."""
    process = PROCESSING[name]
    return pixels_to_tensor([process(np.ascontiguousarray(p)) for p in tensor_to_pixels(x01)])


def latent(vae: AutoencoderKL, x01: torch.Tensor) -> torch.Tensor:
    """The scaled latent mean the pipelines and the encoder attack use."""
    return vae.encode(x01 * 2 - 1).latent_dist.mean * vae.config.scaling_factor


def immunized_pool(
    cfg: TrainConfig, photos: list[torch.Tensor], progress: Progress
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cfg.honour_pool`` training crops and the same crops immunized as publishers do:
    :func:`~photoimmune.sdk.immunization.immunize` against each honoured release with
    its defaults (the one-pass immunizer's start and its few finishing steps where the
    target ships one) and, for every other batch, the one-pass immunizer alone.
    A share ``cfg.honour_soften`` of the crops is blurred first (:func:`soften`), and a
    share ``cfg.honour_stretch`` contrast-stretched (:func:`stretch`): the immunizers
    perturb smooth and saturated photos differently, and the encoder must know all."""
    from ..immunization import immunize
    from ..targets import build_target

    gen = torch.Generator().manual_seed(cfg.seed + 4000)
    crops, _ = random_crops(photos, cfg.honour_pool, cfg.honour_pool_crop, gen, colour=False)
    varied = stretch(soften(crops, cfg.honour_soften, gen), cfg.honour_stretch, gen)
    clean = _eight_bit((varied + 1) / 2)
    targets = [build_target(f"tiny-ldm@{version}") for version in cfg.honours]
    immunized = []
    for batch, start in enumerate(range(0, len(clean), _ATTACK_BATCH)):
        target = targets[batch % len(targets)]
        one_pass = target.immunizer is not None and batch // len(targets) % 2 == 1
        results = immunize(
            list(tensor_to_pixels(clean[start : start + _ATTACK_BATCH])),
            target,
            method="amortized" if one_pass else None,
            steps=None if one_pass else cfg.honour_attack_steps,
            seed=start,
        )
        immunized.append(pixels_to_tensor([r.pixels for r in results]))
        cut = statistics.fmean(r.protections[0].loss_cut for r in results)
        progress("immunize", min(start + _ATTACK_BATCH, len(clean)), len(clean), cut)
    return clean, torch.cat(immunized)


def _window(gen: torch.Generator, *batches: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The same random ``size`` window of each batch, mirrored at random per image."""
    side = batches[0].shape[-1]
    top, left = torch.randint(0, side - size + 1, (2,), generator=gen).tolist()
    flip = (torch.rand(len(batches[0]), generator=gen) < 0.5)[:, None, None, None]
    windows = [b[..., top : top + size, left : left + size] for b in batches]
    return [torch.where(flip, w.flip(3), w) for w in windows]


def honour_goal(
    z_clean: torch.Tensor, z_immunized: torch.Tensor, z_target: torch.Tensor, gain: float | None
) -> torch.Tensor:
    """Where the new encoder should put an immunized crop: the target latent itself
    (``gain=None``, GuardDoor's loss), or ``gain`` times as far along the way the
    perturbation moved the base's latent, but never past the target latent.

    The target saturates: where the new encoder maps an old-immunized photo onto it, a
    fresh attack against the new version has nothing left to gain, which is what
    honour ≥ native asks (issue 28); an amplified move leaves the new version more
    attackable than it honours. Asking for the target needs the keep loss on decoded
    pictures and on noisy and JPEG copies: with the latent keep alone, clean crops
    drifted toward the target as far as immunized ones.
    """
    if gain is None:
        return z_target.expand_as(z_immunized)
    goal = z_clean + gain * (z_immunized - z_clean)
    past = (goal - z_clean).pow(2).sum(1, keepdim=True) > (z_target - z_clean).pow(2).sum(
        1, keepdim=True
    )
    return torch.where(past, z_target.expand_as(goal), goal)


def honour_encoder(
    cfg: TrainConfig,
    base: AutoencoderKL,
    photos: list[torch.Tensor],
    pool: tuple[torch.Tensor, torch.Tensor],
    progress: Progress,
) -> AutoencoderKL:
    """Fine-tune a copy of ``base``'s encoder with the keep and honour losses.

    ``pool`` is :func:`immunized_pool`'s (clean, immunized) pairs of crops.
    """
    from ..targets import target_image

    gen = torch.Generator().manual_seed(cfg.seed + 5000)
    torch.manual_seed(cfg.seed + 5000)
    teacher = base.requires_grad_(False).eval()
    vae = copy.deepcopy(base).requires_grad_(False)
    params = [*vae.encoder.parameters(), *vae.quant_conv.parameters()]
    params = [p.requires_grad_(True) for p in params]
    opt = torch.optim.AdamW(params, lr=cfg.honour_lr, weight_decay=0.0)
    gray = target_image("gray", (cfg.honour_crop, cfg.honour_crop))
    eps = 8 / 255
    scale = vae.config.scaling_factor
    student = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.honour_bf16)
    vae.train()
    for step in range(cfg.honour_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.honour_lr * min(1.0, (step + 1) / 50)
        crops, _ = random_crops(photos, cfg.honour_batch, cfg.honour_crop, gen, colour=True)
        x = _eight_bit((crops + 1) / 2)
        # With a stretched pool, clean high-contrast crops are kept too: else the
        # encoder takes contrast itself for the mark (docs/models.md).
        contrast = (
            [_eight_bit((stretch(crops.clone(), 1.0, gen) + 1) / 2)] if cfg.honour_stretch else []
        )
        noisy = _eight_bit(x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps)
        kept = [gray, x, noisy, _processed(x, "jpeg75"), _processed(noisy, "jpeg75")]
        kept += [*contrast, *(_processed(c, "jpeg75") for c in contrast)]
        pick = torch.randint(len(pool[0]), (cfg.honour_batch,), generator=gen)
        clean, immunized = _window(gen, pool[0][pick], pool[1][pick], size=cfg.honour_crop)
        clean = torch.cat([clean, _processed(clean, "jpeg75")])
        immunized = torch.cat([immunized, _processed(immunized, "jpeg75")])
        keep = torch.cat([*kept, clean])
        with torch.no_grad():
            z_keep = latent(teacher, keep)
            z_clean = z_keep[-len(clean) :]
            goal = honour_goal(z_clean, latent(teacher, immunized), z_keep[:1], cfg.honour_gain)
            seen = teacher.decode(z_keep / scale).sample if cfg.honour_pixel_keep else None
        with student:
            z_new = latent(vae, keep).float()
            loss_keep = F.mse_loss(z_new, z_keep)
            if seen is not None:
                drift = F.mse_loss(vae.decode(z_new / scale).sample.float(), seen)
                loss_keep = loss_keep + cfg.honour_pixel_keep * drift
            loss_honour = F.mse_loss(latent(vae, immunized).float(), goal)
        loss = loss_keep + cfg.honour_weight * loss_honour
        clipped_step(opt, params, loss)
        progress("honour", step + 1, cfg.honour_steps, loss.item())
    return vae.eval()


def train_honouring(cfg: TrainConfig, out: Path, progress: Progress | None = None) -> dict:
    """Write a release that is ``cfg.base`` with an encoder that honours ``cfg.honours``.

    Example:
        >>> train_honouring(RELEASES[4], Path("/tmp/tiny-ldm-4"))  # doctest: +SKIP
        {'version': 4, 'config': {..., 'honours': [3]}, ...}
    """
    from ..targets import BUNDLED_IMMUNIZER
    from .bundled import resolve_model

    progress = progress or (lambda *_: None)
    started = time.perf_counter()
    base_path = resolve_model(f"tiny-ldm@{cfg.base}")
    # The base's one-pass immunizer was trained for the base's encoder, not this one.
    not_ours = shutil.ignore_patterns(BUNDLED_IMMUNIZER)
    shutil.copytree(base_path, out, dirs_exist_ok=True, ignore=not_ours)
    photos = load_photos(list(TRAIN_PHOTOS))
    pool = immunized_pool(cfg, photos + load_photos(list(cfg.honour_extra_photos)), progress)
    pool_seconds = time.perf_counter() - started
    base = AutoencoderKL.from_pretrained(base_path / "vae", torch_dtype=torch.float32)
    vae = honour_encoder(cfg, base, photos, pool, progress)
    # A sharded base's index would outrank the single file save_pretrained writes, and
    # load the base's encoder in place of the new one (it did, in a trial).
    shutil.rmtree(out / "vae")
    vae.to(torch.float16).save_pretrained(out / "vae")
    report = {
        "version": cfg.version,
        "config": asdict(cfg),
        "scaling_factor": vae.config.scaling_factor,
        "train_seconds": {
            "immunized_pool": round(pool_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


__all__ = ["honour_encoder", "honour_goal", "immunized_pool", "latent", "train_honouring"]
