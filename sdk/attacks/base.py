"""The attack interface: a small object with a budget and one job.

Like torchattacks, an attack is built once with its model and budget and then
called on images: ``x_adv = attack(x)``. Subclasses only say what the loss is;
:func:`~photoimmune.sdk.attacks.pgd.run_pgd` does the optimisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch

from .pgd import PGDConfig, PGDResult, ProgressFn, evaluate_loss, run_pgd


class Attack:
    """Base class: subclasses implement :meth:`loss` (one value per image, lower = better attack).

    Keyword arguments are :class:`PGDConfig` fields, e.g. ``eps=16/255, steps=200``.
    """

    #: Recorded in each Protection ("encoder", "diffusion", ...).
    method: str = "attack"

    def __init__(self, config: PGDConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or PGDConfig(), **overrides)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image loss of ``x`` (``(N, 3, H, W)`` in [0, 1]); the attack minimises it."""
        raise NotImplementedError

    def loss_terms(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The loss as a sum of terms, each back-propagated (and freed) on its own.

        One term by default; attacks whose loss averages several costly draws
        yield one term per draw so memory holds one draw's graph at a time.
        """
        yield self.loss(x)

    def prepare(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Per-batch set-up before the first loss call (targets at this size, fixed noise...)."""

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image loss of a finished ``x``, as :meth:`perturb` scores its result
        (no graph; the precision of the attack's last steps). Call after :meth:`perturb`
        on the same batch, whose :meth:`prepare` it relies on."""
        cfg = self.config.exact if self.config.exact_steps else self.config
        return evaluate_loss(self.loss, x.to(self.device, torch.float32), cfg)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def perturb(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        seed: int = 0,
        progress: ProgressFn | None = None,
        init: torch.Tensor | None = None,
    ) -> PGDResult:
        """Run the attack on a batch and return the full result (losses, history).

        ``init`` is the starting δ instead of the random start (see :func:`run_pgd`).

        Example:
            >>> result = attack.perturb(x, seed=0)  # doctest: +SKIP
            >>> result.loss_after < result.loss_before  # doctest: +SKIP
            tensor([True])
        """
        gen = torch.Generator().manual_seed(seed)
        x = x.to(self.device, torch.float32)
        self.prepare(x, gen)
        return run_pgd(
            self.loss,
            x,
            self.config,
            mask=mask,
            generator=gen,
            progress=progress,
            terms=self.loss_terms,
            init=init,
        )

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Return the immunized batch (8-bit values unless ``quantize=False``)."""
        return self.perturb(x, **kwargs).x_adv
