"""``immunize()``: protect images against one or more model versions.

This is the publisher's entry point. It loads images safely, builds one attack
per target (an :class:`Ensemble` when there are several, so one δ under one
budget covers all of them), runs PGD, and returns the 8-bit pixels together
with one :class:`Protection` record per target.

Speed: a target that carries a one-pass immunizer (:mod:`photoimmune.sdk.immunizer`)
gives its attack (the one its objective names: encoder or edit) its start: by
default its δ is refined by the vendor's recommended few steps (``warm_start``),
and ``method="amortized"`` keeps the pass alone, rounded to 8-bit levels within ε,
with no PGD step at all.

Sizes: images of any size are accepted. The perturbation is computed at the
image's own size, but the loss sees the image resized to the model's working
resolution (short side at most ``target.resolution``), the way an editor would
feed it to the model; see :mod:`photoimmune.sdk.attacks.sizing`. A budget may
raise that bound (:func:`attack_resolution`): tiny-ldm@3's edit budget sees photos
up to 256 px at their own size, the size img2img edits them at. Images of equal
size are attacked as one batch.

Marks: a target that names a protection mark (:mod:`photoimmune.sdk.mark`) has
it added to every L∞ protection, inside the same ε, after the attack; the
Protection records the loss of the image as saved, mark included.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from typing import Any, Literal, get_args, overload

import numpy as np
import torch
from PIL import Image

from .attacks.base import Attack
from .attacks.budget import format_budget, parse_budget
from .attacks.ensemble import Ensemble, check_weights
from .attacks.pgd import Norm, PGDConfig, PGDResult
from .attacks.precision import fast_dtype
from .attacks.sizing import check_attack_size, working_size
from .attacks.transforms import default_eot
from .codec import DecodedImage
from .descriptor import IMMUNIZE_METHODS, Budget, ImmunizeMethod, MarkSpec, Method
from .devices import resolve_device
from .errors import InputError
from .immunizer import combined_delta, load_generator
from .io import (
    ImageSource,
    LoadedImage,
    load_image,
    max_abs_delta,
    pixels_to_tensor,
    tensor_to_pixels,
)
from .limits import MAX_STEPS, check_seed, check_steps
from .mark import apply_marks
from .protection import Protection, format_loss
from .targets import AttackTarget, Recipe, build_target

TargetLike = AttackTarget | str | os.PathLike[str]
#: Iterations when the caller does not say: enough for the tiny model at 8/255.
DEFAULT_STEPS = {"encoder": 100, "diffusion": 20, "edit": 20}
#: A cold (random-start) L∞ encoder attack runs with this momentum and, unless told
#: the steps, this share of the recommended ones: a recommendation names PhotoGuard's
#: loop, and momentum 0.75 reaches its 100-step loss cut and edit disruption in 30
#: (docs/performance.md, "One-pass immunizers", the "cold default" rows).
COLD_MOMENTUM = 0.75
COLD_STEP_SHARE = 0.3
#: The PGDConfig fields ``**pgd`` may set: the rest are immunize()'s own parameters.
PGD_OPTIONS = tuple(
    f.name for f in fields(PGDConfig) if f.name not in {"eps", "steps", "norm", "autocast", "eot"}
)


@dataclass
class ImmunizationResult:
    """One immunized image.

    Attributes:
        pixels: the immunized image, uint8 ``(H, W, 3)``: exactly what to save.
        original: the loaded input pixels (never modified).
        protections: one record per target, with that target's loss before/after.
        seconds: wall time of the attack for the batch this image was in.
    """

    pixels: np.ndarray
    original: np.ndarray
    protections: list[Protection]
    seconds: float
    source: str = ""
    loss_history: list[float] = field(default_factory=list)

    @property
    def max_abs_delta(self) -> int:
        """Largest per-pixel change, in 8-bit levels (the budget's unit)."""
        return max_abs_delta(self.pixels, self.original)

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.pixels)


