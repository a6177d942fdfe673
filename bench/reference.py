"""The published PhotoGuard attack loops: the baseline every benchmark compares to.

Written from the paper (Salman et al., ICML 2023) and its public
hyperparameters, deliberately plain, in PhotoGuard's own conventions:
images in [-1, 1], budgets in that scale.

Encoder attack: sign-gradient L∞ PGD, random start uniform in [-ε, ε], loss
the *unsquared* ``‖E(x') - z_target‖``, step decaying linearly from ``step``
to ``step / 100``. Published settings: ε 0.06, step 0.02, 1000 iterations
against a zero latent; the demo uses ε 0.12, step 0.01, 200 iterations against
the latent of a gray image.

Diffusion attack: L2 PGD on the whole image, radius 16, step 1, 200
iterations, the gradient averaged over ``grad_reps`` = 10 fresh noise draws,
each through a 4-step inpainting pipeline (guidance 7.5, η = 1), loss
``‖f(x') - x_target‖`` against a zero (mid-gray) image.

``autocast`` reproduces the published ``torch.autocast('cuda')`` (fp16 on CUDA,
which is a no-op for CPU tensors) or gives the loop bf16 on the CPU.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from diffusers import DDIMScheduler


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def encoder_attack(
    vae,
    x: torch.Tensor,
    *,
    eps: float = 0.06,
    step: float = 0.02,
    iters: int = 1000,
    target_latent: torch.Tensor | None = None,
    autocast: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    losses: list[float] | None = None,
) -> torch.Tensor:
    """PhotoGuard's encoder PGD. ``x`` in [-1, 1]; returns x_adv in [-1, 1] (not quantised)."""
    gen = generator or torch.Generator().manual_seed(0)
    x = x.detach()
    x_adv = x + (torch.rand(x.shape, generator=gen) * 2 * eps - eps).to(x)
    for i in range(iters):
        step_i = step - (step - step / 100) / iters * i
        x_adv.requires_grad_(True)
        with _autocast(x.device, autocast):
            latent = vae.encode(x_adv).latent_dist.mean
            loss = (latent if target_latent is None else latent - target_latent).float().norm()
        (grad,) = torch.autograd.grad(loss, [x_adv])
        if losses is not None:
            losses.append(float(loss))
        x_adv = x_adv.detach() - grad.sign() * step_i
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(-1, 1)
    return x_adv.detach()


def inpaint_forward(
    pipe,
    x: torch.Tensor,
    mask: torch.Tensor,
    embeds: torch.Tensor,
    gen,
    *,
    steps=4,
    guidance=7.5,
    eta=1.0,
):
    """One truncated inpainting edit with fresh noise, differentiable in ``x`` ([-1, 1])."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    sf = pipe.vae.config.scaling_factor
    masked = x * (mask < 0.5)
    latent_shape = (
        x.shape[0],
        4,
        x.shape[2] // pipe.vae_scale_factor,
        x.shape[3] // pipe.vae_scale_factor,
    )
    small_mask = F.interpolate(mask, size=latent_shape[-2:])
    masked_latents = pipe.vae.encode(masked).latent_dist.mean * sf
    known = pipe.vae.encode(x).latent_dist.mean * sf
    noise = torch.randn(latent_shape, generator=gen).to(x)
    latents = noise * scheduler.init_noise_sigma
    nine = pipe.unet.config.in_channels == 9
    for i, t in enumerate(scheduler.timesteps):
        inp = torch.cat([latents] * 2)
        if nine:
            inp = torch.cat(
                [inp, torch.cat([small_mask] * 2), torch.cat([masked_latents] * 2)], dim=1
            )
        eps_u, eps_c = pipe.unet(inp, t, encoder_hidden_states=embeds).sample.chunk(2)
        latents = scheduler.step(
            eps_u + guidance * (eps_c - eps_u), t, latents, eta=eta, generator=gen
        ).prev_sample
        if not nine:  # diffusers' legacy inpainting for 4-channel UNets
            nxt = scheduler.timesteps[i + 1 : i + 2]
            kept = scheduler.add_noise(known, noise, nxt) if len(nxt) else known
            latents = (1 - small_mask) * kept + small_mask * latents
    return pipe.vae.decode(latents / sf).sample


def diffusion_attack(
    pipe,
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    prompt: str = "",
    eps: float = 16.0,
    step: float = 1.0,
    iters: int = 200,
    grad_reps: int = 10,
    target: torch.Tensor | None = None,
    autocast: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    losses: list[float] | None = None,
) -> torch.Tensor:
    """PhotoGuard's diffusion (L2) PGD through a 4-step inpainting pipeline."""
    gen = generator or torch.Generator().manual_seed(0)
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(prompt, x.device, 1, True, "")
    embeds = torch.cat([uncond, cond]).repeat_interleave(x.shape[0], dim=0)
    target = torch.zeros_like(x) if target is None else target
    x = x.detach()
    x_adv = x.clone()
    for i in range(iters):
        grads = []
        for _ in range(grad_reps):
            x_adv.requires_grad_(True)
            with _autocast(x.device, autocast):
                out = inpaint_forward(pipe, x_adv, mask, embeds, gen)
                loss = (out.float() - target).norm(p=2)
            (grad,) = torch.autograd.grad(loss, [x_adv])
            grads.append(grad)
            if losses is not None:
                losses.append(float(loss))
        grad = torch.stack(grads).mean(0)
        norm = grad.reshape(grad.shape[0], -1).norm(dim=1).view(-1, 1, 1, 1)
        step_i = step - (step - step / 100) / iters * i
        x_adv = x_adv.detach() - grad / (norm + 1e-10) * step_i
        delta = torch.renorm(x_adv - x, p=2, dim=0, maxnorm=eps)
        x_adv = (x + delta).clamp(-1, 1)
    return x_adv.detach()
