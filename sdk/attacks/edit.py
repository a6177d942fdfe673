"""The edit-aware objective: push what an editor's first denoising step sees away from the photo.

An img2img edit at strength ``s`` noises the photo's latent to timestep ``t ≈ 1000 s``
and denoises it under classifier-free guidance. The first step's prediction of the
clean latent, decoded, already shows where the edit is heading; this objective
pushes that prediction for ``x + δ`` away from the clean photo's, under the same
noise. Guidance amplifies whatever δ changes in the gap between the prompted and
the empty prediction, so the prediction is guided as an editor's is, for prompts
and timesteps an editor might use: the attack does not know the edit's own
(docs/research.md, "Guidance amplifies").

It is untargeted: it moves the edit away from the photo, not toward a target. Its
loss is ``-log(1e-4 + distance)`` (:func:`edit_away_loss`): on the clean photo
``-log(1e-4) ≈ 9.21``, lower as the edit moves away, so that no photo dominates a
batch's training and a :class:`~photoimmune.sdk.protection.Protection` records a
share of it that was taken away, as for the targeted attacks. (The log leaves L∞
PGD's sign steps as they were.)

Trained into a one-pass immunizer (``ImmunizerTraining(objective="edit")``) it
costs what the encoder's pass costs; as PGD (:class:`EditAwayAttack`) it costs two
UNet passes and a VAE round trip per step, about a hundred times the encoder
attack's step.

Example:
    >>> prediction = EditPrediction(load_pipeline("tiny-ldm@3"))  # doctest: +SKIP
    >>> attack = EditAwayAttack(prediction, eps=8 / 255, steps=100)  # doctest: +SKIP
    >>> x_adv = attack(x)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Attack
from .encoder import VAEEncoder
from .sizing import to_working, working_size

#: Prompts an editor might use. None is "a photo", the prompt the efficacy checks edit with.
EDIT_PROMPTS: tuple[str, ...] = (
    "a painting of a landscape",
    "a photo of a person",
    "a dog at night",
    "watercolor",
    "a city in the snow",
    "an oil painting",
    "a sunny beach",
    "a portrait in the rain",
    "a pencil sketch",
    "a red car on a road",
    "a forest in autumn",
)
#: Timesteps of img2img strengths 0.3 to 0.7, the range of edits that keep the photo.
EDIT_TIMESTEPS: tuple[int, ...] = (300, 400, 500, 600, 700)


def edit_away_loss(prediction: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per image, ``-log(1e-4 + mean squared distance)`` of two decoded predictions.

    Example:
        >>> round(edit_away_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)).item(), 2)
        9.21
    """
    return -torch.log((prediction - clean).pow(2).flatten(1).mean(1) + 1e-4)


