"""Ensembles: one δ, one budget, several targets (e.g. every version of a model at once).

Each member's loss is divided by its value on the clean image, so members whose
losses live on different scales (two VAEs, an encoder and a diffusion loss)
count by their ``weights`` alone. A publisher job immunizes against all
subscribed model versions in one pass this way, so the perturbation never
exceeds ε however many versions it covers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..errors import InputError
from .base import Attack
from .pgd import PGDConfig


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
        weights = [1.0] * len(self.members) if weights is None else list(weights)
        if len(weights) != len(self.members) or min(weights) < 0 or sum(weights) <= 0:
            raise InputError(
                f"weights={weights}: give one non-negative weight per member "
                f"({len(self.members)}), not all zero, or leave weights out to weigh them equally"
            )
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
