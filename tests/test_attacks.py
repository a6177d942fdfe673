"""Encoder and diffusion attacks and immunize(), on small models our training script made."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from photoimmune.cli import main
from photoimmune.sdk import InputError, immunize, load_image, save_image
from photoimmune.sdk.attacks import (
    DiffusionAttack,
    EncoderAttack,
    Ensemble,
    PGDConfig,
    VAEEncoder,
    loss_and_grad,
)
from photoimmune.sdk.descriptor import Budget
from photoimmune.sdk.immunization import choose_schedule
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import build_target

SIZE = 64  # small crops keep the suite fast; the attacks are size-agnostic


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_pixels("chelsea.png", SIZE)


@pytest.mark.parametrize("method", ["encoder", "diffusion", "edit"])
def test_constraint_holds_on_the_saved_file_and_loss_falls(tmp_path, photo, method, tiny_models):
    steps = 15 if method == "encoder" else 4
    result = immunize(photo, tiny_models[0], method=method, eps="8/255", steps=steps, seed=0)
    path = save_image(result.pixels, tmp_path / "immunized.png")
    saved = load_image(path).pixels.astype(int)
    assert np.abs(saved - photo.astype(int)).max() <= 8
    (protection,) = result.protections
    assert protection.method == method
    assert protection.eps == "8/255"
    assert float(protection.loss_after) < float(protection.loss_before)
    assert protection.target_ref == "local/quick-1@0"


@pytest.mark.parametrize("method", ["encoder", "diffusion", "edit"])
def test_same_seed_same_bytes(photo, method, tiny_models):
    steps = 6 if method == "encoder" else 2
    a = immunize(photo, tiny_models[0], method=method, steps=steps, seed=7)
    b = immunize(photo, tiny_models[0], method=method, steps=steps, seed=7)
    c = immunize(photo, tiny_models[0], method=method, steps=steps, seed=8)
    assert a.pixels.tobytes() == b.pixels.tobytes()
    assert a.pixels.tobytes() != c.pixels.tobytes()


def test_mask_leaves_masked_out_pixels_untouched(photo, tiny_models):
    keep = np.zeros((SIZE, SIZE), np.uint8)
    keep[:, : SIZE // 2] = 1  # only the left half may carry the perturbation
    result = immunize(photo, tiny_models[0], steps=8, mask=keep)
    assert np.array_equal(result.pixels[:, SIZE // 2 :], photo[:, SIZE // 2 :])
    assert result.max_abs_delta > 0
    with pytest.raises(InputError, match="mask shape"):
        immunize(photo, tiny_models[0], steps=1, mask=keep[:10])


def test_ensemble_lowers_the_loss_on_each_member(photo, tiny_models):
    result = immunize(photo, [str(tiny_models[0]), str(tiny_models[1])], steps=20, seed=0)
    refs = [p.target_ref for p in result.protections]
    assert refs == ["local/quick-1@0", "local/quick-2@0"]
    for p in result.protections:
        assert float(p.loss_after) < 0.9 * float(p.loss_before)
    assert result.max_abs_delta <= 8


def test_ensemble_weights_steer_the_budget(photo, tiny_models):
    x = pixels_to_tensor(photo)
    v1, v2 = (
        EncoderAttack(VAEEncoder.from_pretrained(m), steps=15)
        for m in (str(tiny_models[0]), str(tiny_models[1]))
    )
    favour_v1 = Ensemble([v1, v2], [0.9, 0.1], steps=15).perturb(x).x_adv
    favour_v2 = Ensemble([v1, v2], [0.1, 0.9], steps=15).perturb(x).x_adv
    v1.prepare(x, torch.Generator())
    v2.prepare(x, torch.Generator())
    with torch.no_grad():
        assert v1.loss(favour_v1) < v1.loss(favour_v2)
        assert v2.loss(favour_v2) < v2.loss(favour_v1)


def test_batches_of_mixed_sizes(photo, tiny_models):
    other = sample_pixels("coffee.png", 48)
    results = immunize([photo, other, photo], tiny_models[0], steps=4)
    assert [r.pixels.shape for r in results] == [photo.shape, other.shape, photo.shape]
    for result, original in zip(results, [photo, other, photo], strict=True):
        assert np.array_equal(result.original, original)
        assert 0 < result.max_abs_delta <= 8


def test_large_photo_is_attacked_through_the_resize(tiny_models):
    big = sample_pixels("coffee.png")  # 400x600: working size 128x192 for the tiny model
    result = immunize(big, tiny_models[0], steps=6)
    assert result.pixels.shape == big.shape
    assert result.max_abs_delta <= 8
    assert float(result.protections[0].loss_after) < float(result.protections[0].loss_before)


def test_diffusion_attack_inpainting_mask(photo, tiny_models):
    pipe = load_pipeline(tiny_models[0], "inpaint")
    edit_mask = torch.zeros(1, 1, SIZE, SIZE)
    edit_mask[..., 16:48, 16:48] = 1
    attack = DiffusionAttack(pipe, edit_mask=edit_mask, denoise_steps=2, steps=3)
    x = pixels_to_tensor(photo)
    res = attack.perturb(x, mask=1 - edit_mask)  # perturb only what the edit keeps
    assert bool((res.loss_after < res.loss_before).all())
    assert torch.equal(res.x_adv[..., 16:48, 16:48], x[..., 16:48, 16:48])


def test_speed_switches_keep_the_gradient(photo, tiny_models):
    """Checkpointing, channels_last and skipping the unused encode or the redundant
    half of guidance's batch (the prompt is empty) change cost, not the math."""
    edit_mask = torch.zeros(1, 1, SIZE, SIZE)
    edit_mask[..., 16:48, 16:48] = 1
    x, gen_seed = pixels_to_tensor(photo), 3
    grads = []
    for switches in (
        {},
        {"gradient_checkpointing": True, "channels_last": True, "grad_reps": 2},
        {"gradient_checkpointing": "steps"},
        {"skip_redundant_guidance": False},
    ):
        pipe = load_pipeline(tiny_models[0], "inpaint")
        attack = DiffusionAttack(pipe, edit_mask=edit_mask, denoise_steps=2, **switches)
        attack.prepare(x, torch.Generator().manual_seed(gen_seed))
        assert attack.guidance_batch == (switches.get("skip_redundant_guidance") is False)
        if "grad_reps" in switches:
            attack._noise = attack._noise[:1] * 2  # the same draw twice: the mean is unchanged
        delta = torch.full_like(x, 2 / 255)
        grads.append(loss_and_grad(attack.loss_terms, x, delta, PGDConfig(), torch.Generator()))
    for loss, grad in grads[1:]:
        assert torch.allclose(grads[0][0], loss, rtol=1e-4)
        assert torch.allclose(grads[0][1], grad, rtol=1e-3, atol=1e-7)
    assert float(grads[0][1].abs().max()) > 0


