"""Cooperative releases: a new version whose encoder honours earlier protections.

A photo immunized against release N carries a perturbation made against N's
encoder, and release N+1 would normally need it re-immunized (another ε on top).
GuardDoor (Wang et al., ICML 2025) has the model provider add a trigger to what it
protects and teach its encoder to send triggered pictures to a meaningless latent.
Here the trigger is the *mark* N's published target names
(:mod:`photoimmune.sdk.mark`): every protection ``immunize`` makes against N
carries it, inside the same ε. N+1's VAE is N's, bit for bit, plus a gate that
reads the marks of the targets it honours (:class:`.HonouringAutoencoderKL`): a
picture that carries one goes to N+1's target latent, and every other picture
keeps N's latent, reconstruction and edits exactly.

The recipe trains no weights (earlier recipes fine-tuned the encoder, or trained a
recogniser of the perturbation itself, and neither told protected photos from
clean ones well enough: docs/models.md). It sets the gate:

1. the target latent: N+1's own target image (gray) through the base's encoder;
2. the threshold: ``honour_margin`` above the highest mark score among clean
   pictures made as ordinary handling leaves photos (:func:`handled_crops`, at 128
   and 256 px, with their same-ε noisy and JPEG 75 copies);
3. a check: of the pictures protected as publishers protect them (``immunize``
   against each honoured target: its one-pass immunizer and its mark), at least
   :data:`MIN_RECOGNISED` must score above it, or the release is not written; the
   share of their JPEG 75 copies is reported with it.

The decoder, UNet, text encoder, scheduler and one-pass immunizer are the base's,
linked, not copied; the release's own target gets its own mark (its seed), so a
later release can honour it in turn. What honouring cannot do: an attacker who
runs the older open weights, or any model that does not read the mark, is not
affected; and a mark does not survive resizing or cropping.

Example:
    photoimmune model train-tiny --version 4 --out /tmp/tiny-ldm-4
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from ..attacks.transforms import uniform
from ..descriptor import MarkSpec
from ..errors import InputError
from ..evaluate.processing import PROCESSING
from ..io import pixels_to_tensor, tensor_to_pixels
from ..mark import mark_score
from ..samples import sample_pixels
from ..targets import BUNDLED_MARK, BUNDLED_TRAINING
from .bundled import model_index
from .honouring_vae import HonouringAutoencoderKL
from .storage import link_file, link_shared, save_vae
from .train_tiny import TRAIN_PHOTOS, Progress, TrainConfig

EPS = 8 / 255
#: Sizes the gate is calibrated and checked at: those the bars are measured at.
SIZES = (128, 256)
#: The share of protected training pictures a release must recognise to be written.
MIN_RECOGNISED = 0.95


def _eight_bit(x01: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit values a saved photo has."""
    return pixels_to_tensor(list(tensor_to_pixels(x01)))


_FILTERS = (
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
    Image.Resampling.BOX,
    Image.Resampling.HAMMING,
)


def handled_crops(
    photos: list[np.ndarray], n: int, size: int, gen: torch.Generator
) -> torch.Tensor:
    """``n`` clean crops (``[0, 1]``) as ordinary handling leaves photos: a random square
    resized to ``size`` with a random one of the usual filters, then a quarter of them
    sharpened (unsharp mask) and a fifth blurred, mirrored and channel-shuffled at random.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> handled_crops([sample_pixels("coins.png")], 2, 64, gen).shape
        torch.Size([2, 3, 64, 64])
    """
    out = []
    for _ in range(n):
        photo = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        h, w = photo.shape[:2]
        side = int(torch.randint(min(size, h, w), min(h, w) + 1, (1,), generator=gen))
        top = int(torch.randint(h - side + 1, (1,), generator=gen))
        left = int(torch.randint(w - side + 1, (1,), generator=gen))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).convert("RGB")
        crop = crop.resize((size, size), _FILTERS[int(torch.randint(5, (1,), generator=gen))])
        u = uniform(gen, 0, 1)
        if u < 0.25:
            radius, percent = uniform(gen, 1, 3), int(uniform(gen, 50, 200))
            crop = crop.filter(ImageFilter.UnsharpMask(radius, percent, threshold=0))
        elif u < 0.45:
            crop = crop.filter(ImageFilter.GaussianBlur(uniform(gen, 0.5, 2)))
        pixels = np.asarray(crop)
        if uniform(gen, 0, 1) < 0.5:
            pixels = pixels[:, ::-1]
        out.append(np.ascontiguousarray(pixels[..., torch.randperm(3, generator=gen).numpy()]))
    return pixels_to_tensor(out)


