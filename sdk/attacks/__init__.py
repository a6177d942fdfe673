"""PGD attacks that immunize images (PhotoGuard's encoder and diffusion attacks).

Example:
    >>> from photoimmune.sdk.attacks import EncoderAttack, VAEEncoder
    >>> encoder = VAEEncoder.from_pretrained("tiny-ldm@1")  # doctest: +SKIP
    >>> attack = EncoderAttack(encoder, eps=8 / 255)  # doctest: +SKIP
    >>> x_adv = attack(x)  # doctest: +SKIP
"""

from .base import Attack
from .budget import budget_levels, format_budget, parse_budget
from .diffusion import DiffusionAttack
from .encoder import EncoderAttack, VAEEncoder, gray_target
from .ensemble import Ensemble
from .pgd import PGDConfig, PGDResult, loss_and_grad, run_pgd
from .precision import PrecisionWarning, bf16_is_native, fast_dtype
from .sizing import working_size
from .transforms import JpegApprox, RandomBlur, RandomChoice, RandomResize, default_eot

__all__ = [
    "Attack",
    "DiffusionAttack",
    "EncoderAttack",
    "Ensemble",
    "JpegApprox",
    "PGDConfig",
    "PGDResult",
    "PrecisionWarning",
    "RandomBlur",
    "RandomChoice",
    "RandomResize",
    "VAEEncoder",
    "bf16_is_native",
    "budget_levels",
    "default_eot",
    "fast_dtype",
    "format_budget",
    "gray_target",
    "loss_and_grad",
    "parse_budget",
    "run_pgd",
    "working_size",
]
