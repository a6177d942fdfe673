"""The bundled tiny models: offline loading, quality bars, both pipelines, training."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from PIL import Image

from photoimmune.sdk import InputError
from photoimmune.sdk.errors import UnknownModelError
from photoimmune.sdk.models import bundled_models, check_model, load_pipeline, resolve_model
from photoimmune.sdk.models.tokenizer import learn_merges
from photoimmune.sdk.models.train_tiny import RELEASES, quick_config, train_tiny
from photoimmune.sdk.samples import sample_pixels


def test_names_resolve_and_unknown_ones_explain(tiny_models):
    assert resolve_model(tiny_models[0]) == tiny_models[0]  # any local diffusers folder
    with pytest.raises(UnknownModelError, match="never downloads"):
        resolve_model("runwayml/stable-diffusion-v1-5")
    if not bundled_models():  # this build ships no weights: the error says how to get them
        with pytest.raises(UnknownModelError, match="train-tiny"):
            resolve_model("tiny-ldm@1")


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(UnknownModelError, match=r"no model_index\.json"):
        resolve_model(tmp_path)


@pytest.mark.parametrize("model", ["tiny-ldm@1", "tiny-ldm@2", "tiny-ldm@3"])
def test_bundled_versions_run_img2img_and_inpaint_end_to_end(model):
    photo = Image.fromarray(sample_pixels("chelsea.png", 128))
    img2img = load_pipeline(model, "img2img")
    edit = img2img(
        "a painting of a cat",
        image=photo,
        strength=0.6,
        num_inference_steps=5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert edit.shape == (128, 128, 3)
    assert np.isfinite(edit).all()

    mask = np.zeros((128, 128), np.uint8)
    mask[32:96, 32:96] = 255  # repaint the centre only
    inpaint = load_pipeline(model, "inpaint")
    filled = inpaint(
        "a dog",
        image=photo,
        mask_image=Image.fromarray(mask),
        num_inference_steps=5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    original = np.asarray(photo) / 255.0
    outside = np.abs(filled - original)[mask == 0].mean()
    inside = np.abs(filled - original)[mask == 255].mean()
    assert outside < inside  # the kept region survives, the masked one is repainted


def test_same_seed_same_edit(tiny_models):
    pipe = load_pipeline(tiny_models[0])
    photo = Image.fromarray(sample_pixels("coffee.png", 64))

    def run(seed):
        return pipe(
            "a photo",
            image=photo,
            strength=0.5,
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images[0]

    assert np.array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_tokenizer_merges_are_deterministic_and_frequent_first():
    corpus = ["a cat sat", "a cat ran", "the cat"]
    merges = learn_merges(corpus, 3)
    assert merges == learn_merges(list(corpus), 3)
    assert merges[0] == ("a", "t</w>")  # "-at" ends four words, "ca" starts three


def test_trained_tokenizer_handles_any_text(tiny_models):
    pipe = load_pipeline(tiny_models[0])
    ids = pipe.tokenizer("a photo of a cat ✨ façade").input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id
    assert ids[-1] == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.unk_token_id not in ids[1:-1]  # byte fallback, nothing unknown


@pytest.fixture
def one_thread():
    """Pin PyTorch to one thread: CPU kernels may split reductions differently for another
    thread count (a test earlier in the session may change it), which is all that changed
    byte 87282 of a retrain on a loaded machine; with the count fixed the bytes must agree."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_training_is_deterministic_under_a_seed(tmp_path):
    cfg = quick_config(RELEASES[1])
    for run in ("a", "b"):
        train_tiny(cfg, tmp_path / run)
    train_tiny(replace(cfg, seed=cfg.seed + 1), tmp_path / "other-seed")
    for part in ("vae", "unet", "text_encoder"):
        files = sorted((tmp_path / "a" / part).glob("*.safetensors"))
        assert files, part
        for file in files:
            name = f"{part}/{file.name}"
            first = file.read_bytes()
            assert first == (tmp_path / "b" / name).read_bytes(), name
            assert first != (tmp_path / "other-seed" / name).read_bytes(), name


def test_the_spectral_loss_counts_fine_detail_and_ignores_a_uniform_shift():
    from photoimmune.sdk.models.train_tiny import spectral_l1

    photo = torch.rand(1, 3, 16, 16)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2 - 1
    fine, shifted = photo + 0.05 * checker, photo + 0.05  # the same mean square error
    assert torch.isclose(F.mse_loss(fine, photo), F.mse_loss(shifted, photo))
    assert spectral_l1(photo, photo) == 0
    assert spectral_l1(shifted, photo) < 1e-6 < spectral_l1(fine, photo)