def check_immunizable(
    images: Sequence[DecodedImage],
    targets: Sequence[AttackTarget],
    method: ImmunizeMethod | None = None,
    eps: str | float | None = None,
    steps: int | None = None,
    *,
    warm_start: bool | None = None,
) -> None:
    """Refuse, before any model loads, the first image :func:`immunize` would refuse to
    attack with these settings (too elongated, or too large at the attack's size), so
    that a batch fails before its first photo rather than at its bad one.

    Raises :class:`~photoimmune.sdk.errors.AttackSizeError` naming the image.

    Example:
        >>> photos = [load_image(p) for p in paths]  # doctest: +SKIP
        >>> check_immunizable(photos, [build_target("tiny-ldm@3")])  # doctest: +SKIP
    """
    plan = choose_schedule(targets, method, eps, steps, warm_start=warm_start)
    _check_sizes(images, targets, plan.budget)


def _check_sizes(
    images: Sequence[DecodedImage], targets: Sequence[AttackTarget], budget: Budget
) -> None:
    for image in images:
        for target in targets:
            resolution = attack_resolution(target, budget)
            check_attack_size(image.height, image.width, resolution, name=image.name)


def attack_resolution(target: AttackTarget, budget: Budget) -> int:
    """The short side up to which ``target``'s attack sees a photo at its own size.

    The budget's :attr:`~.descriptor.Budget.resolution` when it names one, never below
    the model's own (so an ensemble's other members keep theirs).

    Example:
        >>> v3 = build_target("tiny-ldm@3")  # doctest: +SKIP
        >>> attack_resolution(v3, v3.recommended_budget())  # doctest: +SKIP
        256
    """
    return max(target.resolution, budget.resolution or 0)


def steps_at_size(steps: int, budget: Budget, side: int) -> int:
    """The PGD steps for a photo the attack sees with short side ``side``, from the
    ``steps`` a schedule chose (:attr:`~.descriptor.Budget.full_steps_up_to`).

    Example:
        >>> edit = Budget(method="edit", eps="8/255", steps=40, resolution=256,
        ...               full_steps_up_to=128)
        >>> steps_at_size(40, edit, 128), steps_at_size(40, edit, 192), steps_at_size(40, edit, 256)
        (40, 27, 20)
    """
    full = budget.full_steps_up_to
    if full is None or side <= full:
        return steps
    return math.ceil(steps * full / side)


def _build_attack(
    target: AttackTarget, budget: Budget, config: PGDConfig, device: torch.device, prompt: str
) -> Attack:
    method = budget.method
    resolution = attack_resolution(target, budget)
    image = target.tensor(
        target.diffusion.x_target if method == "diffusion" else target.encoder.x_target
    )
    if method == "encoder":
        from .attacks.encoder import EncoderAttack

        encoder = target.vae_encoder().to(device)
        latents = target._latents.setdefault(str(device), {})
        # The signed z_target is the target image's latent at its own size: the loss the
        # descriptor names, with no second encoding of the image.
        z_target = target.tensor(target.encoder.z_target).to(device)
        latents.setdefault(tuple(image.shape[-2:]), z_target)
        return EncoderAttack(encoder, image, resolution=resolution, latents=latents, config=config)
    from .models.pipelines import load_pipeline

    if method == "diffusion":
        from .attacks.diffusion import DiffusionAttack

        pipe = load_pipeline(target.model_path, "img2img", device=device)
        return DiffusionAttack(pipe, image, prompt=prompt, resolution=resolution, config=config)
    if method == "edit":
        from .attacks.edit import EditAwayAttack, EditPrediction

        pipe = load_pipeline(target.model_path, "img2img", device=device)
        return EditAwayAttack(EditPrediction(pipe), resolution=resolution, config=config)
    raise InputError(f"unknown method {method!r}; use 'encoder', 'diffusion' or 'edit'")


# One image in, one result out; a list or tuple of images in, a list out.
@overload
def immunize(
    images: ImageSource,
    targets: TargetLike | Sequence[TargetLike],
    *,
    method: ImmunizeMethod | None = None,
    eps: str | float | None = None,
    steps: int | None = None,
    warm_start: bool | None = None,
    seed: int = 0,
    norm: Literal["linf", "l2"] = "linf",
    recipe: Recipe = "gray",
    weights: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
    eot: bool = False,
    prompt: str = "",
    device: str | torch.device = "cpu",
    autocast: torch.dtype | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    **pgd: Any,
) -> ImmunizationResult: ...


@overload
def immunize(
    images: list[ImageSource] | tuple[ImageSource, ...],
    targets: TargetLike | Sequence[TargetLike],
    *,
    method: ImmunizeMethod | None = None,
    eps: str | float | None = None,
    steps: int | None = None,
    warm_start: bool | None = None,
    seed: int = 0,
    norm: Literal["linf", "l2"] = "linf",
    recipe: Recipe = "gray",
    weights: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
    eot: bool = False,
    prompt: str = "",
    device: str | torch.device = "cpu",
    autocast: torch.dtype | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    **pgd: Any,
) -> list[ImmunizationResult]: ...


