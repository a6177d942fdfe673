"""The one PGD engine every attack runs on.

``run_pgd(loss_fn, x, config)`` minimises a per-image loss over perturbations δ
with ``x + δ`` in [0, 1] and ``‖δ‖ ≤ ε`` (L∞ or L2), and returns the image an
8-bit file can actually hold. The features, each a field of :class:`PGDConfig`:

* L∞ (sign steps) and L2 (normalised-gradient steps) balls, random start;
* step schedules: constant, linear decay to ``final_step_fraction`` of the
  first step (PhotoGuard's schedule), cosine, and ``"apgd"``: Croce & Hein's
  (ICML 2020) adaptive control, which starts at 2ε, halves the step of an image
  whose loss stopped falling and restarts it from its best point, with their
  0.75 momentum. It needs no tuning per budget and reaches in ~100 iterations
  the fine optimum PhotoGuard's decaying schedule needs ~1000 for;
* momentum (MI-FGSM style, gradients normalised per image before averaging);
* early stop once every image's loss is at or below ``loss_target``;
* an exact finish: under bf16 ``autocast`` the last ``exact_steps`` iterations
  (and the quantised finish) run in float32, because bf16's rounding moves
  the loss by about 1e-3 of itself, more than late, small steps change it;
* a per-pixel ``mask`` (1 = may change, 0 = must stay), e.g. for inpainting
  where only the kept region should carry the perturbation;
* EOT: the gradient is averaged over ``eot_samples`` random transforms;
* the best iterate (lowest loss) is kept, not merely the last;
* a quantisation-aware finish: δ is rounded to whole 8-bit levels within the
  budget and refined with ±1-level sign steps, so the *saved* image is the one
  that satisfies ``max|x_adv - x| ≤ ε`` and attacks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import torch

from ..errors import InputError
from ..limits import check_steps
from ..protection import loss_cut
from .precision import autocast_to, warn_if_emulated
from .transforms import Transform

Norm = Literal["linf", "l2"]
Schedule = Literal["constant", "linear", "cosine", "apgd"]
#: The dtypes ``autocast`` runs a model in (None: float32).
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
LossFn = Callable[[torch.Tensor], torch.Tensor]
TermsFn = Callable[[torch.Tensor], Iterable[torch.Tensor]]
ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class PGDConfig:
    """Budget and optimiser settings. ``eps`` and ``step_size`` are in [0, 1] pixel scale.

    Example:
        >>> PGDConfig(eps=8 / 255, steps=50).first_step * 255  # eps / 3 under L∞
        2.6666666666666665
    """

    eps: float = 8 / 255
    steps: int = 100
    norm: Norm = "linf"
    # None: eps / 3 for L∞ (PhotoGuard's ratio), eps / 5 for L2; 2 eps under "apgd"
    step_size: float | None = None
    schedule: Schedule = "linear"
    final_step_fraction: float = 0.01
    random_start: bool = True
    momentum: float = 0.0
    loss_target: float | None = None
    eot: Transform | None = None
    eot_samples: int = 1
    quantize: bool = True
    quant_steps: int | None = None  # None: steps // 10, at least 1 (L∞ only)
    autocast: torch.dtype | None = None  # e.g. fast_dtype(device): bf16 where it is native
    exact_steps: int = 0  # the last iterations run in float32 (no autocast); see run_pgd

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("norm", self.norm, get_args(Norm)),
            ("schedule", self.schedule, get_args(Schedule)),
        ):
            if value not in allowed:
                raise InputError(f"{name}={value!r}: use one of {', '.join(allowed)}")
        # 0 iterations: the start and the 8-bit finish alone
        check_steps(self.steps, name="steps", allow_zero=True)
        check_steps(self.eot_samples, name="eot_samples")
        if self.quant_steps is not None:
            check_steps(self.quant_steps, name="quant_steps", allow_zero=True)
        check_steps(self.exact_steps, name="exact_steps", allow_zero=True)
        _check_number("eps", self.eps, "above 0", lambda v: v > 0)
        if self.step_size is not None:
            _check_number("step_size", self.step_size, "above 0", lambda v: v > 0)
        _check_number("final_step_fraction", self.final_step_fraction, "from 0 to 1", _unit)
        _check_number("momentum", self.momentum, "from 0 to 1", _unit)
        if self.loss_target is not None:
            _check_number("loss_target", self.loss_target, "", lambda v: True)
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise InputError(
                f"autocast={self.autocast!r}: give torch.bfloat16 or torch.float16, or None "
                "to run in float32"
            )
        if self.exact_steps > self.steps:
            raise InputError(
                f"exact_steps={self.exact_steps} must lie between 0 and steps={self.steps}: "
                "it is how many of the last iterations run in float32"
            )

    @property
    def exact(self) -> PGDConfig:
        """These settings without autocast: what the exact finish runs with."""
        return replace(self, autocast=None)

    @property
    def first_step(self) -> float:
        if self.step_size is not None:
            return self.step_size
        if self.schedule == "apgd":
            return 2 * self.eps
        return self.eps / 3 if self.norm == "linf" else self.eps / 5

    def step_at(self, i: int) -> float:
        """Step size of iteration ``i`` (0-based) under a fixed schedule ("apgd": the first)."""
        if self.schedule in ("constant", "apgd") or self.steps <= 1:
            return self.first_step
        progress = i / (self.steps - 1)
        low = self.final_step_fraction
        if self.schedule == "linear":
            return self.first_step * (1 - (1 - low) * progress)
        return self.first_step * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress)))


def _check_number(name: str, value: object, rule: str, ok: Callable[[float], bool]) -> None:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and ok(float(value))):  # type: ignore[arg-type]
        raise InputError(f"{name}={value!r}: give a finite number {rule}".rstrip())


def _unit(value: float) -> bool:
    return 0 <= value <= 1


@dataclass
class PGDResult:
    """What an attack produced for a batch."""

    x_adv: torch.Tensor  # (N, 3, H, W) in [0, 1], on the 8-bit lattice when quantized
    loss_before: torch.Tensor  # (N,) loss of the clean images
    loss_after: torch.Tensor  # (N,) loss of x_adv exactly as returned
    history: list[float] = field(default_factory=list)  # mean loss per iteration
    steps_run: int = 0

    @property
    def loss_cut(self) -> torch.Tensor:
        """(N,) share of each image's loss the attack took away (``protection.loss_cut``)."""
        return loss_cut(self.loss_before, self.loss_after)


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1)