def test_the_patch_critics_term_pulls_as_hard_as_its_weight_times_the_reconstruction():
    from photoimmune.sdk.models.train_tiny import PatchCritic

    torch.manual_seed(0)
    critic, last = PatchCritic(0.5), torch.nn.Conv2d(4, 3, 3, padding=1)
    fake = last(torch.randn(2, 4, 32, 32))
    reconstruction = F.mse_loss(fake, torch.rand(2, 3, 32, 32) * 2 - 1)
    adversarial = critic.generator_loss(fake, reconstruction, last.weight)
    pull = torch.autograd.grad(reconstruction, last.weight, retain_graph=True)[0].norm()
    # the same up to the 1e-4 that keeps the ratio finite
    assert torch.isclose(
        torch.autograd.grad(adversarial, last.weight)[0].norm(), 0.5 * pull, rtol=1e-3
    )


def test_the_patch_critic_learns_to_tell_real_patches_from_flat_ones():
    from photoimmune.sdk.models.train_tiny import PatchCritic

    torch.manual_seed(0)
    critic = PatchCritic(0.5)
    real = (torch.rand(4, 3, 32, 32) > 0.5).float() * 2 - 1  # sharp detail
    fake = torch.zeros(4, 3, 32, 32)  # what a blurring decoder draws
    for _ in range(20):
        critic.step(real, fake)
    assert critic.net(real).mean() > 0 > critic.net(fake).mean()


def test_the_decoders_adversarial_term_changes_the_decoder_alone(tmp_path):
    from diffusers import AutoencoderKL

    from photoimmune.sdk.models.train_tiny import finetune_decoder
    from photoimmune.sdk.targets import fingerprint_module

    cfg = replace(quick_config(RELEASES[3]), decoder_steps=0)
    train_tiny(cfg, tmp_path / "start")
    vaes = {}
    for weight in (0.0, 0.5):
        folder = tmp_path / f"gan-{weight}"
        shutil.copytree(tmp_path / "start", folder)
        # a large rate, so that two steps show through the fp16 the weights are saved in
        tuned = replace(cfg, decoder_steps=2, decoder_lr=1.0, decoder_gan_weight=weight)
        finetune_decoder(tuned, folder)
        vaes[weight] = AutoencoderKL.from_pretrained(folder / "vae")
    plain, adversarial = vaes[0.0], vaes[0.5]
    assert fingerprint_module(plain.encoder) == fingerprint_module(adversarial.encoder)
    assert fingerprint_module(plain.decoder) != fingerprint_module(adversarial.decoder)


