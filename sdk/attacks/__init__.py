"""PGD attacks that immunize images (PhotoGuard's encoder and diffusion attacks, and the
edit-aware objective).

Example:
    >>> from photoimmune.sdk.attacks import EncoderAttack, VAEEncoder
    >>> encoder = VAEEncoder.from_pretrained("tiny-ldm@1")  # doctest: +SKIP
    >>> attack = EncoderAttack(encoder, eps=8 / 255)  # doctest: +SKIP
    >>> x_adv = attack(x)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
from .budget import budget_levels, format_budget, parse_budget

if TYPE_CHECKING:
    from .base import Attack
    from .diffusion import DiffusionAttack
    from .edit import (
        EDIT_PROMPTS,
        EDIT_TIMESTEPS,
        EditAwayAttack,
        EditPrediction,
        edit_away_loss,
    )
    from .encoder import EncoderAttack, VAEEncoder, gray_target
    from .ensemble import Ensemble
    from .pgd import PGDConfig, PGDResult, loss_and_grad, run_pgd
    from .precision import PrecisionWarning, autocast_to, bf16_is_native, fast_dtype
    from .sizing import working_size
    from .transforms import (
        JpegApprox,
        NoisyUpscale,
        RandomBlur,
        RandomChoice,
        RandomNoise,
        RandomResize,
        default_eot,
    )

# Imported on first use: they pull in torch. Budgets stay torch-free, so the CLI can
# check --eps before it pays seconds for torch.
_LAZY = {
    "Attack": "base",
    "DiffusionAttack": "diffusion",
    "EDIT_PROMPTS": "edit",
    "EDIT_TIMESTEPS": "edit",
    "EditAwayAttack": "edit",
    "EditPrediction": "edit",
    "edit_away_loss": "edit",
    "EncoderAttack": "encoder",
    "VAEEncoder": "encoder",
    "gray_target": "encoder",
    "Ensemble": "ensemble",
    "PGDConfig": "pgd",
    "PGDResult": "pgd",
    "loss_and_grad": "pgd",
    "run_pgd": "pgd",
    "PrecisionWarning": "precision",
    "autocast_to": "precision",
    "bf16_is_native": "precision",
    "fast_dtype": "precision",
    "working_size": "sizing",
    "JpegApprox": "transforms",
    "NoisyUpscale": "transforms",
    "RandomNoise": "transforms",
    "RandomBlur": "transforms",
    "RandomChoice": "transforms",
    "RandomResize": "transforms",
    "default_eot": "transforms",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "EDIT_PROMPTS",
    "EDIT_TIMESTEPS",
    "Attack",
    "DiffusionAttack",
    "EditAwayAttack",
    "EditPrediction",
    "EncoderAttack",
    "Ensemble",
    "JpegApprox",
    "NoisyUpscale",
    "PGDConfig",
    "PGDResult",
    "PrecisionWarning",
    "RandomBlur",
    "RandomChoice",
    "RandomNoise",
    "RandomResize",
    "VAEEncoder",
    "autocast_to",
    "bf16_is_native",
    "budget_levels",
    "default_eot",
    "edit_away_loss",
    "fast_dtype",
    "format_budget",
    "gray_target",
    "loss_and_grad",
    "parse_budget",
    "run_pgd",
    "working_size",
]