def _l2(t: torch.Tensor) -> torch.Tensor:
    return _per_image(t).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _project(
    delta: torch.Tensor, x: torch.Tensor, cfg: PGDConfig, mask: torch.Tensor
) -> torch.Tensor:
    if cfg.norm == "linf":
        delta = delta.clamp(-cfg.eps, cfg.eps)
    else:
        delta = delta * (cfg.eps / _l2(delta)).clamp(max=1.0)
    return ((x + delta).clamp(0, 1) - x) * mask


def _random_start(x: torch.Tensor, cfg: PGDConfig, gen: torch.Generator) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=gen, dtype=torch.float32).to(x) * 2 - 1
    if cfg.norm == "linf":
        return noise * cfg.eps
    radius = torch.rand((x.shape[0], 1, 1, 1), generator=gen).to(x) * cfg.eps
    return noise / _l2(noise) * radius


def _autocast(x: torch.Tensor, cfg: PGDConfig) -> torch.autocast:
    return autocast_to(x.device, cfg.autocast)


def evaluate_loss(
    loss_fn: LossFn, x: torch.Tensor, cfg: PGDConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Loss of ``x`` averaged over EOT draws (one plain evaluation without EOT or gen)."""
    draws = cfg.eot_samples if (cfg.eot is not None and gen is not None) else 1
    total = torch.zeros(())  # a CPU 0-dim zero: adds to a loss on any device like 0.0
    # No graph is ever needed here: inference mode skips autograd's bookkeeping too
    # (about a sixth of a small encoder's pass on CPU, which a one-pass run pays
    # twice); attacks fill their caches in ``prepare``, outside it.
    with torch.inference_mode():
        for _ in range(draws):
            view = cfg.eot(x, gen) if (cfg.eot is not None and gen is not None) else x
            with _autocast(x, cfg):
                total = total + loss_fn(view).float()
    return (total / draws).clone()  # a normal tensor again, usable in autograd


def loss_and_grad(
    terms_fn: TermsFn, x: torch.Tensor, delta: torch.Tensor, cfg: PGDConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of ``x + δ`` (EOT-averaged) and its gradient in δ: one PGD iteration's work.

    Each term's graph is freed by its own backward pass before the next term is
    built, so peak memory is that of one term (one EOT draw, one noise draw of a
    diffusion attack), not of their sum.

    Example:
        >>> x = torch.full((1, 3, 4, 4), 0.5)
        >>> loss, grad = loss_and_grad(lambda v: [v.sum((1, 2, 3))], x, torch.zeros_like(x),
        ...                            PGDConfig(), torch.Generator())
        >>> float(loss[0]), float(grad.min())
        (24.0, 1.0)
    """
    draws = cfg.eot_samples if cfg.eot is not None else 1
    loss = torch.zeros(x.shape[0], device=x.device)
    grad = torch.zeros_like(delta)
    delta = delta.detach().requires_grad_(True)
    # Gradients even when the caller runs under torch.no_grad(), as a pipeline call does.
    with torch.enable_grad():
        for _ in range(draws):
            for term in _terms_of(terms_fn, x, delta, cfg, gen):
                (g,) = torch.autograd.grad(term.sum() / draws, delta)
                grad += g
                loss += term.detach() / draws
    return loss, grad


def _terms_of(terms_fn: TermsFn, x, delta, cfg: PGDConfig, gen: torch.Generator):
    view = x + delta
    if cfg.eot is not None:
        view = cfg.eot(view, gen)
    with _autocast(x, cfg):
        for term in terms_fn(view):
            yield term.float()


class _APGDControl:
    """Croce & Hein's step-size control for a batch, one step size per image.

    At checkpoints spaced as in their paper (22% of the budget, then shrinking
    gaps of at least 6%), an image's step is halved, and the image restarted
    from its best point, if fewer than 75% of its steps since the last
    checkpoint lowered its loss, or if neither its step nor its best loss
    changed. Between checkpoints the update mixes the new PGD point with the
    previous step (alpha = 0.75), which smooths sign steps' zig-zag.
    """

    ALPHA, RHO = 0.75, 0.75

    def __init__(self, cfg: PGDConfig, loss_before: torch.Tensor) -> None:
        self.eta = torch.full_like(loss_before, cfg.first_step)
        self.checkpoints = self._checkpoints(cfg.steps)
        self.last_checkpoint = 0
        self.successes = torch.zeros_like(loss_before)
        self.eta_then = self.eta.clone()
        self.best_then = torch.full_like(loss_before, math.inf)
        self.prev_loss: torch.Tensor | None = None
        self.prev_delta: torch.Tensor | None = None

    @staticmethod
    def _checkpoints(steps: int) -> set[int]:
        fractions, last, gap = [0.0, 0.22], 0.22, 0.22
        while last < 1:
            gap = max(gap - 0.03, 0.06)
            last += gap
            fractions.append(last)
        marks = (math.ceil(round(p * steps, 6)) for p in fractions[1:])
        return {m for m in marks if m < steps}

    def step(
        self,
        i: int,
        delta: torch.Tensor,
        loss: torch.Tensor,
        direction: torch.Tensor,
        best_delta: torch.Tensor,
        best_loss: torch.Tensor,
        project: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The next δ, given this iteration's δ, loss and (sign or unit) descent direction."""
        if self.prev_loss is not None:
            self.successes += (loss < self.prev_loss).float()
        restart = torch.zeros_like(loss, dtype=torch.bool)
        if i in self.checkpoints:
            stalled = self.successes < self.RHO * (i - self.last_checkpoint)
            stuck = (self.eta == self.eta_then) & (best_loss == self.best_then)
            restart = stalled | stuck
            self.eta = torch.where(restart, self.eta / 2, self.eta)
            self.last_checkpoint, self.successes = i, torch.zeros_like(self.successes)
            self.eta_then, self.best_then = self.eta.clone(), best_loss.clone()
        view = (-1,) + (1,) * (delta.dim() - 1)
        z = project(delta - self.eta.view(view) * direction)
        if self.prev_delta is not None:
            z = project(
                delta + self.ALPHA * (z - delta) + (1 - self.ALPHA) * (delta - self.prev_delta)
            )
        # A restarted image resumes from its best point, with no momentum carried over.
        z = torch.where(restart.view(view), best_delta, z)
        self.prev_delta = torch.where(restart.view(view), best_delta, delta)
        self.prev_loss = torch.where(restart, best_loss, loss)
        return z


def run_pgd(
    loss_fn: LossFn,
    x: torch.Tensor,
    cfg: PGDConfig,
    *,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    terms: TermsFn | None = None,
    init: torch.Tensor | None = None,
) -> PGDResult:
    """Minimise ``loss_fn(x + δ)`` (one value per image) under ``cfg``'s budget.

    ``x`` is an ``(N, 3, H, W)`` batch in [0, 1]; for the quantised finish it
    should hold 8-bit values (``k / 255``), as loaded images do. ``mask`` is
    ``(N or 1, 1 or 3, H, W)`` with 1 where pixels may change. ``terms``, if
    given, splits the loss into a sum of terms whose gradients are taken one by
    one (see :func:`loss_and_grad`); by default the loss is one term. ``init``, if
    given, is the starting δ (projected into the budget) instead of the random
    start: a warm start from a one-pass immunizer (:mod:`photoimmune.sdk.immunizer`);
    with ``steps=0`` and ``quant_steps=0`` only the 8-bit projection runs on it.

    With ``exact_steps``, the last iterations drop ``autocast``: the best
    iterate so far is re-scored in float32 when they start, so the one returned
    is the best by exact losses, the reported losses are exact as well, and the
    early stop at ``loss_target`` waits for an exact loss.

    Example:
        >>> x = torch.full((1, 3, 8, 8), 128 / 255)  # 8-bit values, as loaded images hold
        >>> res = run_pgd(lambda v: (v - 1).pow(2).flatten(1).mean(1), x, PGDConfig(steps=20))
        >>> bool(res.loss_after < res.loss_before), round(float((res.x_adv - x).abs().max() * 255))
        (True, 8)
    """
    warn_if_emulated(cfg.autocast, x.device)
    gen = generator or torch.Generator().manual_seed(0)
    terms_fn: TermsFn = terms or (lambda v: (loss_fn(v),))
    x = x.detach()
    mask = torch.ones_like(x[:, :1]) if mask is None else mask.to(x).expand_as(x[:, :1])
    last_cfg = cfg.exact if cfg.exact_steps else cfg  # what the finish and the report use
    with torch.no_grad():
        loss_before = evaluate_loss(loss_fn, x, last_cfg, None)
    if init is not None:
        delta = init.detach().to(x)
    else:
        delta = _random_start(x, cfg, gen) if cfg.random_start else torch.zeros_like(x)
    delta = _project(delta, x, cfg, mask)
    best_delta, best_loss = delta.clone(), torch.full_like(loss_before, math.inf)
    velocity = torch.zeros_like(x)
    apgd = _APGDControl(cfg, loss_before) if cfg.schedule == "apgd" else None
    project = lambda d: _project(d, x, cfg, mask)  # noqa: E731
    history: list[float] = []
    steps_run = 0
    for i in range(cfg.steps):
        step_cfg = cfg
        if i >= cfg.steps - cfg.exact_steps:
            step_cfg = cfg.exact
            if i == cfg.steps - cfg.exact_steps and i > 0:
                with torch.no_grad():  # bf16 and float32 losses are not comparable
                    best_loss = evaluate_loss(loss_fn, x + best_delta, step_cfg, None)
        loss, grad = loss_and_grad(terms_fn, x, delta, step_cfg, gen)
        steps_run = i + 1
        history.append(float(loss.mean()))
        improved = loss < best_loss
        best_loss = torch.where(improved, loss, best_loss)
        best_delta[improved] = delta[improved]
        if progress is not None:
            progress(steps_run, cfg.steps, history[-1])
        # With an exact finish, only float32 losses are trusted to have reached the target.
        trusted = cfg.exact_steps == 0 or step_cfg.autocast is None
        if cfg.loss_target is not None and trusted and bool((loss <= cfg.loss_target).all()):
            break
        grad = grad * mask
        if cfg.momentum > 0:
            scale = _per_image(grad).abs().mean(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            velocity = cfg.momentum * velocity + grad / scale
            grad = velocity
        step = grad.sign() if cfg.norm == "linf" else grad / _l2(grad)
        if apgd is not None:
            delta = apgd.step(i, delta, loss, step, best_delta, best_loss, project)
        else:
            delta = _project(delta - cfg.step_at(i) * step, x, cfg, mask)
    if cfg.steps == 0 or steps_run == 0:
        best_delta = delta
    loss_after = None
    if not cfg.quantize:
        x_adv = (x + best_delta).clamp(0, 1)
    else:
        x_adv, loss_after = _quantized_finish(
            loss_fn, terms_fn, x, best_delta, last_cfg, mask, gen, progress
        )
    if loss_after is None:
        with torch.no_grad():
            loss_after = evaluate_loss(loss_fn, x_adv, last_cfg, None)
    return PGDResult(x_adv.detach(), loss_before.detach(), loss_after.detach(), history, steps_run)


def _quantized_finish(
    loss_fn: LossFn,
    terms_fn: TermsFn,
    x: torch.Tensor,
    delta: torch.Tensor,
    cfg: PGDConfig,
    mask: torch.Tensor,
    gen: torch.Generator,
    progress: ProgressFn | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Round δ to whole 8-bit levels inside the budget, then refine on that lattice.

    Returns the rounded image and, when the refinement scored it, its loss (the
    same evaluation the caller would make again).
    """
    base = torch.round(x * 255)  # the clean image's levels
    if cfg.norm != "linf":
        levels = torch.round(delta * 255)
        too_long = _l2(levels / 255) > cfg.eps
        # Truncation towards zero never lengthens a vector: a safe fallback.
        levels = torch.where(too_long, torch.trunc(delta * 255), levels)
        return (base + _in_pixel_range(base, levels, mask)) / 255, None
    limit = math.floor(cfg.eps * 255 + 1e-9)
    levels = _in_pixel_range(base, torch.round(delta * 255).clamp(-limit, limit), mask)
    refine = cfg.quant_steps if cfg.quant_steps is not None else max(1, cfg.steps // 10)
    if refine == 0:  # a one-pass immunizer's output: rounding only, no loss to pay for
        return (base + levels) / 255, None
    best_levels = levels.clone()
    with torch.no_grad():
        best_loss = evaluate_loss(loss_fn, (base + levels) / 255, cfg, None)
    for j in range(refine):
        # The gradient in δ has the sign of the gradient in levels (δ = levels / 255).
        _, grad = loss_and_grad(terms_fn, base / 255, levels / 255, cfg, gen)
        # ±1 level per step keeps δ on the lattice the file will hold.
        levels = _in_pixel_range(base, (levels - (grad * mask).sign()).clamp(-limit, limit), mask)
        with torch.no_grad():
            exact = evaluate_loss(loss_fn, (base + levels) / 255, cfg, None)
        better = exact < best_loss
        best_loss = torch.where(better, exact, best_loss)
        best_levels[better] = levels[better]
        if progress is not None:
            progress(cfg.steps + j + 1, cfg.steps + refine, float(exact.mean()))
    return (base + best_levels) / 255, best_loss


def _in_pixel_range(base: torch.Tensor, levels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``levels`` (whole 8-bit steps from ``base``) cut so ``base + levels`` stays in 0..255,
    and zero outside ``mask``."""
    return ((base + levels).clamp(0, 255) - base) * mask
