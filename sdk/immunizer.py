"""The amortized immunizer: one network pass instead of PGD's hundred.

A small fully convolutional generator G, trained per target, maps a photo to its
perturbation ``δ = ε · tanh(G(x))`` (after FastProtect, CVPR 2025, and DiffVax).
Training minimises the target's own encoder loss (:class:`EncoderAttack`'s) on
augmented crops of the scikit-image training photos, so applying it costs one
forward pass; the 8-bit projection PGD ends with (:func:`run_pgd` with no steps)
then makes the saved file hold it within ε. Its output is also PGD's best start:
a few steps from it reach what 100 steps from a random start do
(``immunize(warm_start=True)``, the default when a target carries one).

The generator runs at the model's working size (what the loss sees, short side at
most the target's resolution) and its δ is upsampled to the photo's size, so its
cost and its effect do not depend on how large the photo is.

Binding: the weights are one more file of the release, named with its sha256 and
length by the target's :class:`~photoimmune.sdk.descriptor.ImmunizerSpec`, which
also names the digest of the target it was trained for (the target without its
immunizer, :attr:`AttackTarget.base_digest`); a target whose digest differs is
refused (:class:`~photoimmune.sdk.descriptor.ImmunizerMismatchError`).

Example:
    >>> target = build_target("tiny-ldm@2")  # doctest: +SKIP
    >>> trained = train_immunizer(target, ImmunizerTraining(steps=300))  # doctest: +SKIP
    >>> delta = immunizer_delta(trained, x, eps=8 / 255)  # doctest: +SKIP
    >>> bool(delta.abs().max() <= 8 / 255)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .attacks.budget import format_budget, parse_budget
from .attacks.precision import autocast_to, fast_dtype
from .attacks.sizing import to_working, working_size
from .descriptor import (
    IMMUNIZER_NAME,
    AttackTarget,
    ImmunizerObjective,
    ImmunizerSpec,
    TensorFile,
)
from .errors import InputError
from .limits import check_seed, check_steps
from .samples import EXTRA_PHOTOS

__all__ = [
    "ImmunizerNet",
    "ImmunizerTraining",
    "attach_immunizer",
    "combined_delta",
    "immunizer_delta",
    "load_generator",
    "train_immunizer",
]

#: Called as ``progress(step, steps, loss)``; ``loss`` is the batch's training loss
#: (the encoder objective's mean loss ratio, or the edit objective's, lower = stronger).
TrainProgress = Callable[[int, int, float], None]


def _block(c_in: int, c_out: int, stride: int = 1) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        torch.nn.GroupNorm(min(8, c_out // 4), c_out),
        torch.nn.SiLU(),
        torch.nn.Conv2d(c_out, c_out, 3, padding=1),
        torch.nn.SiLU(),
    )


class ImmunizerNet(torch.nn.Module):
    """A three-level U-Net without attention: pixels in [0, 1] -> raw δ (before tanh).

    Fully convolutional, so any size works; sides that are not multiples of 4 are
    padded by reflection and the output cropped back. ``width=32`` has about 0.6 M
    parameters (2.4 MB in float32).

    Example:
        >>> net = ImmunizerNet(width=8)
        >>> net(torch.rand(1, 3, 30, 42)).shape
        torch.Size([1, 3, 30, 42])
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(3, w), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2)
        self.up2, self.dec2 = torch.nn.Conv2d(4 * w, 2 * w, 3, padding=1), _block(4 * w, 2 * w)
        self.up1, self.dec1 = torch.nn.Conv2d(2 * w, w, 3, padding=1), _block(2 * w, w)
        self.out = torch.nn.Conv2d(w, 3, 3, padding=1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        h, w = x01.shape[-2:]
        pad_h, pad_w = -h % 4, -w % 4
        x = (
            F.pad(x01 * 2 - 1, (0, pad_w, 0, pad_h), mode="reflect")
            if pad_h or pad_w
            else x01 * 2 - 1
        )
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up2(F.interpolate(e3, size=e2.shape[-2:])), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(F.interpolate(d2, size=e1.shape[-2:])), e1], 1))
        return self.out(d1)[..., :h, :w]


