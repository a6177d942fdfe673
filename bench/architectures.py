"""Stable Diffusion 1.5 architectures built from their configs, with random weights.

Cost benchmarks need SD 1.5's shapes, not its weights: a forward and backward
pass costs the same time and memory whatever the numbers are, and nothing has
to be downloaded. The configs below are SD 1.5's published ones (the VAE of
``v1-5``, the 9-channel UNet of its inpainting variant, CLIP ViT-L/14's text
tower). Weights are seeded, so two runs build the same model.

Attack *quality* on random weights means little; quality is measured on the
bundled trained models.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from photoimmune.sdk.models import resolve_model

SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

SD15_INPAINT_UNET = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def sd15_vae(seed: int = 0) -> AutoencoderKL:
    """SD 1.5's VAE (83.7M parameters), randomly initialised."""
    torch.manual_seed(seed)
    return AutoencoderKL(**SD15_VAE).eval().requires_grad_(False)


def sd15_inpaint_pipeline(seed: int = 0) -> StableDiffusionInpaintPipeline:
    """SD 1.5 inpainting (VAE, 9-channel UNet of 860M parameters, CLIP ViT-L text tower).

    The tokenizer is the bundled model's byte-level one (no download); the text
    tower is sized for its vocabulary, which changes nothing downstream.
    """
    tokenizer = CLIPTokenizer.from_pretrained(resolve_model("tiny-ldm@1") / "tokenizer")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            projection_dim=768,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(**SD15_INPAINT_UNET)
    pipe = StableDiffusionInpaintPipeline(
        vae=sd15_vae(seed),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (pipe.vae, pipe.unet, pipe.text_encoder):
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
