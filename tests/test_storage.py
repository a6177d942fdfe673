"""How releases are stored: VAEs in parts, shared files linked to the base's."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from photoimmune.sdk.models import resolve_model
from photoimmune.sdk.models.storage import link_published_target, link_shared, save_vae


def _small_vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4)


def test_a_vae_saved_in_parts_loads_back_as_it_was_in_fp16(tmp_path):
    vae = _small_vae(0)
    save_vae(vae, tmp_path / "vae")
    shards = sorted(p.name for p in (tmp_path / "vae").glob("*.safetensors"))
    assert shards == ["decoder.safetensors", "decoder_head.safetensors", "encoder.safetensors"]
    loaded = AutoencoderKL.from_pretrained(tmp_path / "vae")
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.half().float()), key


def test_a_release_links_what_it_shares_with_its_base_and_keeps_what_it_changed(tmp_path):
    base, release = _small_vae(0), _small_vae(0)
    with torch.no_grad():
        release.decoder.conv_out.bias += 1  # a new decoder head, the rest the same
    save_vae(base, tmp_path / "base" / "vae")
    save_vae(release, tmp_path / "new" / "vae")
    base_decoder = (tmp_path / "base" / "vae" / "decoder.safetensors").read_bytes()

    link_shared(tmp_path / "new", tmp_path / "base")

    folder = tmp_path / "new" / "vae"
    assert (folder / "encoder.safetensors").is_symlink()
    assert (folder / "decoder.safetensors").is_symlink()
    assert not (folder / "decoder_head.safetensors").is_symlink()
    loaded = AutoencoderKL.from_pretrained(folder)
    assert torch.equal(loaded.decoder.conv_out.bias, release.decoder.conv_out.bias.half().float())
    # saving again over the linked shard replaces the link; the base's file is untouched
    save_vae(_small_vae(1), folder)
    assert not (folder / "decoder.safetensors").is_symlink()
    assert (tmp_path / "base" / "vae" / "decoder.safetensors").read_bytes() == base_decoder


def test_a_release_keeping_its_bases_encoder_and_unet_links_the_bases_published_target(tmp_path):
    base = resolve_model("tiny-ldm@3")
    link_published_target(base, tmp_path)
    for name in ("mark.json", "budgets.json", "immunizer/spec.json"):
        assert (tmp_path / name).is_symlink()
        assert (tmp_path / name).read_bytes() == (base / name).read_bytes()


def test_bundled_releases_store_each_weight_once():
    v3, v4 = resolve_model("tiny-ldm@3") / "vae", resolve_model("tiny-ldm@4") / "vae"
    v6 = resolve_model("tiny-ldm@6") / "vae"
    for part in ("encoder.safetensors", "decoder.safetensors", "decoder_head.safetensors"):
        assert (v4 / part).resolve() == (v3 / part).resolve()
    assert not (v4 / "honour.safetensors").is_symlink()
    for part in ("encoder.safetensors", "decoder.safetensors"):
        assert (v6 / part).resolve() == (v3 / part).resolve()
    assert not (v6 / "decoder_head.safetensors").is_symlink()