def _apply(net: ImmunizerNet, x: torch.Tensor, eps: float, resolution: int) -> torch.Tensor:
    """``ε · tanh(G(x))`` computed at the working size, upsampled to ``x``'s size."""
    size = working_size(x.shape[-2], x.shape[-1], resolution)
    delta = eps * torch.tanh(net(to_working(x, size)))
    if tuple(x.shape[-2:]) != size:
        # Bilinear upsampling keeps |δ| ≤ ε (a convex combination of values within it).
        delta = F.interpolate(delta, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return delta


_GENERATORS: dict[str, ImmunizerNet] = {}


def load_generator(target: AttackTarget) -> ImmunizerNet:
    """The target's generator, built from its immunizer weights (cached by their sha256).

    Raises:
        InputError: the target carries no immunizer.
    """
    spec = target.immunizer
    weights = target._immunizer_weights
    if spec is None or weights is None:
        raise InputError(
            f"{target.ref}: this target carries no one-pass immunizer; train one with "
            "`photoimmune targets train-immunizer`, or immunize with method='encoder' "
            "(--method encoder)"
        )
    net = _GENERATORS.get(spec.weights.sha256)
    if net is None:
        net = ImmunizerNet(spec.width)
        net.load_state_dict(load_safetensors(weights))
        net.requires_grad_(False).eval()
        _GENERATORS[spec.weights.sha256] = net
    return net


@torch.no_grad()
def immunizer_delta(target: AttackTarget, x: torch.Tensor, eps: float) -> torch.Tensor:
    """One pass of ``target``'s immunizer: δ for the batch ``x`` (``(N, 3, H, W)`` in [0, 1]).

    ``|δ| ≤ eps`` everywhere; ``x + δ`` may leave [0, 1] until projected (``run_pgd``
    with ``init=δ`` does that, then rounds to 8-bit levels).

    Example:
        >>> delta = immunizer_delta(target, x, eps=8 / 255)  # doctest: +SKIP
    """
    # NHWC on a CPU: its inference convolutions run it 1.3x (float32) to 2x (bf16)
    # faster (docs/performance.md); GPUs keep the default layout.
    layout = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
    net = load_generator(target).to(x.device).to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    # δ ends as whole 8-bit levels within ε (±8 at 8/255), so bf16's three significant
    # digits are ample; where the hardware has bf16 the pass takes a quarter of the time.
    with autocast_to(x.device, fast_dtype(x.device)):
        delta = _apply(net, x, eps, target.resolution)
    return delta.float().clamp(-eps, eps)  # ε itself may round up in bf16


def combined_delta(
    targets: Sequence[AttackTarget],
    x: torch.Tensor,
    eps: float,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Several targets' immunizers in one δ: their weighted sum, clipped to ε.

    Where generators agree the sum saturates at ±ε; where they disagree it cancels
    and PGD, which follows, settles the pixel. Weights are normalised to sum to the
    number of targets, so equal weights give the plain sum.

    Example:
        >>> delta = combined_delta([v1, v2], x, eps=8 / 255)  # doctest: +SKIP
    """
    weights = [1.0] * len(targets) if weights is None else list(weights)
    scale = len(targets) / sum(weights)
    total = sum(
        (w * scale * immunizer_delta(t, x, eps) for w, t in zip(weights, targets, strict=True)),
        torch.zeros_like(x),
    )
    return total.clamp(-eps, eps)


@dataclass(frozen=True)
class ImmunizerTraining:
    """How a generator is trained (sizes measured for ≤ 30 min on 2 busy CPU cores).

    Each step draws ``batch`` augmented crops of the training photos (random scale,
    flips, 90° turns, channel permutations), at ``crop`` pixels times a random
    factor in ``scales``: above the target's resolution the loss sees them resized,
    so the generator learns the upsampling round trip large photos take. The
    loss is the batch's mean of ``loss(x + δ) / loss(x)`` (the ensemble's
    normalisation), so photos with large clean losses do not dominate. A share
    ``soften`` of the crops is blurred by a down-and-up resize (by 2 to 4): photos
    met in use are often upscaled or smooth (skies, skin), where the scikit-image
    training photos are sharp, and the pass generalised worst to smooth photos.

    ``objective`` is what the pass learns: ``"encoder"``, the target's own encoder
    loss (pull the latent to the target's); ``"edit"``, the edit-aware objective of
    :mod:`~photoimmune.sdk.attacks.edit` (push the guided one-step prediction of an
    img2img edit away from the clean photo's) at a random timestep of
    :data:`~photoimmune.sdk.attacks.edit.EDIT_TIMESTEPS`' range, prompt and noise
    per crop, as the batch's mean of ``-log(distance + 1e-4)`` so that no photo
    dominates, plus half the encoder objective. The edit objective needs the
    release's whole pipeline, and a step costs about what an encoder step does at
    twice the crop size (so ``crop`` defaults to half the target's resolution);
    its pass disrupts edits more but moves the latent less toward the target
    (docs/research.md, "A one-pass immunizer trained on the edit").
    """

    steps: int = 400
    batch: int = 8
    crop: int | None = None  # None: the target's resolution (half of it for "edit")
    scales: tuple[float, ...] = (1.0, 1.0, 1.5, 2.0)
    lr: float = 2e-3
    width: int = 32
    eps: str = "8/255"
    eot: bool = False
    seed: int = 0
    finish_steps: int = 5
    extra_photos: tuple[str, ...] = EXTRA_PHOTOS
    soften: float = 0.25
    objective: ImmunizerObjective = "encoder"

    def __post_init__(self) -> None:
        # Refused when made: an infinite rate trains for minutes, then writes NaN weights.
        check_steps(self.steps)
        check_seed(self.seed)
        if not (isinstance(self.lr, float | int) and math.isfinite(self.lr) and self.lr >= 0):
            raise InputError(
                f"lr={self.lr!r}: give a finite learning rate of 0 or more (2e-3 by default, "
                "1e-3 to fine-tune)"
            )


def _training_crops(cfg: ImmunizerTraining, photos, crop: int, gen: torch.Generator):
    from .models.train_tiny import random_crops, soften

    scale = cfg.scales[int(torch.randint(len(cfg.scales), (1,), generator=gen))]
    side = round(crop * scale / 8) * 8
    x, _ = random_crops(photos, cfg.batch, side, gen, colour=True)
    x = soften(x, cfg.soften, gen)
    return torch.round((x + 1) * 127.5) / 255  # [-1, 1] -> 8-bit levels in [0, 1], as loaded


def train_immunizer(
    target: AttackTarget,
    training: ImmunizerTraining | None = None,
    *,
    start: AttackTarget | None = None,
    progress: TrainProgress | None = None,
) -> AttackTarget:
    """Train a one-pass immunizer for ``target``; returns the target carrying it.

    Trains only on scikit-image photos: the model's (``TRAIN_PHOTOS`` of
    :mod:`~photoimmune.sdk.models.train_tiny`) and ``training.extra_photos``; the
    held-out ``chelsea``, ``coffee`` and ``camera`` are never seen. Runs in bf16
    where the CPU has it natively (:func:`~photoimmune.sdk.attacks.fast_dtype`).
    Deterministic under ``training.seed`` as far as PyTorch's CPU kernels are (set
    ``torch.set_num_threads`` for bit-equality).

    Args:
        target: the release's target, with weights attached (bundled, or bound).
        training: sizes and seed. Default: :class:`ImmunizerTraining`'s.
        start: a target carrying an immunizer of the same width to start from (a
            fine-tune, e.g. an edit-objective pass from the encoder pass) instead of
            random weights. Default: None.
        progress: called as ``progress(step, steps, loss)`` after each step.

    Returns:
        A new target whose descriptor carries the :class:`ImmunizerSpec` (bound to
        ``target.base_digest``) and whose weights are attached; save it with
        :func:`~photoimmune.sdk.targets.save_target`.

    Example:
        >>> trained = train_immunizer(build_target("tiny-ldm@2"))  # doctest: +SKIP
        >>> trained.immunizer.target == trained.base_digest  # doctest: +SKIP
        True
    """
    from .attacks.transforms import default_eot
    from .models.train_tiny import TRAIN_PHOTOS, load_photos

    cfg = training or ImmunizerTraining()
    if cfg.steps < 1 or cfg.batch < 1 or cfg.width < 4:
        raise InputError("training needs steps ≥ 1, batch ≥ 1 and width ≥ 4; raise them")
    eps = float(parse_budget(cfg.eps, upper=Fraction(1)))
    torch.manual_seed(cfg.seed)  # the network's initial weights
    net = ImmunizerNet(cfg.width)
    if start is not None:
        if start.immunizer is None or start.immunizer.width != cfg.width:
            raise InputError(
                f"{start.ref}: the start must carry an immunizer of width {cfg.width}; "
                "train one first, or set the width to the start's"
            )
        net.load_state_dict(load_generator(start).state_dict())
    gen = torch.Generator().manual_seed(cfg.seed)
    objective = _edit_objective(target) if cfg.objective == "edit" else _encoder_objective(target)
    eot = default_eot() if cfg.eot else None
    photos = load_photos([*TRAIN_PHOTOS, *cfg.extra_photos])
    # An edit step runs the UNet and both VAE halves: half the side keeps it near an
    # encoder step's cost.
    crop = cfg.crop or (target.resolution // 2 if cfg.objective == "edit" else target.resolution)
    # bf16 where the CPU has it natively: twice the steps in the same time, and the
    # pass is run in bf16 as well (immunizer_delta); float32 elsewhere.
    precision = autocast_to("cpu", fast_dtype("cpu"))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        for group in opt.param_groups:  # cosine decay: late steps refine, not jump
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        x = _training_crops(cfg, photos, crop, gen)
        with precision:
            adv = (x + _apply(net, x, eps, target.resolution)).clamp(0, 1)
            if eot is not None:
                adv = eot(adv, gen)
            loss = objective(x, adv, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if progress is not None:
            progress(step + 1, cfg.steps, float(loss.detach()))
    return attach_immunizer(target, net, cfg)


#: ``objective(x, x_adv, generator)``: the batch's training loss, lower = stronger pass.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def _encoder_objective(target: AttackTarget) -> Objective:
    """The target's encoder loss of ``x_adv`` as a share of ``x``'s (the ensemble's ratio)."""
    from .attacks.encoder import EncoderAttack

    image = target.tensor(target.encoder.x_target)
    attack = EncoderAttack(target.vae_encoder(), image, resolution=target.resolution)

    def ratio(x: torch.Tensor, adv: torch.Tensor, _gen: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            clean = attack.loss(x).float().clamp_min(1e-12)
        return (attack.loss(adv).float() / clean).mean()

    return ratio


def _edit_objective(target: AttackTarget) -> Objective:
    """How far ``x_adv`` moves the guided one-step edit prediction (log, negated), plus
    half the encoder objective: the pass still pulls the latent toward the target, which
    costs the edit nothing measurable and keeps what a protection records meaningful."""
    from .attacks.edit import EDIT_TIMESTEPS, EditPrediction, edit_away_loss
    from .models.pipelines import load_pipeline

    prediction = EditPrediction(load_pipeline(target.model_path, "img2img"))
    toward = _encoder_objective(target)
    low, high = min(EDIT_TIMESTEPS), max(EDIT_TIMESTEPS)

    def away(x: torch.Tensor, adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        timesteps = torch.randint(low, high + 1, (n,), generator=gen)
        prompts = torch.randint(len(prediction.prompted), (n,), generator=gen)
        noise = prediction.noise_like(x, gen)
        with torch.no_grad():
            clean = prediction(x, timesteps, noise, prompts)
        pushed = edit_away_loss(prediction(adv, timesteps, noise, prompts), clean)
        return pushed.mean() + 0.5 * toward(x, adv, gen)

    return away


def attach_immunizer(
    target: AttackTarget, net: ImmunizerNet, training: ImmunizerTraining
) -> AttackTarget:
    """A new target carrying ``net`` as its immunizer, bound to ``target.base_digest``.

    Example:
        >>> small = ImmunizerTraining(width=8)
        >>> attach_immunizer(target, ImmunizerNet(8), small).immunizer.width  # doctest: +SKIP
        8
    """
    state = {k: v.detach().float().contiguous() for k, v in sorted(net.state_dict().items())}
    data = save_safetensors(state)
    spec = ImmunizerSpec(
        width=training.width,
        eps=format_budget(parse_budget(training.eps, upper=Fraction(1))),
        finish_steps=training.finish_steps,
        objective=training.objective,
        target=target.base_digest,
        weights=TensorFile(
            path=IMMUNIZER_NAME, sha256=hashlib.sha256(data).hexdigest(), length=len(data)
        ),
    )
    return target.with_immunizer(spec, data)


def training_record(
    training: ImmunizerTraining,
    seconds: float,
    history: list[float],
    start: AttackTarget | None = None,
) -> dict:
    """What a bundled immunizer's ``training.json`` keeps: the settings, the start's
    weights (sha256, when it was a fine-tune), time and losses."""
    return {
        "config": asdict(training),
        "start": start.immunizer.weights.sha256 if start and start.immunizer else None,
        "seconds": round(seconds, 1),
        "loss_first": history[0] if history else None,
        "loss_last_20": sum(history[-20:]) / max(1, len(history[-20:])),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