class EditPrediction:
    """The decoded, guided one-step prediction of x0 of a pipeline's img2img edit.

    Args:
        pipe: a diffusers Stable Diffusion pipeline (``vae``, ``unet``, ``scheduler``,
            ``encode_prompt``); its modules are frozen.
        prompts: the edit prompts to choose from (by index in each call).
        guidance: the classifier-free guidance scale; 1 runs the prompted half alone.

    Example:
        >>> predict = EditPrediction(pipe, prompts=("watercolor",))  # doctest: +SKIP
        >>> noise = predict.noise_like(x, torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> predict(x, torch.tensor([500]), noise, torch.tensor([0])).shape  # doctest: +SKIP
        torch.Size([1, 3, 128, 128])
    """

    def __init__(
        self, pipe: Any, prompts: tuple[str, ...] = EDIT_PROMPTS, guidance: float = 7.5
    ) -> None:
        for module in (pipe.vae, pipe.unet, pipe.text_encoder):
            module.requires_grad_(False).eval()
        self.pipe, self.guidance = pipe, guidance
        self.encoder = VAEEncoder(pipe.vae)  # the scaled latent mean, as the attacks see it
        device = pipe.unet.device
        with torch.no_grad():
            pairs = [pipe.encode_prompt(p, device, 1, True, "") for p in prompts]
        self.prompted = torch.cat([cond for cond, _ in pairs])
        self.empty = torch.cat([empty for _, empty in pairs])

    def noise_like(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One draw of latent noise for the batch ``x``."""
        factor = self.pipe.vae_scale_factor
        channels = self.pipe.vae.config.latent_channels
        shape = (x.shape[0], channels, x.shape[-2] // factor, x.shape[-1] // factor)
        return torch.randn(shape, generator=generator).to(x.device)

    def __call__(
        self, x: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, prompts: torch.Tensor
    ) -> torch.Tensor:
        """Images in [0, 1] -> the decoded predictions in [-1, 1], one timestep and
        prompt index per image."""
        unet, scheduler = self.pipe.unet, self.pipe.scheduler
        alpha = scheduler.alphas_cumprod.to(x.device)[timesteps].view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * self.encoder(x) + (1 - alpha).sqrt() * noise
        prompted = self.prompted[prompts.to(self.prompted.device)]
        if self.guidance == 1:
            out = unet(noisy, timesteps, encoder_hidden_states=prompted).sample.float()
        else:  # diffusers' batch order: the empty prompt first
            embeds = torch.cat([self.empty[prompts.to(self.empty.device)], prompted])
            both = unet(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), embeds)
            empty, cond = both.sample.float().chunk(2)
            out = empty + self.guidance * (cond - empty)
        if scheduler.config.prediction_type == "v_prediction":
            x0 = alpha.sqrt() * noisy - (1 - alpha).sqrt() * out
        else:
            x0 = (noisy - (1 - alpha).sqrt() * out) / alpha.sqrt()
        latent = x0 / self.encoder.scaling_factor + self.encoder.shift_factor
        return self.pipe.vae.decode(latent).sample.float()


class EditAwayAttack(Attack):
    """PGD on the edit-aware objective, under one noise draw per batch.

    Each loss call takes the next (timestep, prompt) pair, prompts varying fastest,
    and every batch starts the cycle afresh, so an image's result does not depend on
    what ran before it. The loss sees the image resized to the model's working size
    (:mod:`.sizing`), as the other attacks do.

    Args:
        prediction: the :class:`EditPrediction` to push.
        timesteps: the timesteps to cycle (500 is strength 0.5's).
        resolution: the model's working resolution. Default: None, the VAE's
            ``sample_size``.

    Example:
        >>> attack = EditAwayAttack(EditPrediction(pipe), steps=100)  # doctest: +SKIP
        >>> x_adv = attack(x)  # doctest: +SKIP
    """

    method = "edit"

    def __init__(
        self,
        prediction: EditPrediction,
        timesteps: tuple[int, ...] = EDIT_TIMESTEPS,
        resolution: int | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(**overrides)
        self.prediction = prediction
        self.resolution = resolution or prediction.encoder.resolution
        prompts = range(len(prediction.prompted))
        self.settings = [(t, p) for t in timesteps for p in prompts]

    @property
    def device(self) -> torch.device:
        return self.prediction.pipe.unet.device

    def _predict(self, x: torch.Tensor, k: int) -> torch.Tensor:
        t, p = self.settings[k]
        n = x.shape[0]
        x = to_working(x, self.size)
        return self.prediction(
            x, torch.full((n,), t, device=x.device), self.noise, torch.full((n,), p)
        )

    def prepare(self, x: torch.Tensor, generator: torch.Generator) -> None:
        self.calls, self.x = 0, x
        self.clean: dict[int, torch.Tensor] = {}
        # the batch's working size, once: every loss call of the batch resizes to it
        self.size = working_size(x.shape[-2], x.shape[-1], self.resolution)
        self.noise = self.prediction.noise_like(to_working(x, self.size), generator)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        k = self.calls % len(self.settings)
        self.calls += 1
        # The clean prediction of a setting, on first use: a short run uses a few of
        # the 55, and computed in the caller's precision it is exactly what the clean
        # photo's own loss compares against (loss 9.21 before the attack).
        if k not in self.clean:
            with torch.no_grad():
                self.clean[k] = self._predict(self.x, k)
        return edit_away_loss(self._predict(x, k), self.clean[k])