def test_a_prompt_keeps_the_guidance_batch(photo, tiny_models):
    pipe = load_pipeline(tiny_models[0], "img2img")
    x = pixels_to_tensor(photo)
    losses = {}
    for prompt in ("", "a watercolor painting"):
        attack = DiffusionAttack(pipe, prompt=prompt, denoise_steps=2)
        attack.prepare(x, torch.Generator().manual_seed(0))
        assert attack.guidance_batch == bool(prompt)
        with torch.no_grad():
            losses[prompt] = float(attack.loss(x))
    # The same noise: only guidance towards the prompt can move the edit.
    assert abs(losses[""] - losses["a watercolor painting"]) > 1e-6 * losses[""]


# On CPUs that emulate bf16 the copy warns that it will be slow; that is not what is tested.
@pytest.mark.filterwarnings("ignore::photoimmune.sdk.attacks.PrecisionWarning")
def test_bf16_encoder_copy_leaves_the_vae_alone(photo, tiny_models):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_models[0] / "vae")
    fast = VAEEncoder(vae, dtype=torch.bfloat16, channels_last=True)
    exact = VAEEncoder(vae)
    assert vae.dtype == torch.float32 and exact.weight_dtype == torch.float32
    x = pixels_to_tensor(photo)
    z_fast, z_exact = fast(x), exact(x)
    assert z_fast.dtype == torch.float32
    assert float((z_fast - z_exact).abs().max()) < 0.05 * float(z_exact.abs().max())