def immunize(
    images: ImageSource | list[ImageSource] | tuple[ImageSource, ...],
    targets: TargetLike | Sequence[TargetLike],
    *,
    method: ImmunizeMethod | None = None,
    eps: str | float | None = None,
    steps: int | None = None,
    warm_start: bool | None = None,
    seed: int = 0,
    norm: Literal["linf", "l2"] = "linf",
    recipe: Recipe = "gray",
    weights: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
    eot: bool = False,
    prompt: str = "",
    device: str | torch.device = "cpu",
    autocast: torch.dtype | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    **pgd: Any,
) -> ImmunizationResult | list[ImmunizationResult]:
    """Immunize one image (returns one result) or a list of images (returns a list).

    The steps, numbered as in the code:

    1. Check the inputs: load the images and resolve the targets.
    2. Choose the budget (what the caller gave, the rest from the first target) and
       refuse a size no attack at it can afford, all before any model is loaded.
    3. Build the attack: one per target, an :class:`Ensemble` when there are several.
    4. Attack each group of equal-size images as one batch; record one
       :class:`Protection` per target and image.

    Args:
        images: one image or a list (or tuple) of them; each a path, bytes, a PIL image
            or a uint8 ``(H, W, 3)`` array (see :func:`~photoimmune.sdk.io.load_image`).
        targets: one or several :class:`AttackTarget` objects, bundled model names
            (``"tiny-ldm@1"``) or local diffusers folders; several share one δ (an
            ensemble).
        method: ``"encoder"``, ``"diffusion"``, ``"edit"`` (:mod:`.attacks.edit`) or
            ``"amortized"`` (each target's one-pass immunizer alone, then the 8-bit
            projection; no PGD step). Default: None, the method of the (first)
            target's recommended budget (:meth:`AttackTarget.recommended_budget`).
        eps: budget in [0, 1] pixel scale, ``"8/255"`` or ``0.03``. Default: None, the
            target's recommended ε for that method.
        steps: PGD iterations, up to :data:`~photoimmune.sdk.limits.MAX_STEPS`; 0 runs
            none (the random start and the 8-bit finish alone). Default: None, the
            target's recommended number for that method (:data:`DEFAULT_STEPS` without a
            recommendation); under a warm start, the immunizers' recommended
            ``finish_steps`` (the largest of them); from a random start, an L∞ encoder
            attack's :data:`COLD_STEP_SHARE` of it, run with momentum
            (:func:`choose_schedule`); fewer on photos larger than the budget's
            ``full_steps_up_to`` (:func:`steps_at_size`).
        warm_start: start PGD from the targets' one-pass immunizers (combined for an
            ensemble, :func:`~photoimmune.sdk.immunizer.combined_delta`) instead of a
            random point. Default: None, on whenever the attack is L∞ and every
            target carries an immunizer trained on its objective (encoder or edit).
        seed: seed of the attack's random start and noise, a whole number from 0 to
            :data:`~photoimmune.sdk.limits.MAX_SEED`. Default: 0.
        norm: ``"linf"`` or ``"l2"``, the norm ``eps`` bounds. Default: ``"linf"``.
        recipe: how a target is built from a model name or folder (see
            :func:`~photoimmune.sdk.targets.build_target`). Default: ``"gray"``.
        weights: one weight per target in an ensemble's loss (several targets only).
            Default: None, equal.
        mask: ``(H, W)`` numpy array, nonzero where pixels may change (e.g. the region an
            inpainting edit keeps), nonzero somewhere; the same mask for every image, so
            every image has its size. Default: None, all.
        eot: average gradients over two random draws of JPEG, resize, blur, noise or noisy
            upscaling per step (:func:`~photoimmune.sdk.attacks.transforms.default_eot`):
            hardened against those purifiers, at twice the time. Default: False (see
            docs/evaluation.md, "Purifiers", for why).
        prompt: the diffusion attack's prompt. Default: ``""``, PhotoGuard's.
        device: where the attack runs: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or
            ``"auto"`` (CUDA when this machine has it). Default: ``"cpu"``.
        autocast: e.g. ``torch.bfloat16`` to run the model under autocast.
            Default: None, float32 from a random start; from an immunizer's start
            (and for ``"amortized"``'s two losses) bf16 where the device has it
            natively.
        progress: called as ``progress(step, steps, loss)`` after each iteration.
            Default: None.
        **pgd: further :class:`~photoimmune.sdk.attacks.pgd.PGDConfig` fields
            (:data:`PGD_OPTIONS`: ``schedule``, ``momentum``...).

    Returns:
        One :class:`ImmunizationResult` for one image, a list for a list of images.

    Raises:
        InputError: a bad argument, before any model loads where it can be told; or a
            result that changed no pixel of an image once rounded to 8 bits (an L2
            budget too small for the image's size, a flat all-white or all-black photo),
            which protects nothing; or a loss that overflowed (float16 ``autocast``).

    Example:
        >>> result = immunize("photo.jpg", "tiny-ldm@1", eps="8/255", seed=0)  # doctest: +SKIP
        >>> result.max_abs_delta <= 8  # doctest: +SKIP
        True
    """
    # 1. Check the inputs before any model loads
    _check_choice(method, eps, steps, norm)
    check_seed(seed)
    if progress is not None and not callable(progress):
        raise InputError(f"progress={progress!r}: give a function progress(step, steps, loss)")
    unknown = sorted(pgd.keys() - set(PGD_OPTIONS))
    if unknown:
        raise InputError(
            f"unknown keyword {', '.join(f'{k}=' for k in unknown)}; immunize() passes these "
            f"on to PGDConfig: {', '.join(PGD_OPTIONS)}"
        )
    eot_options: dict[str, Any] = {"eot": default_eot(), "eot_samples": 2} if eot else {}
    # Checks **pgd before any model loads; the plan below sets the steps. Until then the
    # caller's steps, else the most any plan can run: exact_steps=150 fits a plan of 200.
    early_steps = MAX_STEPS if steps is None else steps
    config = PGDConfig(norm=norm, autocast=autocast, steps=early_steps, **{**eot_options, **pgd})
    dev = resolve_device(device)
    target_list = _target_list(targets)
    _check_weights(weights, len(target_list))
    single = not isinstance(images, list | tuple)
    loaded = [load_image(im) for im in (images if isinstance(images, list | tuple) else [images])]
    if mask is not None:
        _check_mask(mask, loaded)
    resolved = [
        t if isinstance(t, AttackTarget) else build_target(t, recipe=recipe) for t in target_list
    ]

    # 2. Choose the budget, and whether the immunizers give PGD its start
    plan = choose_schedule(resolved, method, eps, steps, warm_start=warm_start, norm=norm)
    chosen, start = plan.budget, plan.warm_start
    _check_sizes(loaded, resolved, chosen)  # still before any model loads
    budget = parse_budget(chosen.eps, upper=None if norm == "l2" else Fraction(1))
    settings: dict[str, Any] = {"eps": float(budget), "steps": plan.steps}
    if plan.steps == 0:  # the pass alone, then rounding only
        settings["quant_steps"] = 0
    if start:
        # From the immunizer's start PGD only refines, so bf16 where native loses
        # nothing (loss cuts within 0.001 of float32's) and runs the pass, the few
        # steps and the two losses a Protection records 1.5x faster; a cold attack
        # stays in float32, where bf16 would stall short of its optimum.
        settings["autocast"] = autocast or fast_dtype(dev)
    if plan.momentum and not {"momentum", "schedule"} & pgd.keys():
        settings["momentum"] = plan.momentum
    config = replace(config, **settings)

    # 3. Build the attack
    members = [_build_attack(t, chosen, config, dev, prompt) for t in resolved]
    attack = members[0] if len(members) == 1 else Ensemble(members, weights, config=config)
    if start:  # generators load with the models, off the clock each Protection records
        for target in resolved:
            load_generator(target).to(dev)

    # 4. Attack each group of equal-size images as one batch
    applied = chosen.model_copy(update={"norm": norm, "eps": format_budget(budget)})
    seen_up_to = max(attack_resolution(t, chosen) for t in resolved)
    # An L2 budget has no room set aside per pixel: marks go with L∞ only.
    marks = [t.mark for t in resolved if t.mark is not None] if norm == "linf" else []
    results: dict[int, ImmunizationResult] = {}
    for indices in _same_size_groups(loaded):
        group = [loaded[i] for i in indices]
        x = pixels_to_tensor([im.pixels for im in group], device=dev)
        if steps is None:  # steps the caller named run as named, at any size
            height, width = x.shape[-2:]
            side = min(working_size(height, width, seen_up_to))
            attack.config = replace(config, steps=steps_at_size(plan.steps, chosen, side))
        pixel_mask = None if mask is None else _mask_tensor(mask, x)
        started = time.perf_counter()
        init = combined_delta(resolved, x, float(budget), weights) if start else None
        outcome = attack.perturb(x, mask=pixel_mask, seed=seed, progress=progress, init=init)
        if marks:
            outcome = _marked(attack, x, outcome, marks, float(budget), pixel_mask)
        seconds = time.perf_counter() - started
        losses = _per_target_losses(attack, x, outcome)
        group_results = _group_results(group, resolved, applied, outcome, losses, seconds)
        for i, result in zip(indices, group_results, strict=True):
            _check_changed(
                result, applied, result.source if single else f"images[{i}] ({result.source})"
            )
        results.update(zip(indices, group_results, strict=True))
    final = [results[i] for i in range(len(loaded))]
    return final[0] if single else final


