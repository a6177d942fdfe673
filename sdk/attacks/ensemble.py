"""Ensembles: one δ, one budget, several targets (e.g. every version of a model at once).

Each member's loss is divided by its value on the clean image, so members whose
losses live on different scales (two VAEs, an encoder and a diffusion loss)
count by their ``weights`` alone. A publisher job immunizes against all
subscribed model versions in one pass this way, so the perturbation never
exceeds ε however many versions it covers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..errors import InputError
from .base import Attack
from .pgd import PGDConfig


def check_weights(weights: object, count: int) -> list[float]:
    """``weights`` for ``count`` members (equal when None), or a refusal naming the fix.

    Example:
        >>> check_weights(None, 2)
        [1.0, 1.0]
        >>> check_weights([1, -1], 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: weights=[1, -1]: give one non-negative weight ...
    """
    if weights is None:
        return [1.0] * count
    given = list(weights) if isinstance(weights, list | tuple) else []
    finite = all(
        isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w) for w in given
    )
    if not finite or len(given) != count or min(given) < 0 or sum(given) <= 0:
        raise InputError(
            f"weights={weights!r}: give one non-negative weight per member ({count}), each a "
            "finite number, not all zero, or leave weights out to weigh them equally"
        )
    return [float(w) for w in given]


class Ensemble(Attack):
    """Minimise ``Σ w_k · loss_k(x + δ) / loss_k(x)`` over members ``k``.

    Example:
        >>> members = [EncoderAttack(enc_v1), EncoderAttack(enc_v2)]  # doctest: +SKIP
        >>> both = Ensemble(members, eps=8 / 255)  # doctest: +SKIP
        >>> x_adv = both(x)  # doctest: +SKIP
    """

    method = "ensemble"

    def __init__(
        self,
        members: Sequence[Attack],
        weights: Sequence[float] | None = None,
        *,
        config: PGDConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, **overrides)
        if not members:
            raise InputError(
                "an ensemble needs at least one member attack: pass one attack per target "
                "to cover, e.g. Ensemble([EncoderAttack(enc_v1), EncoderAttack(enc_v2)])"
            )
        self.members = list(members)
        weights = check_weights(weights, len(self.members))
        total = sum(weights)
        self.weights = [w / total for w in weights]
        self._clean: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def prepare(self, x: torch.Tensor, generator: torch.Generator) -> None:
        for member in self.members:
            member.prepare(x, generator)
        with torch.no_grad():
            self._clean = [m.loss(x).float().clamp_min(1e-12) for m in self.members]

    def member_losses(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's own (unnormalised) loss of ``x``, one value per image."""
        with torch.no_grad():
            return [m.loss(x.to(self.device)).float() for m in self.members]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self.loss_terms(x), torch.zeros(()))  # a tensor start: 0 would type it int

    def loss_terms(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Every member's terms, weighted and normalised: one model's graph in memory at a time."""
        for w, m, c in zip(self.weights, self.members, self._clean, strict=True):
            for term in m.loss_terms(x):
                yield w * term.float() / c