@pytest.mark.filterwarnings("ignore::photoimmune.sdk.attacks.PrecisionWarning")
def test_float32_input_sees_the_perturbation_unrounded(photo, tiny_models):
    """Under bf16 (autocast or weights) the first convolution still runs on x + δ in float32."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_models[0] / "vae")
    conv = vae.encoder.conv_in
    x = pixels_to_tensor(photo) * 2 - 1 + 1e-3  # off bf16's grid
    with torch.no_grad():
        exact = conv(x).to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = conv(x)
            under_autocast = VAEEncoder(vae, float32_input=True).encoder.conv_in(x)
        with_bf16_weights = VAEEncoder(vae, dtype=torch.bfloat16).encoder.conv_in(x)
    assert torch.equal(under_autocast, exact) and torch.equal(with_bf16_weights, exact)
    assert not torch.equal(rounded, exact)
    assert vae.encoder.conv_in is conv and conv.weight.dtype == torch.float32


def test_matmul_attention_keeps_the_loss_and_gradient(photo, tiny_models):
    """Explicit attention products under bf16 agree with the fused kernel to bf16 accuracy;
    in float32 the fused kernel runs, bit for bit; the VAE passed in keeps its processors."""
    from diffusers import AutoencoderKL
    from diffusers.models.attention_processor import AttnProcessor2_0

    from photoimmune.sdk.attacks.attention import MatmulAttnProcessor, prefers_matmul

    vae = AutoencoderKL.from_pretrained(tiny_models[0] / "vae")
    fused, explicit = VAEEncoder(vae), VAEEncoder(vae, matmul_attention=True)
    layer = explicit.encoder.mid_block.attentions[0]
    assert isinstance(layer.processor, MatmulAttnProcessor)
    assert isinstance(vae.encoder.mid_block.attentions[0].processor, AttnProcessor2_0)
    x = pixels_to_tensor(photo)

    def loss_grad(encoder, autocast: bool):
        delta = torch.zeros_like(x, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = encoder(x + delta).pow(2).mean()
        return loss.detach(), torch.autograd.grad(loss, delta)[0]

    for autocast in (False, True):
        loss_f, grad_f = loss_grad(fused, autocast)
        loss_e, grad_e = loss_grad(explicit, autocast)
        if not autocast:
            assert torch.equal(loss_f, loss_e) and torch.equal(grad_f, grad_e)
        else:
            assert torch.allclose(loss_e, loss_f, rtol=0.02)
            assert torch.cosine_similarity(grad_e.flatten(), grad_f.flatten(), dim=0) > 0.98
    states = torch.zeros(1, 4, 8, 8, dtype=torch.bfloat16)
    assert prefers_matmul(states) and not prefers_matmul(states.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert prefers_matmul(states.float())
    assert not prefers_matmul(torch.zeros(1, 4, 256, 256, dtype=torch.bfloat16))  # 8 GiB scores


@pytest.mark.slow
def test_compiled_encoder_gives_the_eager_gradient(photo, tiny_models):
    """torch.compile fuses ops, it must not change the loss or its gradient, nor the VAE given."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_models[0] / "vae")
    eager, compiled = VAEEncoder(vae), VAEEncoder(vae, compile=True)
    x = pixels_to_tensor(photo)
    results = []
    for encoder in (eager, compiled):
        delta = torch.zeros_like(x, requires_grad=True)
        loss = encoder(x + delta).pow(2).mean()
        results.append((loss.detach(), torch.autograd.grad(loss, delta)[0]))
    (loss0, grad0), (loss1, grad1) = results
    assert torch.allclose(loss0, loss1, rtol=1e-4)
    assert float((grad1 - grad0).norm() / grad0.norm()) < 1e-3
    assert vae.encoder._compiled_call_impl is None  # the caller's VAE still runs eagerly
    assert compiled.encoder._compiled_call_impl is not None


def test_targets_have_stable_digests_and_recipes_differ(tiny_models):
    a, b = build_target(tiny_models[0]), build_target(tiny_models[0])
    assert a.digest == b.digest
    assert build_target(tiny_models[0], recipe="checker").digest != a.digest
    assert build_target(tiny_models[1]).digest != a.digest


def test_a_target_names_the_targets_it_honours_and_signs_them_with_its_digest(
    tiny_models, tmp_path
):
    from photoimmune.sdk.targets import load_target, save_target

    older, plain = build_target(tiny_models[0]), build_target(tiny_models[1])
    honouring = build_target(tiny_models[1], honours=[older, older.digest])
    assert plain.honours == () and b"honours" not in plain.canonical_json()
    assert honouring.honours == (older.digest,)  # once, however it was named
    assert honouring.digest != plain.digest  # a changed list is a changed release
    save_target(honouring, tmp_path / "release")
    assert load_target(tmp_path / "release").digest == honouring.digest


