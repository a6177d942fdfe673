"""The diffusion attack: push the output of a truncated editing pipeline to a target image.

Minimises ``‖f(x + δ) - x_target‖²`` where ``f`` is the whole edit, run for a few
denoising steps (default 4) and back-propagated end to end: VAE encoder, UNet
with classifier-free guidance at every step, scheduler, VAE decoder. This is
PhotoGuard's stronger, costlier attack.

Two edit shapes:

* **img2img** (no ``edit_mask``): encode, add noise for ``strength``, denoise.
* **inpainting** (``edit_mask`` given, 1 = the region the editor repaints):
  start from pure noise like PhotoGuard's inpainting attack. A 9-channel
  inpainting UNet gets the mask and masked-image latents as extra channels; a
  4-channel UNet (the bundled tiny model) gets diffusers' legacy treatment, the
  kept region blended back in latent space after every step.

Noise is drawn once per batch (``fixed_noise=True``) or afresh per loss call,
averaged over ``grad_reps`` draws either way; each draw is back-propagated on
its own, so memory holds one draw's graph whatever ``grad_reps`` is.

Memory and speed switches: ``gradient_checkpointing`` recomputes activations in
the backward pass instead of keeping them (the big saving at 512 px):
``"unet"`` or ``"vae"`` block by block (diffusers' own), ``True`` both, and
``"steps"`` each denoising step's whole UNet call as one unit (only the step's
inputs are kept; one UNet's activations live at a time) with the VAE block by
block (what each costs and saves, measured: docs/performance.md);
``channels_last`` runs the convolutions in NHWC
(faster with bf16 on some CPUs and GPUs). Work that cannot change the result
is skipped: a 9-channel inpainting UNet never needs the latent of the
whole image, and with an empty prompt (PhotoGuard's setting and ours by default)
guidance's unconditional half equals the conditional one, so the UNet runs
one batch instead of two (``skip_redundant_guidance``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from diffusers import DDIMScheduler
from torch.utils.checkpoint import checkpoint

from .base import Attack
from .encoder import VAEEncoder, gray_target
from .pgd import PGDConfig
from .sizing import fill_like, to_working, working_size


class DiffusionAttack(Attack):
    """PGD through a truncated img2img or inpainting pipeline.

    Args:
        pipe: a diffusers Stable Diffusion img2img or inpaint pipeline (any with
            ``vae``, ``unet``, ``scheduler`` and ``encode_prompt``).
        target: target image in [0, 1], ``(1, 3, h, w)``; default mid-gray.
        prompt: the edit prompt the attack anticipates.
        denoise_steps: denoising steps of the truncated pipeline.
        strength: img2img strength (ignored for inpainting, which starts from noise).
        edit_mask: ``(1, 1, H, W)`` at the image's size, 1 = repainted region.
        skip_redundant_guidance: run the UNet on the conditional batch alone when
            guidance cannot change its prediction (the prompt's embedding equals
            the unconditional one, as with the default empty prompt, or guidance
            1): the same loss for half the UNet work.

    Example:
        >>> attack = DiffusionAttack(load_pipeline("tiny-ldm@1"), steps=50)  # doctest: +SKIP
        >>> x_adv = attack(x)  # doctest: +SKIP
    """

    method = "diffusion"

    def __init__(
        self,
        pipe: Any,
        target: torch.Tensor | None = None,
        *,
        prompt: str = "",
        denoise_steps: int = 4,
        guidance_scale: float = 7.5,
        strength: float = 0.6,
        eta: float = 1.0,
        edit_mask: torch.Tensor | None = None,
        grad_reps: int = 1,
        fixed_noise: bool = True,
        gradient_checkpointing: bool | Literal["unet", "vae", "steps"] = False,
        channels_last: bool = False,
        skip_redundant_guidance: bool = True,
        resolution: int | None = None,
        config: PGDConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, **overrides)
        self.pipe = pipe
        for module in (pipe.vae, pipe.unet, pipe.text_encoder):
            module.requires_grad_(False).eval()
        if gradient_checkpointing in (True, "unet"):
            pipe.unet.enable_gradient_checkpointing()
        if gradient_checkpointing in (True, "vae", "steps"):
            pipe.vae.enable_gradient_checkpointing()
        if channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        self.checkpoint_steps = gradient_checkpointing == "steps"
        self.encoder = VAEEncoder(pipe.vae, channels_last=channels_last)
        self.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.target = (gray_target() if target is None else target).float()
        self.prompt = prompt
        self.denoise_steps = denoise_steps
        self.guidance_scale = guidance_scale
        self.strength = strength
        self.eta = eta
        self.edit_mask = edit_mask
        self.grad_reps = grad_reps
        self.fixed_noise = fixed_noise
        self.resolution = resolution or int(pipe.vae.config.sample_size)
        self._gen: torch.Generator | None = None
        self._noise: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
        self._embeds: torch.Tensor | None = None
        self.skip_redundant_guidance = skip_redundant_guidance
        self.guidance_batch = True  # set by prepare(): whether the UNet runs both halves

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @property
    def _inpainting(self) -> bool:
        return self.edit_mask is not None

    def prepare(self, x: torch.Tensor, generator: torch.Generator) -> None:
        self._gen = generator
        with torch.no_grad():
            cond, uncond = self.pipe.encode_prompt(self.prompt, self.device, 1, True, "")
        # With the unconditional prompt equal to the edit prompt ("" is the default:
        # the attack anticipates no particular edit) or guidance 1, guidance returns
        # the conditional prediction itself, so one UNet batch does the work of two.
        redundant = self.guidance_scale == 1 or torch.equal(cond, uncond)
        self.guidance_batch = not (redundant and self.skip_redundant_guidance)
        # CFG batch order: unconditional first
        self._embeds = torch.cat([uncond, cond]) if self.guidance_batch else cond
        self.scheduler.set_timesteps(self.denoise_steps)
        size = working_size(x.shape[-2], x.shape[-1], self.resolution)
        self._noise = [self._draw_noise(x.shape[0], size) for _ in range(self.grad_reps)]

    def _timesteps(self) -> torch.Tensor:
        timesteps = self.scheduler.timesteps
        if self._inpainting:
            return timesteps
        keep = max(1, min(len(timesteps), round(self.denoise_steps * self.strength)))
        return timesteps[len(timesteps) - keep :]

    def _draw_noise(self, n: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        factor = self.pipe.vae_scale_factor
        shape = (n, self.pipe.vae.config.latent_channels, size[0] // factor, size[1] // factor)
        start = torch.randn(shape, generator=self._gen).to(self.device)
        per_step = [
            torch.randn(shape, generator=self._gen).to(self.device) for _ in self._timesteps()
        ]
        return start, per_step

    def edit(self, x: torch.Tensor, noise: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
        """The truncated edit ``f``: images in [0, 1] -> edited images in [0, 1]."""
        sf = self.encoder.scaling_factor
        start_noise, step_noise = noise
        nine_channel = self.pipe.unet.config.in_channels == 9
        # Only img2img and legacy 4-channel inpainting start from the image's own latent.
        latents0 = None if (self._inpainting and nine_channel) else self.encoder(x)
        timesteps = self._timesteps()
        if self.edit_mask is not None:
            mask = self.edit_mask.to(x)
            mask = to_working(mask, (x.shape[-2], x.shape[-1])).round()
            small_mask = F.interpolate(mask, size=start_noise.shape[-2:], mode="nearest")
            masked_latents = self.encoder(x * (1 - mask) + 0.5 * mask)
            latents = start_noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(latents0, start_noise, timesteps[:1])
        copies = 2 if self.guidance_batch else 1
        assert self._embeds is not None  # set by prepare()
        for i, t in enumerate(timesteps):
            model_in = torch.cat([latents] * copies)
            if self._inpainting and nine_channel:
                extra = torch.cat([small_mask, masked_latents], dim=1)
                model_in = torch.cat([model_in, torch.cat([extra] * copies)], dim=1)
            # [uncond]*N + [cond]*N, or [cond]*N
            embeds = self._embeds.repeat_interleave(x.shape[0], dim=0)
            if self.checkpoint_steps and torch.is_grad_enabled():
                eps = checkpoint(self._guided_eps, model_in, t, embeds, use_reentrant=False)
            else:
                eps = self._guided_eps(model_in, t, embeds)
            latents = self.scheduler.step(
                eps, t, latents, eta=self.eta, variance_noise=step_noise[i]
            ).prev_sample
            if self._inpainting and not nine_channel:
                if i + 1 < len(timesteps):
                    known = self.scheduler.add_noise(
                        latents0, start_noise, timesteps[i + 1 : i + 2]
                    )
                else:
                    known = latents0
                latents = (1 - small_mask) * known + small_mask * latents
        latents = (latents / sf + self.encoder.shift_factor).to(self.encoder.weight_dtype)
        image = self.pipe.vae.decode(latents).sample
        return (image.float() + 1) / 2

    def _guided_eps(self, model_in: torch.Tensor, t, embeds: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction with classifier-free guidance."""
        dtype = self.pipe.unet.dtype
        out = self.pipe.unet(model_in.to(dtype), t, encoder_hidden_states=embeds.to(dtype))
        if not self.guidance_batch:
            return out.sample.float()
        eps_uncond, eps_cond = out.sample.float().chunk(2)
        return eps_uncond + self.guidance_scale * (eps_cond - eps_uncond)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self.loss_terms(x), torch.zeros(()))

    def loss_terms(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """One term per noise draw: PGD back-propagates each before building the next."""
        size = working_size(x.shape[-2], x.shape[-1], self.resolution)
        x = to_working(x, size)
        target = fill_like(self.target.to(x), size)
        draws = (
            self._noise
            if self.fixed_noise
            else [self._draw_noise(x.shape[0], size) for _ in range(self.grad_reps)]
        )
        for noise in draws:
            yield (self.edit(x, noise) - target).pow(2).flatten(1).mean(1) / len(draws)
