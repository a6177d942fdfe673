"""The bundled weights: layout, size, offline loading, and the quality bars."""

from __future__ import annotations

import json
import subprocess
import sys

from photoimmune.cli import main
from photoimmune.sdk.models import bundled_models, check_model, resolve_model


def test_bundled_models_are_in_diffusers_layout_and_small():
    models = bundled_models()
    names = ["tiny-ldm@1", "tiny-ldm@2", "tiny-ldm@3", "tiny-ldm@4", "tiny-ldm@6"]
    assert [m.name for m in models] == names
    for m in models:
        index = json.loads((m.path / "model_index.json").read_text())
        assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
        for part in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
            assert (m.path / part).is_dir()
    # A release links the files it shares with its base (v4: all but its VAE's gate; v6:
    # all but its decoder's upper half).
    files = [f for m in models for f in m.path.rglob("*") if f.is_file() and not f.is_symlink()]
    assert sum(f.stat().st_size for f in files) < 40e6


def test_bundled_names_resolve():
    assert resolve_model("tiny-ldm@1") == resolve_model("photoimmune/tiny-ldm@1")
    assert resolve_model("tiny-ldm") == resolve_model("tiny-ldm@6")  # the latest version


def test_version_2_is_a_new_release_not_a_copy():
    from diffusers import AutoencoderKL

    from photoimmune.sdk.targets import fingerprint_module, model_fingerprints

    v1, v2 = (bundled_models()[i].path for i in (0, 1))
    scaling = [
        json.loads((p / "vae" / "config.json").read_text())["scaling_factor"] for p in (v1, v2)
    ]
    assert scaling[0] != scaling[1]
    f1, f2 = model_fingerprints(str(v1)), model_fingerprints(str(v2))
    assert f1.vae != f2.vae and f1.denoiser != f2.denoiser
    # The encoder itself moved (not only the decoder): the latents immunization attacks differ.
    encoders = [AutoencoderKL.from_pretrained(p / "vae").encoder for p in (v1, v2)]
    assert fingerprint_module(encoders[0]) != fingerprint_module(encoders[1])
    training = json.loads((v2 / "training.json").read_text())
    assert training["config"]["base"] == 1 and training["config"]["seed"] != 1