def test_cli_immunize_json_and_refusals(tmp_path, capsys, tiny_models):
    src = tmp_path / "cat.png"
    save_image(sample_pixels("chelsea.png", SIZE), src)
    out = tmp_path / "out"
    model = ["--model", str(tiny_models[0])]
    code = main(
        ["immunize", str(src), "-o", str(out), *model, "--steps", "4", "--eps", "4/255", "--json"]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["output"] == str(out / "cat.png")
    assert record["max_abs_delta"] in {"3/255", "4/255"}
    assert float(record["loss_after"][0]) < float(record["loss_before"][0])
    # Running again must not replace the output, and never the input.
    assert main(["immunize", str(src), "-o", str(out), *model, "--steps", "1"]) == 2
    assert main(["immunize", str(src), "-o", str(tmp_path), *model, "--overwrite"]) == 2
    assert main(["immunize", str(src), "-o", str(tmp_path / "x"), *model, "--eps", "3"]) == 2


def test_immunize_follows_the_targets_recommended_method_and_budget(photo, tiny_models):
    target = build_target(tiny_models[0])
    first = Budget(method="diffusion", eps="4/255", steps=2)
    diffusion_first = target.model_copy(update={"budgets": (first, *target.budgets)})
    (protection,) = immunize(photo, diffusion_first, seed=0).protections
    assert (protection.method, protection.eps, protection.steps) == ("diffusion", "4/255", 2)
    # The caller's choices win; what they leave open comes from that method's recommendation.
    chosen = immunize(photo, diffusion_first, method="encoder", steps=3, seed=0)
    assert (chosen.protections[0].method, chosen.protections[0].eps) == ("encoder", "8/255")
    assert chosen.max_abs_delta <= 8


def test_a_budgets_resolution_lets_the_attack_see_the_photo_at_its_own_size(tiny_models):
    target = build_target(tiny_models[0])
    photo = sample_pixels("coffee.png", 2 * target.resolution)  # working size: half of it
    x = pixels_to_tensor(photo)
    encoder, image = target.vae_encoder(), target.tensor(target.encoder.x_target)
    seen_at = {r: EncoderAttack(encoder, image, resolution=r).loss(x).item() for r in (128, 256)}
    assert target.resolution == 128 and seen_at[128] != pytest.approx(seen_at[256], rel=1e-3)

    own_size = Budget(method="encoder", eps="8/255", steps=1, resolution=256)
    for budgets, seen in (((own_size,), 256), (target.budgets, 128)):
        recommending = target.model_copy(update={"budgets": budgets})
        (protection,) = immunize(photo, recommending, steps=1, seed=0).protections
        assert float(protection.loss_before) == pytest.approx(seen_at[seen], rel=1e-4)
    # A budget without one keeps the field out of the descriptor: published digests stand.
    assert "resolution" not in target.budgets[0].model_dump(mode="json")


def test_a_budget_runs_fewer_steps_on_photos_seen_larger_than_its_full_steps_side(tiny_models):
    target = build_target(tiny_models[0])
    scaled = Budget(method="encoder", eps="8/255", steps=4, resolution=256, full_steps_up_to=128)
    recommending = target.model_copy(update={"budgets": (scaled,)})
    full = choose_schedule([recommending]).steps
    photos = [sample_pixels("coffee.png", side) for side in (128, 256, 512)]
    # 128 px: all the steps; 256 px: half; 512 px is seen at 256, so half too.
    ran = [immunize(p, recommending, seed=0).protections[0].steps for p in photos]
    assert full > 1 and ran == [full, math.ceil(full / 2), math.ceil(full / 2)]
    assert immunize(photos[1], recommending, steps=3, seed=0).protections[0].steps == 3
    assert "full_steps_up_to" not in target.budgets[0].model_dump(mode="json")


def test_the_edit_away_attack_moves_the_guided_prediction_within_eps(photo, tiny_models):
    from photoimmune.sdk.attacks.edit import EditAwayAttack, EditPrediction

    pipe = load_pipeline(tiny_models[0], "img2img")
    prediction = EditPrediction(pipe, prompts=("watercolor", "a dog at night"))
    attack = EditAwayAttack(prediction, timesteps=(300, 600), eps=8 / 255, steps=4)
    x = pixels_to_tensor(photo)
    result = attack.perturb(x, seed=0)
    # -log(1e-4 + distance): 9.21 on the clean photo, lower as its edit moves away
    assert float(result.loss_before) == pytest.approx(-math.log(1e-4), abs=1e-3)
    assert float(result.loss_after) < float(result.loss_before) - 1
    assert float((result.x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    # Each batch restarts the cycle of timesteps and prompts: another photo run before
    # does not change this one's result.
    attack.perturb(pixels_to_tensor(sample_pixels("coffee.png", SIZE)), seed=0)
    assert torch.equal(attack.perturb(x, seed=0).x_adv, result.x_adv)


def test_guidance_one_runs_the_prompted_prediction_alone(photo, tiny_models):
    from photoimmune.sdk.attacks.edit import EditPrediction

    pipe = load_pipeline(tiny_models[0], "img2img")
    x = pixels_to_tensor(photo)
    noise = torch.randn(1, 4, SIZE // pipe.vae_scale_factor, SIZE // pipe.vae_scale_factor)
    at = {"timesteps": torch.tensor([500]), "noise": noise, "prompts": torch.tensor([0])}
    with torch.no_grad():
        guided = EditPrediction(pipe, ("watercolor",), guidance=7.5)(x, **at)
        one = EditPrediction(pipe, ("watercolor",), guidance=1)(x, **at)
        empty = EditPrediction(pipe, ("",), guidance=7.5)(x, **at)  # guidance has no gap
        empty_one = EditPrediction(pipe, ("",), guidance=1)(x, **at)
    assert guided.shape == x.shape
    assert float((guided - one).abs().max()) > 1e-3  # guidance moves the prediction
    assert torch.allclose(empty, empty_one, atol=1e-4)