@dataclass(frozen=True)
class Schedule:
    """What :func:`immunize` runs: the attack's budget, its PGD steps (0: the one-pass
    immunizer alone), whether PGD starts from the targets' immunizers, and PGD's
    momentum (:data:`COLD_MOMENTUM` from a random start, 0 otherwise)."""

    budget: Budget
    steps: int
    warm_start: bool
    momentum: float = 0.0


def choose_schedule(
    targets: Sequence[AttackTarget],
    method: ImmunizeMethod | None = None,
    eps: str | float | None = None,
    steps: int | None = None,
    *,
    warm_start: bool | None = None,
    norm: str = "linf",
) -> Schedule:
    """The budget (:func:`choose_budget`), the steps and the start :func:`immunize` runs.

    The fastest path to the recommended budget's quality:

    * the targets' one-pass immunizers give PGD its start when asked, and by default
      whenever the attack is L∞ and every target carries one trained on the
      attack's objective (a pass trained on the encoder loss starts the encoder
      attack, one trained on the edit the edit attack); the steps are then,
      unless given, their recommended few ``finish_steps``;
    * a cold L∞ encoder attack runs with :data:`COLD_MOMENTUM` and, unless given,
      :data:`COLD_STEP_SHARE` of the recommended steps;
    * ``"amortized"`` is the pass alone, recorded as the attack its objective names.

    Refuses, with :class:`InputError`, a method, budget, step count or norm that is no
    such thing, and what the targets cannot serve.

    Example:
        >>> v3 = build_target("tiny-ldm@3")  # doctest: +SKIP
        >>> plan = choose_schedule([v3])  # doctest: +SKIP
        >>> plan.budget.method, plan.steps, plan.warm_start  # doctest: +SKIP
        ('edit', 40, True)
        >>> choose_schedule([v3], "encoder").steps  # its pass is not for it: cold  # doctest: +SKIP
        30
    """
    _check_choice(method, eps, steps, norm)
    if not targets:
        raise InputError("no target given; name at least one model, e.g. 'tiny-ldm@1'")
    amortized = method == "amortized"
    lacking = [str(t.ref) for t in targets if t.immunizer is None]
    first = targets[0].immunizer
    attack_method: Method | None = method if method != "amortized" else None
    if amortized and first is not None:
        attack_method = first.objective
    budget = choose_budget(targets[0], attack_method, eps, steps)
    wanted = amortized or warm_start
    if amortized and steps:
        raise InputError(
            "the amortized method (--method amortized) runs no PGD step; for N steps after "
            f"the pass use method={attack_method or 'encoder'!r}, warm_start=True, steps=N "
            f"(--method {attack_method or 'encoder'} --warm-start --steps N)"
        )
    if wanted and lacking:
        raise InputError(
            f"{', '.join(lacking)}: no one-pass immunizer in this target; train one with "
            "`photoimmune targets train-immunizer`, or use method='encoder', warm_start=False "
            "(--method encoder --no-warm-start)"
        )
    if wanted and norm != "linf":
        raise InputError('one-pass immunizers are trained for L∞ budgets; use norm="linf"')
    if warm_start is None:
        trained = {t.immunizer.objective for t in targets if t.immunizer is not None}
        start = not lacking and trained == {budget.method} and norm == "linf"
    else:
        start = bool(wanted)
    if amortized:
        return Schedule(budget, 0, True)
    if start and steps is None:
        finish = max(t.immunizer.finish_steps for t in targets if t.immunizer is not None)
        return Schedule(budget, finish, True)
    if not start and budget.method == "encoder" and norm == "linf":
        cold = budget.steps if steps is not None else math.ceil(budget.steps * COLD_STEP_SHARE)
        return Schedule(budget, cold, False, COLD_MOMENTUM)
    return Schedule(budget, budget.steps, start)