def test_version_3_has_its_own_encoder_and_the_later_diffusion_recipe():
    from diffusers import AutoencoderKL, DDIMScheduler

    from photoimmune.sdk.targets import fingerprint_module

    v2, v3 = (bundled_models()[i].path for i in (1, 2))
    encoders = [AutoencoderKL.from_pretrained(p / "vae").encoder for p in (v2, v3)]
    assert fingerprint_module(encoders[0]) != fingerprint_module(encoders[1])
    scheduler = DDIMScheduler.from_pretrained(v3 / "scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    config = json.loads((v3 / "training.json").read_text())["config"]
    assert config["base"] == 2 and config["decoder_latent_noise"] > 0


def test_version_4_is_version_3_honouring_its_protections():
    """A cooperative release (issue 28): v3's weights, a gate for v3's marks, its own mark."""
    import numpy as np

    from photoimmune.sdk import immunize
    from photoimmune.sdk.evaluate import edit_similarity, same_eps_noise
    from photoimmune.sdk.models import load_pipeline
    from photoimmune.sdk.models.pipelines import edit_image
    from photoimmune.sdk.samples import sample_pixels
    from photoimmune.sdk.targets import build_target, honouring_release

    v3, v4 = build_target("tiny-ldm@3"), build_target("tiny-ldm@4")
    assert v4.honours == (v3.digest,) and honouring_release("tiny-ldm@3") == "tiny-ldm@4"
    assert v4.mark is not None and v3.mark is not None and v4.mark.seed != v3.mark.seed
    assert v4.fingerprints.denoiser == v3.fingerprints.denoiser
    assert v4.fingerprints.vae != v3.fingerprints.vae  # the gate is part of the weights
    old, new = load_pipeline("tiny-ldm@3"), load_pipeline("tiny-ldm@4")
    photo = sample_pixels("coffee.png", 96)
    edit = {"strength": 0.5, "steps": 8, "seed": 1}
    clean = edit_image(new, photo, "a photo", **edit)
    assert np.array_equal(clean, edit_image(old, photo, "a photo", **edit))  # clean: as v3
    protected = immunize(photo, v3, method="amortized", seed=0).pixels
    noisy = same_eps_noise(photo, "8/255", np.random.default_rng(0))
    on = {
        name: edit_similarity(clean, edit_image(p, protected, "a photo", **edit))[0]
        for name, p in (("v3", old), ("v4", new))
    }
    noise = edit_similarity(clean, edit_image(new, noisy, "a photo", **edit))[0]
    assert on["v4"] < on["v3"] and noise - on["v4"] > 0.2, (on, noise)


def test_bundled_models_meet_the_quality_bars():
    for m in bundled_models():
        report = check_model(m.name)
        assert min(report.vae_psnr_db.values()) >= 22.0, report
        assert min(report.img2img_psnr_db.values()) >= 16.0, report


def test_plain_diffusers_loads_the_printed_folder(capfd):
    assert main(["model", "path", "tiny-ldm@1"]) == 0
    folder = capfd.readouterr().out.strip().splitlines()[-1]
    code = (
        "import sys; from diffusers import StableDiffusionImg2ImgPipeline as P; "
        "P.from_pretrained(sys.argv[1], local_files_only=True)"
    )
    out = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_immunizing_against_v1_protects_v2_less_than_against_v2():
    """The gap that makes re-immunization at a release necessary (issue 3)."""
    from photoimmune.sdk import immunize
    from photoimmune.sdk.samples import sample_pixels
    from photoimmune.sdk.targets import build_target

    v2 = build_target("tiny-ldm@2")
    for name in ("chelsea.png", "coffee.png"):  # the validation photos
        photo = sample_pixels(name, 64)
        loss_on_v2 = {}
        for against in ("tiny-ldm@1", "tiny-ldm@2"):
            treated = immunize(photo, build_target(against), eps="16/255", steps=20, seed=0).pixels
            check = immunize(treated, v2, eps="1/255", steps=0)  # v2's loss, nothing changed
            loss_on_v2[against] = float(check.protections[0].loss_before)
        assert loss_on_v2["tiny-ldm@2"] < 0.95 * loss_on_v2["tiny-ldm@1"], (name, loss_on_v2)


def test_version_6_is_version_3_with_the_upper_half_of_its_decoder_retrained():
    """v3's encoder, UNet and published target (latent, pass, budgets, mark); new only the
    decoder's upper half, fine-tuned against a patch discriminator (issue 23)."""
    from photoimmune.sdk.models.pipelines import load_vae
    from photoimmune.sdk.targets import build_target, fingerprint_module

    v3, v6 = build_target("tiny-ldm@3"), build_target("tiny-ldm@6")
    assert v6.fingerprints.denoiser == v3.fingerprints.denoiser
    assert v6.fingerprints.vae != v3.fingerprints.vae
    assert v6.tensors.sha256 == v3.tensors.sha256  # the same target image and latent
    assert v6.honours == (v3.digest,)  # so v3's protections are v6's: no re-immunization
    assert (v6.mark, v6.budgets) == (v3.mark, v3.budgets)
    assert v6.immunizer is not None and v3.immunizer is not None
    assert v6.immunizer.weights.sha256 == v3.immunizer.weights.sha256
    old, new = load_vae("tiny-ldm@3"), load_vae("tiny-ldm@6")
    for kept in ("encoder", "decoder.mid_block", "decoder.up_blocks.0"):
        assert fingerprint_module(old.get_submodule(kept)) == fingerprint_module(
            new.get_submodule(kept)
        ), kept
    for changed in ("decoder.up_blocks.1", "decoder.up_blocks.2", "decoder.conv_out"):
        assert fingerprint_module(old.get_submodule(changed)) != fingerprint_module(
            new.get_submodule(changed)
        ), changed
    config = json.loads((resolve_model("tiny-ldm@6") / "training.json").read_text())["config"]
    assert config["base"] == 3 and config["decoder_gan_weight"] > 0
