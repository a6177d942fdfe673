"""The encoder attack: push the VAE latent of x + δ onto a target latent.

Minimises ``‖E(x + δ) - z_target‖²`` where E is the VAE encoder's latent mean
(in the model's scaled latent space: ``(mean - shift) · scale``, which covers
SD 1.x/2.x, SDXL and the 16-channel SD3/Flux VAEs). The diffusion model then
edits a latent that looks like the target (by default a flat mid-gray image),
so the edit comes out unrealistic. Only the encoder half of the VAE is kept.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from diffusers import AutoencoderKL

from .attention import use_matmul_attention
from .base import Attack
from .pgd import PGDConfig
from .precision import warn_if_emulated
from .sizing import fill_like, to_working, working_size


class VAEEncoder(torch.nn.Module):
    """The encoder half of an ``AutoencoderKL``: pixels in [0, 1] -> scaled latent mean.

    Three speed switches, all off by default because they pay only on some hardware
    or workloads (``dtype=fast_dtype(device)`` picks bf16 only where it is native):
    ``channels_last`` (NHWC convolutions: faster with bf16 on recent CPUs and on
    GPUs), ``dtype`` (e.g. ``torch.bfloat16`` weights, which saves the cast
    autocast makes on every call) and ``compile`` (``torch.compile`` of the
    encoder, which fuses its group norms, activations and residual adds; it
    compiles once per input shape and grad mode, so it pays only for long jobs
    at one working size). Their measured effects: docs/performance.md.

    ``float32_input`` runs the first convolution in float32 even under bf16
    weights or autocast (on by default with reduced-precision ``dtype``):
    bf16 would round ``x + δ`` to steps of about 0.004 in [-1, 1], coarser
    than PGD's late steps, and a bf16 attack then stalls short of where a
    float32 one gets (measured: docs/performance.md). Its cost is that of one
    3-channel convolution.

    ``matmul_attention`` (same default) runs the mid block's attention as
    explicit matrix products on a CPU in bf16, where PyTorch's fused kernel is
    slower (see :mod:`.attention`); float32 and GPUs keep the fused kernel.

    With ``dtype``, ``compile``, ``float32_input`` or ``matmul_attention`` the
    encoder is copied first, so the VAE passed in is left as it was. The latent
    always comes out as float32.

    Example:
        >>> fast = VAEEncoder(vae, dtype=fast_dtype("cpu"), compile=True)  # doctest: +SKIP
        >>> VAEEncoder(vae, float32_input=True, matmul_attention=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        *,
        channels_last: bool = False,
        dtype: torch.dtype | None = None,
        compile: bool = False,
        float32_input: bool | None = None,
        matmul_attention: bool | None = None,
    ) -> None:
        super().__init__()
        reduced = dtype is not None and dtype != torch.float32
        float32_input = reduced if float32_input is None else float32_input
        matmul_attention = reduced if matmul_attention is None else matmul_attention
        copied = compile or float32_input or matmul_attention or (dtype not in (None, vae.dtype))
        self.encoder = copy.deepcopy(vae.encoder) if copied else vae.encoder
        # None when the VAE was built without one
        self.quant_conv = copy.deepcopy(vae.quant_conv) if copied else vae.quant_conv
        # A cooperative release's encoder also sends recognised old protections to its
        # target (:class:`~photoimmune.sdk.models.honouring_vae.Honour`); attacks see that.
        honour = getattr(vae, "honour", None)
        self.honour = copy.deepcopy(honour) if copied and honour is not None else honour
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.resolution = int(vae.config.sample_size)
        self.channels_last = channels_last
        self._precision_checked = False
        self.requires_grad_(False).eval()
        if matmul_attention:
            use_matmul_attention(self.encoder)
        # Taken before the cast: bf16 weights cast back would not be the float32 ones.
        first = copy.deepcopy(self.encoder.conv_in).float() if float32_input else None
        if dtype is not None:
            self.to(dtype)
        if first is not None:
            self.encoder.conv_in = _FloatInput(first, self.weight_dtype)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            # Fixed shapes: a job attacks at one working size; another size
            # compiles anew (about 45 s) rather than sharing a generic graph.
            self.encoder.compile(dynamic=False)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike[str]) -> VAEEncoder:
        """Load only what the attack needs from a bundled name or diffusers folder.

        Example:
            >>> enc = VAEEncoder.from_pretrained("tiny-ldm@1")  # doctest: +SKIP
        """
        from ..models.pipelines import load_vae

        vae = load_vae(model)
        # Both precision switches: a loaded encoder may serve an autocast job (in
        # float32 they change nothing). The decoder goes out of scope with `vae`.
        return cls(vae, float32_input=True, matmul_attention=True)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        if not self._precision_checked:  # once: the first call shows the device
            warn_if_emulated(self.weight_dtype, x01.device)
            self._precision_checked = True
        x = x01 * 2 - 1
        if not isinstance(self.encoder.conv_in, _FloatInput):
            x = x.to(self.weight_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean = h.chunk(2, dim=1)[0].float()
        if self.honour is not None:
            mean = self.honour(x01.float() * 2 - 1, mean)
        return (mean - self.shift_factor) * self.scaling_factor

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the encoder's bulk (its first convolution may stay float32)."""
        return self.encoder.conv_out.weight.dtype


class _FloatInput(torch.nn.Module):
    """The encoder's first convolution in float32, outside any autocast; its output goes
    on in the dtype the rest runs in (autocast's, else the weights' ``dtype``)."""

    def __init__(self, conv: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.conv, self.dtype = conv, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        autocast = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else self.dtype
        with torch.autocast(device, enabled=False):
            return self.conv(x.float()).to(dtype)


def gray_target() -> torch.Tensor:
    """PhotoGuard's default target image: flat mid-gray, ``(1, 3, 1, 1)`` in [0, 1].

    Example:
        >>> gray_target().shape, float(gray_target().max())
        (torch.Size([1, 3, 1, 1]), 0.5)
    """
    return torch.full((1, 3, 1, 1), 0.5)


class EncoderAttack(Attack):
    """PGD on ``‖E(x + δ) - E(target)‖²`` (mean over latent elements).

    Args:
        encoder: a :class:`VAEEncoder` (or an ``AutoencoderKL``, whose encoder is taken).
        target: target *image* in [0, 1], ``(1, 3, h, w)``; tiled to the working size.
            Defaults to mid-gray.
        resolution: the model's working resolution (default: the VAE's ``sample_size``).
        latents: a dict the target latents are kept in by working size, shared by the
            attacks built for one target and encoder (default: this attack's own), so a
            call per photo does not encode the target again.

    Example:
        >>> encoder = VAEEncoder.from_pretrained("tiny-ldm@1")  # doctest: +SKIP
        >>> attack = EncoderAttack(encoder, eps=16 / 255, steps=100)  # doctest: +SKIP
        >>> x_adv = attack(x)  # doctest: +SKIP
    """

    method = "encoder"

    def __init__(
        self,
        encoder: VAEEncoder | AutoencoderKL,
        target: torch.Tensor | None = None,
        *,
        resolution: int | None = None,
        latents: dict[tuple[int, int], torch.Tensor] | None = None,
        config: PGDConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, **overrides)
        if not isinstance(encoder, VAEEncoder):
            # Under autocast: the first convolution sees x + δ unrounded, and the
            # attention runs where the CPU is fastest at it.
            reduced = self.config.autocast is not None
            encoder = VAEEncoder(encoder, float32_input=reduced, matmul_attention=reduced)
        self.encoder = encoder
        self.target = (gray_target() if target is None else target).float()
        if self.target.ndim == 3:
            self.target = self.target[None]
        self.resolution = resolution or self.encoder.resolution
        self._latents = {} if latents is None else latents

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def target_latent(self, size: tuple[int, int]) -> torch.Tensor:
        """The target's latent at a working size (cached by size)."""
        if size not in self._latents:
            self._latents[size] = self.encoder(fill_like(self.target.to(self.device), size))
        return self._latents[size]

    def prepare(self, x: torch.Tensor, generator: torch.Generator) -> None:
        self.target_latent(working_size(x.shape[-2], x.shape[-1], self.resolution))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        size = working_size(x.shape[-2], x.shape[-1], self.resolution)
        z = self.encoder(to_working(x, size))
        return (z.float() - self.target_latent(size)).pow(2).flatten(1).mean(1)