def _group_results(
    group: list[LoadedImage],
    targets: list[AttackTarget],
    applied: Budget,
    outcome: PGDResult,
    losses: tuple[list[list[float]], list[list[float]]],
    seconds: float,
) -> list[ImmunizationResult]:
    """One result per image of an attacked group, each with one Protection per target."""
    before, after = losses
    for k, target in enumerate(targets):
        for j, image in enumerate(group):
            if not (math.isfinite(before[k][j]) and math.isfinite(after[k][j])):
                raise InputError(
                    f"{image.name}: the attack's loss against {target.ref} overflowed "
                    f"(before {before[k][j]}, after {after[k][j]}), as float16 autocast can; "
                    "run with autocast=None (float32) or autocast=torch.bfloat16"
                )
    adv_pixels = tensor_to_pixels(outcome.x_adv)
    duration_ms = round(seconds * 1000 / len(group))
    return [
        ImmunizationResult(
            pixels=adv_pixels[j],
            original=np.asarray(image.pixels),
            protections=[
                Protection(
                    target_ref=str(target.ref),
                    target_digest=target.digest,
                    method=applied.method,
                    norm=applied.norm,
                    eps=applied.eps,
                    steps=outcome.steps_run,
                    loss_before=format_loss(before[k][j]),
                    loss_after=format_loss(after[k][j]),
                    duration_ms=duration_ms,
                )
                for k, target in enumerate(targets)
            ],
            seconds=seconds,
            source=image.name,
            loss_history=outcome.history,
        )
        for j, image in enumerate(group)
    ]