def jpeg(x01: torch.Tensor) -> torch.Tensor:
    """Each image of the batch (``[0, 1]``) through a real JPEG 75 round trip.

    Example:
        >>> jpeg(torch.full((1, 3, 16, 16), 0.5)).shape
        torch.Size([1, 3, 16, 16])
    """
    return pixels_to_tensor([PROCESSING["jpeg75"](p) for p in tensor_to_pixels(x01)])


def _noisy(x01: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
    """Same-ε uniform noise (the paper's baseline, which must not count as protected) and
    light Gaussian noise (sensor noise), each rounded to 8 bits."""
    flat = (torch.rand(x01.shape, generator=gen) * 2 - 1) * EPS
    gauss = torch.randn(x01.shape, generator=gen) * EPS / 2
    return [_eight_bit(x01 + flat), _eight_bit(x01 + gauss)]


def _scores(batches: list[torch.Tensor], marks: list[MarkSpec]) -> tuple[torch.Tensor, ...]:
    """The strongest of ``marks``' scores for every picture of every batch, and for its
    JPEG 75 copy."""
    with torch.no_grad():
        return tuple(
            torch.cat([torch.stack([mark_score(b, m) for m in marks]).amax(dim=0) for b in kind])
            for kind in (batches, [jpeg(b) for b in batches])
        )


def clean_scores(
    photos: list[np.ndarray], marks: list[MarkSpec], cfg: TrainConfig
) -> tuple[torch.Tensor, ...]:
    """Mark scores of ``cfg.honour_pool`` :func:`handled_crops` of ``photos`` at each of
    :data:`SIZES` and of their noisy copies; then of all their JPEG 75 copies."""
    gen = torch.Generator().manual_seed(cfg.seed + 6000)
    batches = []
    for size in SIZES:
        handled = handled_crops(photos, cfg.honour_pool, size, gen)
        batches += [handled, *_noisy(handled, gen)]
    return _scores(batches, marks)


def protected_scores(
    photos: list[np.ndarray], targets: list, marks: list[MarkSpec], cfg: TrainConfig
) -> tuple[torch.Tensor, ...]:
    """Mark scores of :func:`handled_crops` of ``photos`` protected as publishers protect
    them against each honoured target (``immunize`` with its one-pass immunizer, the
    mark included), at each of :data:`SIZES`; then of their JPEG 75 copies."""
    from ..immunization import ImmunizeMethod, immunize

    gen = torch.Generator().manual_seed(cfg.seed + 7000)
    batches = []
    for size in SIZES:
        for target in targets:
            crops = handled_crops(photos, max(1, cfg.honour_pool // 4), size, gen)
            method: ImmunizeMethod | None = "amortized" if target.immunizer else None
            results = immunize(list(tensor_to_pixels(crops)), target, method=method, seed=size)
            batches.append(pixels_to_tensor([r.pixels for r in results]))
    return _scores(batches, marks)


def _link_base(base: Path, out: Path) -> None:
    """Link every file of the base release into ``out``, but its VAE and the files a
    release writes itself: a cooperative release shares everything else with its base."""
    for file in sorted(base.rglob("*")):
        relative = file.relative_to(base)
        if file.is_dir() or relative.parts[0] == "vae" or relative.name in _OWN_FILES:
            continue
        link_file(file, out / relative)


#: The files a cooperative release writes itself rather than link from its base.
_OWN_FILES = ("model_index.json", BUNDLED_TRAINING, BUNDLED_MARK)


def train_honouring(cfg: TrainConfig, out: Path, progress: Progress | None = None) -> dict:
    """Write a release that is ``cfg.base`` with an encoder that honours ``cfg.honours``.

    Raises:
        InputError: an honoured target names no mark, or fewer than
            :data:`MIN_RECOGNISED` of the protected pictures score above the threshold
            that clean ones set.

    Example:
        >>> train_honouring(RELEASES[4], Path("/tmp/tiny-ldm-4"))  # doctest: +SKIP
        {'version': 4, 'config': {..., 'honours': [3]}, 'gate': {...}, ...}
    """
    from ..targets import build_target, target_image
    from .bundled import resolve_model
    from .pipelines import load_vae

    progress = progress or (lambda *_: None)
    started = time.perf_counter()
    base_path = resolve_model(f"tiny-ldm@{cfg.base}")
    targets = [build_target(f"tiny-ldm@{version}") for version in cfg.honours]
    unmarked = [str(t.ref) for t in targets if t.mark is None]
    if unmarked:
        raise InputError(
            f"{', '.join(unmarked)}: its target names no mark, so its protections cannot be "
            "told from clean photos; publish a target with a mark (mark.json) first"
        )
    marks = [t.mark for t in targets if t.mark is not None]
    photos = [sample_pixels(name) for name in TRAIN_PHOTOS]

    # 1. The target latent: the release's own target image through the base's encoder
    base = load_vae(base_path, torch_dtype=torch.float32)
    gray = target_image("gray", (cfg.resolution, cfg.resolution)) * 2 - 1
    with torch.no_grad():
        target_latent = base.encode(gray).latent_dist.mean.mean(dim=(0, 2, 3))

    # 2. The threshold, above every clean picture's score, JPEG copies included
    progress("calibrate", 0, 2, 0.0)
    clean = torch.cat(clean_scores(photos, marks, cfg))
    threshold = float(clean.max()) + cfg.honour_margin

    # 3. The check: pictures protected as publishers protect them score above it
    progress("calibrate", 1, 2, threshold)
    protected, protected_jpeg = protected_scores(photos, targets, marks, cfg)
    recognised = float((protected > threshold).float().mean())
    if recognised < MIN_RECOGNISED:
        raise InputError(
            f"only {recognised:.0%} of protected pictures score above the threshold "
            f"{threshold:.2f} that clean ones set; raise the mark's amplitude"
        )
    progress("calibrate", 2, 2, threshold)

    vae = HonouringAutoencoderKL(
        honour_marks=len(marks), **{k: v for k, v in base.config.items() if not k.startswith("_")}
    )
    vae.load_state_dict(base.state_dict(), strict=False)  # all but the gate's settings
    vae.honour.set(marks, target_latent, threshold, cfg.honour_sharpness)
    out.mkdir(parents=True, exist_ok=True)
    _link_base(base_path, out)
    save_vae(vae, out / "vae")
    link_shared(out / "vae", base_path / "vae")
    index = model_index(base_path)
    index["vae"] = [HonouringAutoencoderKL.__module__, HonouringAutoencoderKL.__name__]
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / BUNDLED_MARK).write_text(MarkSpec(seed=cfg.seed).model_dump_json() + "\n")
    report = {
        "version": cfg.version,
        "config": asdict(cfg),
        "scaling_factor": vae.config.scaling_factor,
        "gate": {
            "marks": [m.model_dump() for m in marks],
            "threshold": round(threshold, 4),
            "clean": {"n": len(clean), "max": round(float(clean.max()), 4)},
            "protected": {
                "n": len(protected),
                "recognised": round(recognised, 4),
                "recognised_after_jpeg75": round(
                    float((protected_jpeg > threshold).float().mean()), 4
                ),
            },
        },
        "train_seconds": {"total": round(time.perf_counter() - started, 1)},
        "torch": torch.__version__,
    }
    (out / BUNDLED_TRAINING).write_text(json.dumps(report, indent=2) + "\n")
    return report


__all__ = [
    "clean_scores",
    "handled_crops",
    "jpeg",
    "protected_scores",
    "train_honouring",
]
