"""A cooperative release's VAE: its base's autoencoder plus a gate for honoured protections.

A release that honours earlier targets (:mod:`.honour`) must send photos protected
against them to its own target latent, and leave every clean photo where its base
put it. Here the base's encoder stays bit for bit, and a gate reads the marks the
honoured targets' protections carry (:mod:`photoimmune.sdk.mark`): for the picture
as a whole it decides how far to move the latent mean toward the target::

    mean_new = mean + gate(x) * (target - mean),   gate = clamp(k * (score(x) - t) + 1/2, 0, 1)

where ``score`` is the strongest of the honoured marks' z-scores. A clean photo
scores near 0, below ``t - 1/(2k)``, where the gate is exactly 0: it keeps its
latent bit for bit (and with it its reconstruction and its edits); a protected
one, above ``t + 1/(2k)``, goes to the target.

The gate's settings are weights (buffers saved with the VAE), so the release's
fingerprint tells it from its base. diffusers loads it like any ``AutoencoderKL``
once this module is imported (:func:`.pipelines.load_pipeline` imports it).

Example:
    >>> from photoimmune.sdk.models import load_pipeline
    >>> pipe = load_pipeline("tiny-ldm@4")  # doctest: +SKIP
    >>> type(pipe.vae).__name__  # doctest: +SKIP
    'HonouringAutoencoderKL'
"""

from __future__ import annotations

import inspect

import torch
from diffusers import AutoencoderKL
from diffusers import ModelMixin as ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..descriptor import MarkSpec
from ..mark import mark_score

# diffusers finds how to load a component from outside its own libraries by looking
# up its base classes by name in the component's module, hence the re-export above.


class Honour(nn.Module):
    """The gate: moves the latent mean of pictures carrying an honoured mark to the target's.

    Args:
        marks: how many marks it reads (their seeds and cells are buffers).
        latent_channels: channels of the latent.
    """

    # Buffers: saved with the VAE's weights, so they are part of its fingerprint.
    latent: torch.Tensor
    seeds: torch.Tensor
    cells: torch.Tensor
    threshold: torch.Tensor
    sharpness: torch.Tensor

    def __init__(self, marks: int, latent_channels: int) -> None:
        super().__init__()
        self.register_buffer("latent", torch.zeros(1, latent_channels, 1, 1))
        self.register_buffer("seeds", torch.zeros(marks, dtype=torch.int64))
        self.register_buffer("cells", torch.ones(marks, dtype=torch.int64))
        self.register_buffer("threshold", torch.tensor(6.0))
        self.register_buffer("sharpness", torch.tensor(0.5))

    def set(
        self, marks: list[MarkSpec], latent: torch.Tensor, threshold: float, sharpness: float
    ) -> None:
        """Fill the gate: the marks it honours, the target latent mean (per channel),
        the score above which a picture counts as protected, and how fast it opens."""
        self.seeds.copy_(torch.tensor([m.seed for m in marks]))
        self.cells.copy_(torch.tensor([m.cell for m in marks]))
        self.latent.copy_(latent.reshape(self.latent.shape))
        self.threshold.fill_(threshold)
        self.sharpness.fill_(sharpness)

    @property
    def marks(self) -> list[MarkSpec]:
        return [
            MarkSpec(seed=int(s), cell=int(c))
            for s, c in zip(self.seeds.tolist(), self.cells.tolist(), strict=True)
        ]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Per picture of ``x`` (``[-1, 1]``): the strongest honoured mark's z-score."""
        x01 = (x.float() + 1) / 2
        return torch.stack([mark_score(x01, mark) for mark in self.marks]).amax(dim=0)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per picture of ``x`` (``[-1, 1]``): 0 clean, 1 protected."""
        # A ramp, not a sigmoid: exactly 0 below it, so clean photos edit as on the base.
        ramp = self.sharpness.float() * (self.score(x) - self.threshold.float()) + 0.5
        return ramp.clamp(0, 1)

    def forward(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        gate = self.gate(x).to(mean.dtype)[:, None, None, None]
        return mean + gate * (self.latent.to(mean.dtype) - mean)


class HonouringAutoencoderKL(AutoencoderKL):
    """``AutoencoderKL`` whose encoder sends pictures carrying honoured marks to the target.

    Args:
        honour_marks: how many marks the gate reads.
        **kwargs: ``AutoencoderKL``'s own arguments.
    """

    @register_to_config
    def __init__(self, honour_marks: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.honour = Honour(honour_marks, self.config.latent_channels)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        mean, logvar = super()._encode(x).chunk(2, dim=1)
        return torch.cat([self.honour(x, mean), logvar], dim=1)


# diffusers reads a model's config keys from its ``__init__`` signature; this one
# takes AutoencoderKL's as ``**kwargs`` (the name diffusers leaves out of the
# config), so its signature names both sets.
HonouringAutoencoderKL.__init__.__signature__ = inspect.Signature(
    [
        *list(inspect.signature(HonouringAutoencoderKL.__init__).parameters.values())[:-1],
        *list(inspect.signature(AutoencoderKL.__init__).parameters.values())[1:],
    ]
)


__all__ = ["Honour", "HonouringAutoencoderKL"]