def choose_budget(
    target: AttackTarget,
    method: Method | None = None,
    eps: str | float | None = None,
    steps: int | None = None,
) -> Budget:
    """What the caller chose, the rest from what ``target`` recommends.

    Without a recommendation for the method, PhotoGuard's setting: ε 8/255 and
    :data:`DEFAULT_STEPS` iterations of the encoder attack.

    Example:
        >>> choose_budget(build_target("tiny-ldm@1"), eps="16/255")  # doctest: +SKIP
        Budget(method='encoder', norm='linf', eps='16/255', steps=100)
    """
    recommended = target.recommended_budget(method)
    if recommended is None:  # PhotoGuard's setting for the method asked for
        fallback: Method = method or "encoder"
        recommended = Budget(method=fallback, eps="8/255", steps=DEFAULT_STEPS[fallback])
    return recommended.model_copy(
        update={
            "method": method or recommended.method,
            "eps": recommended.eps if eps is None else str(eps),
            "steps": recommended.steps if steps is None else steps,
        }
    )


def _same_size_groups(images: list[LoadedImage]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.pixels.shape, []).append(i)
    return list(groups.values())


def _mask_tensor(mask: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(mask != 0).to(x)[None, None]


def _check_choice(method: object, eps: str | float | None, steps: object, norm: object) -> None:
    """Refuse a method, norm, step count or budget that is none, naming the parameter."""
    if method is not None and method not in IMMUNIZE_METHODS:
        raise InputError(
            f"method={method!r}: use one of {', '.join(IMMUNIZE_METHODS)}, or None for what "
            "the target recommends"
        )
    if norm not in get_args(Norm):
        raise InputError(f"norm={norm!r}: use one of {', '.join(get_args(Norm))}")
    if steps is not None:
        check_steps(steps, name="steps", allow_zero=True)
    if eps is not None:  # as text, the form choose_budget keeps it in
        parse_budget(str(eps), upper=None if norm == "l2" else Fraction(1))


def _target_list(targets: object) -> list[TargetLike]:
    """``targets`` as a non-empty list of targets, model names or folders."""
    if isinstance(targets, AttackTarget | str | os.PathLike):
        return [targets]
    if not isinstance(targets, list | tuple) or not targets:
        raise InputError(
            f"targets={targets!r}: give a target, a model name (e.g. 'tiny-ldm@1') or a "
            "diffusers folder, or a non-empty list of them"
        )
    for target in targets:
        if not isinstance(target, AttackTarget | str | os.PathLike):
            raise InputError(
                f"targets: {target!r} is not a target; give AttackTarget objects, model names "
                "or diffusers folders"
            )
    return list(targets)


def _check_weights(weights: object, count: int) -> None:
    """Refuse weights that do not weigh an ensemble of ``count`` members."""
    if weights is None:
        return
    if count == 1:
        raise InputError(
            "weights= weigh the members of an ensemble; with one target there is nothing "
            "to weigh: leave weights out"
        )
    check_weights(weights, count)  # now, not once the ensemble's models have loaded


def _check_mask(mask: object, images: list[LoadedImage]) -> None:
    """Refuse a mask that is no (height, width) array of every image's size, or selects
    no pixel: such a protection would change nothing, yet be signed as one."""
    if not isinstance(mask, np.ndarray):
        raise InputError(
            f"mask: got a {type(mask).__name__}; give a (height, width) numpy array, nonzero "
            "where pixels may change (numpy.asarray(mask))"
        )
    for image in images:
        if mask.shape != image.pixels.shape[:2]:
            raise InputError(
                f"mask shape {mask.shape} does not match {image.name}'s "
                f"{image.pixels.shape[:2]}; give a (height, width) mask of the images' size"
            )
    if not np.any(mask):
        raise InputError(
            "mask selects no pixel (it is zero everywhere), so nothing would be protected; "
            "make it nonzero where pixels may change, or leave mask out"
        )


def _check_changed(result: ImmunizationResult, applied: Budget, photo: str) -> None:
    """Refuse a result whose saved pixels equal the original's: it protects nothing.
    ``photo`` names it in the message (``images[2]`` in a list)."""
    if result.max_abs_delta > 0:
        return
    height, width = result.original.shape[:2]
    if applied.norm == "l2":
        # Spread evenly, a radius moves each of the 3·H·W values by radius / sqrt(3·H·W).
        one_level = math.sqrt(3 * height * width) / 255
        raise InputError(
            f"{photo}: eps={applied.eps} under norm='l2' changed no pixel of this "
            f"{width}x{height} image: an L2 radius that small, spread over the image, rounds "
            f"back to the original 8-bit values; give a larger eps (about {one_level:.3g} "
            "moves every value one level) or use norm='linf'"
        )
    lowest, highest = int(result.original.min()), int(result.original.max())
    if lowest == highest and lowest in (0, 255):
        shade = "black" if lowest == 0 else "white"
        raise InputError(
            f"{photo}: the attack at eps={applied.eps} changed no pixel of this all-{shade} "
            "image: a flat, saturated photo cannot be perturbed inside [0, 255] in the "
            "direction the attack pushes it, at any eps or step count, so it would protect "
            "nothing; leave it out"
        )
    raise InputError(
        f"{photo}: the attack at eps={applied.eps} changed no pixel of this image "
        "once rounded to 8 bits, so it protects nothing; give a larger eps or more steps"
    )


def _marked(
    attack: Attack,
    x: torch.Tensor,
    outcome: PGDResult,
    marks: list[MarkSpec],
    eps: float,
    mask: torch.Tensor | None,
) -> PGDResult:
    """The attack's result carrying the targets' marks (:mod:`.mark`), inside the same ε,
    and re-scored: a Protection records the loss of the image as saved."""
    x_adv = apply_marks(x, outcome.x_adv.to(x), marks, eps, mask)
    return replace(outcome, x_adv=x_adv, loss_after=attack.evaluate(x_adv).to(outcome.loss_after))


def _per_target_losses(
    attack: Attack, x: torch.Tensor, outcome: PGDResult
) -> tuple[list[list[float]], list[list[float]]]:
    """Each target's loss per image, before and after (an ensemble's members one by one)."""
    if isinstance(attack, Ensemble):
        before = [t.tolist() for t in attack.member_losses(x)]
        after = [t.tolist() for t in attack.member_losses(outcome.x_adv)]
        return before, after
    return [outcome.loss_before.tolist()], [outcome.loss_after.tolist()]