def test_min_snr_weights_cap_the_easy_timesteps_for_either_prediction_target():
    from photoimmune.sdk.models.train_tiny import _loss_weights

    snr = torch.tensor([0.5, 5.0, 50.0])
    eps = replace(RELEASES[1], min_snr=5.0)
    assert torch.allclose(_loss_weights(eps, snr), torch.tensor([1.0, 1.0, 0.1]))
    v = _loss_weights(RELEASES[3], snr)  # v's loss already carries SNR + 1
    assert torch.allclose(v, torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
    assert torch.equal(_loss_weights(RELEASES[1], snr), torch.ones(3))


# The second variant adds generic captions, measured on v3 in docs/research.md.
@pytest.mark.parametrize("variant", [{}, {"generic_captions": 0.5}])
def test_the_v3_recipe_trains_a_v_prediction_model_that_edits(tmp_path, variant):
    from diffusers import DDIMScheduler

    from photoimmune.sdk.models.pipelines import edit_image

    cfg = replace(quick_config(RELEASES[3]), **variant)
    assert cfg.decoder_latent_noise > 0 and cfg.ema_decay and cfg.min_snr
    train_tiny(cfg, tmp_path / "v3")
    scheduler = DDIMScheduler.from_pretrained(tmp_path / "v3" / "scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    pipe = load_pipeline(tmp_path / "v3")
    edit = edit_image(pipe, np.full((32, 32, 3), 128, np.uint8), "a photo", steps=2, seed=0)
    assert edit.shape == (32, 32, 3) and edit.dtype == np.uint8


def test_a_release_with_a_base_starts_from_the_bundled_weights():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from photoimmune.sdk.models.train_tiny import _base_component
    from photoimmune.sdk.targets import fingerprint_module, model_fingerprints

    v2 = RELEASES[2]
    assert v2.base == 1 and _base_component(RELEASES[1], "vae", AutoencoderKL) is None
    start = model_fingerprints(str(resolve_model("tiny-ldm@1")))
    assert fingerprint_module(_base_component(v2, "vae", AutoencoderKL)) == start.vae
    assert fingerprint_module(_base_component(v2, "unet", UNet2DConditionModel)) == start.denoiser


def test_a_fresh_encoder_is_new_and_learns_the_base_decoders_latents():
    from dataclasses import replace

    from diffusers import AutoencoderKL

    from photoimmune.sdk.models.train_tiny import _base_component, load_photos, train_vae
    from photoimmune.sdk.targets import fingerprint_module

    cfg = replace(RELEASES[2], vae_steps=2, vae_batch=2, vae_crop=16)
    assert cfg.fresh_encoder
    base = _base_component(cfg, "vae", AutoencoderKL)
    vae = train_vae(cfg, load_photos(["astronaut.png"]), lambda *_: None)
    # The decoder is the base's, untouched; the encoder is not the base's at all.
    assert fingerprint_module(vae.decoder) == fingerprint_module(base.decoder)
    assert fingerprint_module(vae.post_quant_conv) == fingerprint_module(base.post_quant_conv)
    assert fingerprint_module(vae.encoder) != fingerprint_module(base.encoder)
    # Two training steps move a fine-tuned encoder's weights by ~2e-4 of their norm;
    # a freshly initialised one is as far from the base's as the weights are large.
    moved = vae.encoder.conv_in.weight.detach() - base.encoder.conv_in.weight
    assert moved.norm() > 0.5 * base.encoder.conv_in.weight.norm()


def test_the_fidelity_release_keeps_its_bases_vae_and_trains_a_wider_unet(tmp_path):
    from diffusers import UNet2DConditionModel

    from photoimmune.sdk.targets import model_fingerprints

    cfg = replace(RELEASES[5], unet_steps=2, unet_batch=2, unet_crop=32, latent_pool=4)
    assert cfg.base == 3 and cfg.generic_captions > 0 and not cfg.fresh_encoder
    train_tiny(cfg, tmp_path / "v5")
    base = model_fingerprints(str(resolve_model("tiny-ldm@3")))
    new = model_fingerprints(str(tmp_path / "v5"))
    assert new.vae == base.vae and new.denoiser != base.denoiser
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "v5" / "unet")
    assert tuple(unet.config.block_out_channels) == (48, 96, 96)


def test_the_adversarial_decoder_release_changes_v3s_decoder_alone(tmp_path):
    from diffusers import AutoencoderKL

    from photoimmune.sdk.models.pipelines import load_vae
    from photoimmune.sdk.targets import fingerprint_module, model_fingerprints

    cfg = replace(RELEASES[6], decoder_steps=2, latent_pool=4)
    assert cfg.base == 3 and cfg.decoder_gan_weight > 0 and not cfg.unet_steps
    train_tiny(cfg, tmp_path / "v6")
    base, new = resolve_model("tiny-ldm@3"), tmp_path / "v6"
    assert model_fingerprints(str(new)).denoiser == model_fingerprints(str(base)).denoiser
    old_vae, new_vae = load_vae(base), AutoencoderKL.from_pretrained(new / "vae")
    assert fingerprint_module(old_vae.encoder) == fingerprint_module(new_vae.encoder)
    assert fingerprint_module(old_vae.decoder) != fingerprint_module(new_vae.decoder)
    # stored once: what it shares with v3 is linked, its published target files included
    # its decoder's upper half alone retrained and stored; all else linked to v3's
    shared = ["vae/encoder.safetensors", "vae/decoder.safetensors", "mark.json"]
    for name in [*shared, "unet/diffusion_pytorch_model.safetensors", "immunizer/spec.json"]:
        assert (new / name).resolve() == (base / name).resolve(), name
    assert not (new / "vae" / "decoder_head.safetensors").is_symlink()


def test_a_cooperative_release_is_its_base_with_a_gate_that_reads_the_honoured_marks(tmp_path):
    from photoimmune.sdk import immunize
    from photoimmune.sdk.io import pixels_to_tensor
    from photoimmune.sdk.models.honour import jpeg
    from photoimmune.sdk.models.pipelines import load_vae
    from photoimmune.sdk.targets import build_target, fingerprint_module, model_fingerprints

    cfg = quick_config(RELEASES[4])
    assert cfg.base == 3 and cfg.honours == (3,)
    report = train_tiny(cfg, tmp_path / "v4")
    base, new = resolve_model("tiny-ldm@3"), tmp_path / "v4"
    assert model_fingerprints(str(new)).denoiser == model_fingerprints(str(base)).denoiser
    assert model_fingerprints(str(new)).vae != model_fingerprints(str(base)).vae  # the gate
    old_vae, new_vae = load_vae(base), load_vae(new)
    assert type(new_vae).__name__ == "HonouringAutoencoderKL"
    for part in ("encoder", "decoder"):  # the base's weights, bit for bit, and linked
        assert fingerprint_module(getattr(old_vae, part)) == fingerprint_module(
            getattr(new_vae, part)
        )
    for shard in ("vae/encoder.safetensors", "vae/decoder.safetensors"):
        assert (new / shard).resolve() == (base / shard).resolve()
    previous = build_target("tiny-ldm@3")
    honouring = build_target(new)
    assert honouring.honours == (previous.digest,)
    assert honouring.mark is not None and previous.mark is not None
    assert honouring.mark.seed != previous.mark.seed  # its own protections are not honoured
    assert report["gate"]["protected"]["recognised"] >= 0.95

    photo = sample_pixels("coffee.png", 128)
    protected = immunize(photo, previous, method="amortized", seed=0).pixels
    x = pixels_to_tensor([photo, protected]) * 2 - 1
    x = torch.cat([x, jpeg((x[1:] + 1) / 2) * 2 - 1])
    with torch.no_grad():
        old = old_vae.encode(x).latent_dist.mean
        honoured = new_vae.encode(x).latent_dist.mean
    assert torch.equal(honoured[0], old[0])  # clean: exactly the base's latent
    goal = new_vae.honour.latent[0].expand_as(old[1])
    for k in (1, 2):  # protected against v3, and its JPEG 75 copy: the target latent
        assert torch.allclose(honoured[k], goal, atol=1e-5)


def test_generic_captions_replace_a_share_of_the_pools_captions():
    from photoimmune.sdk.models.train_tiny import (
        CAPTION_TABLE,
        GENERIC_CAPTIONS,
        TRAIN_PHOTOS,
        generic_sources,
    )

    gen = torch.Generator().manual_seed(0)
    sources = torch.arange(len(TRAIN_PHOTOS)).repeat(200)
    state = gen.get_state()
    assert torch.equal(generic_sources(sources, 0.0, gen), sources)
    assert torch.equal(gen.get_state(), state)  # share 0 draws nothing: old releases unchanged
    every = generic_sources(sources, 1.0, gen)
    assert set(every.tolist()) == set(
        range(len(TRAIN_PHOTOS), len(TRAIN_PHOTOS) + len(GENERIC_CAPTIONS))
    )
    assert {CAPTION_TABLE[i] for i in every.tolist()} == set(GENERIC_CAPTIONS)
    some = generic_sources(sources, 0.3, gen)
    changed = some != sources
    assert 0.2 < changed.float().mean() < 0.4
    assert bool((some[changed] >= len(TRAIN_PHOTOS)).all())


def test_quality_check_reports_finite_numbers(tiny_models):
    report = check_model(tiny_models[0], resolution=64, photos=("coffee.png",))
    assert set(report.vae_psnr_db) == {"coffee.png"}
    assert 0 < report.vae_psnr_db["coffee.png"] < 60
    assert 0 < report.img2img_psnr_db["coffee.png"] < 60


def test_cli_path_and_its_errors(capfd, tiny_models):
    from photoimmune.cli import main

    assert main(["model", "list"]) == 0
    assert main(["model", "path", str(tiny_models[0])]) == 0
    assert capfd.readouterr().out.strip().splitlines()[-1] == str(tiny_models[0])
    assert main(["model", "path", "no-such-model"]) == 2
    assert main(["model", "train-tiny", "--version", "1", "--out", "."]) == 2


def test_sample_photo_errors_list_choices():
    from photoimmune.sdk.samples import sample_path

    with pytest.raises(InputError, match=r"chelsea\.png"):
        sample_path("nope.png")
