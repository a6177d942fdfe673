"""Tiny, randomly initialised SDXL and Flux pipelines built from config, offline.

Test doubles for the real SDXL and Flux checkpoints (which cannot be downloaded
here): the same pipeline classes and component classes with a few thousand
random weights each, so every code path of the plugin runs in well under a
second per call. Tokenizers are written locally: the bundled tiny model's CLIP
tokenizer, and a word-level T5 tokenizer made with ``tokenizers``.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxKontextPipeline,
    FluxTransformer2DModel,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from photoimmune.sdk.models import resolve_model

SIZE = 64  # pixels; both VAEs downsample 2x


def _clip_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(resolve_model("tiny-ldm@1") / "tokenizer")


def _clip(tokenizer: CLIPTokenizer, projection: bool):
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        projection_dim=32,
        max_position_embeddings=77,
        hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(**config) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
        **config,
    )


def tiny_sdxl(kind: str = "img2img", seed: int = 0):
    """``StableDiffusionXLImg2ImgPipeline`` (or ``"inpaint"``) with random tiny weights."""
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + text_encoder_2's 32
        cross_attention_dim=64,  # both text encoders' hidden states, concatenated
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    cls = (
        StableDiffusionXLInpaintPipeline if kind == "inpaint" else StableDiffusionXLImg2ImgPipeline
    )
    pipe = cls(
        vae=_vae(),
        text_encoder=_clip(tokenizer, projection=False),
        text_encoder_2=_clip(tokenizer, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _t5_tokenizer() -> T5TokenizerFast:
    words = ["a", "photo", "of", "the", "cat", "dog", "in", "snow", "painting"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
    )


def tiny_flux(kind: str = "img2img", seed: int = 0):
    """``FluxImg2ImgPipeline`` (``"kontext"``: ``FluxKontextPipeline``) with random tiny weights."""
    torch.manual_seed(seed)
    tokenizer, t5_tokenizer = _clip_tokenizer(), _t5_tokenizer()
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels, packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    cls = FluxKontextPipeline if kind == "kontext" else FluxImg2ImgPipeline
    pipe = cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        ),
        text_encoder=_clip(tokenizer, projection=False),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
