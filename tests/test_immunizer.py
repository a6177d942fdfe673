"""The one-pass immunizer: bound to its target by digest, published and checked with it,
inside the budget after the 8-bit projection, and PGD's default start."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from photoimmune.sdk.descriptor import (
    DEFAULT_BUDGETS,
    ImmunizerMismatchError,
    TargetIntegrityError,
)
from photoimmune.sdk.errors import InputError
from photoimmune.sdk.immunization import immunize
from photoimmune.sdk.immunizer import (
    ImmunizerNet,
    ImmunizerTraining,
    attach_immunizer,
    immunizer_delta,
    train_immunizer,
)
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.models import resolve_model
from photoimmune.sdk.refs import ModelRef
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import (
    build_target,
    load_target,
    parse_target,
    save_target,
    with_bundled_immunizer,
)


@pytest.fixture(scope="module")
def plain():
    """tiny-ldm@1's target under another name: the bundled immunizer is not for it."""
    return build_target("tiny-ldm@1", ref="acme/quick@1")


@pytest.fixture(scope="module")
def carried(plain):
    """``plain`` carrying a small untrained generator that recommends 2 finishing steps."""
    torch.manual_seed(0)
    return attach_immunizer(plain, ImmunizerNet(4), ImmunizerTraining(width=4, finish_steps=2))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_pixels("chelsea.png")[:48, 40:104]  # held out, small: 64x48


def test_the_immunizer_is_bound_to_its_target_by_digest(plain, carried):
    assert plain.immunizer is None and plain.digest == plain.base_digest
    assert carried.immunizer.target == plain.digest == carried.base_digest
    assert carried.digest != plain.digest  # publishing a generator makes a new target
    other = plain.model_copy(update={"ref": ModelRef.parse("acme/quick@2")})
    with pytest.raises(ImmunizerMismatchError, match="train-immunizer"):
        other.with_immunizer(carried.immunizer, carried._immunizer_weights)
    with pytest.raises(TargetIntegrityError, match="does not match"):
        plain.with_immunizer(carried.immunizer, carried._immunizer_weights + b"x")


def test_a_saved_target_keeps_its_immunizer_and_refuses_a_swapped_one(tmp_path, carried):
    path = save_target(carried, tmp_path / "release")
    loaded = load_target(tmp_path / "release")
    assert loaded.digest == carried.digest
    assert loaded._immunizer_weights == carried._immunizer_weights
    descriptor = json.loads(path.read_bytes())
    descriptor["immunizer"]["target"] = "0" * 64  # a generator for another target
    tensors = (tmp_path / "release" / carried.tensors.path).read_bytes()
    with pytest.raises(ImmunizerMismatchError):
        parse_target(json.dumps(descriptor).encode(), tensors, carried._immunizer_weights)
    (tmp_path / "release" / carried.immunizer.weights.path).unlink()
    with pytest.raises(InputError, match="not a target folder"):
        load_target(tmp_path / "release")


def test_the_bundled_immunizer_attaches_only_to_the_target_it_was_trained_for():
    published = build_target("tiny-ldm@2")
    assert published.immunizer is not None
    assert published.immunizer.target == published.base_digest
    assert published.immunizer.weights.length <= 5 * 1024 * 1024
    assert build_target("tiny-ldm@2", recipe="checker").immunizer is None
    assert build_target("tiny-ldm@2", ref="acme/copy@1").immunizer is None


def test_a_bundled_pass_can_be_lent_to_a_candidate_target_and_is_bound_to_it():
    candidate = build_target("tiny-ldm@2", ref="acme/candidate@1")
    lent = with_bundled_immunizer(candidate, resolve_model("tiny-ldm@3"))
    assert lent.immunizer is not None and lent.immunizer.objective == "edit"
    assert lent.immunizer.target == candidate.base_digest
    assert with_bundled_immunizer(candidate, resolve_model("tiny-ldm@1")).immunizer is None


def test_the_bundled_immunizer_attaches_where_the_target_latent_differs_in_its_last_bits():
    # One thread sums the encoder's convolutions in another order than two: another
    # z_target, another digest (as on another CPU), and still the bundle's generator.
    script = (
        "from photoimmune.sdk.targets import build_target; t = build_target('tiny-ldm@2'); "
        "print(t.base_digest, t.immunizer.target == t.base_digest)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "True"


@pytest.mark.parametrize("eps", ["8/255", "3/255"])
def test_one_pass_stays_within_eps_after_the_8_bit_projection(carried, photo, eps):
    result = immunize(photo, carried, method="amortized", eps=eps)
    assert result.max_abs_delta <= int(eps.split("/")[0])
    assert result.protections[0].steps == 0
    assert result.pixels.dtype == np.uint8 and result.pixels.shape == photo.shape


def test_the_delta_is_bounded_and_sized_like_the_photo(carried):
    x = torch.rand(2, 3, 300, 200)  # above the working size: computed small, upsampled
    delta = immunizer_delta(carried, x, eps=8 / 255)
    assert delta.shape == x.shape
    assert float(delta.abs().max()) <= 8 / 255 + 1e-7


def test_the_pass_in_reduced_precision_gives_the_float32_pass_s_levels():
    # Where bf16 is native the pass runs in it (fp32 elsewhere): whole 8-bit levels
    # must come out (almost) as float32's, and never past ε. Where tanh is steepest
    # one level spans a 1/8 change of G's output, which bf16 can move by two.
    from photoimmune.sdk.immunizer import load_generator

    target = build_target("tiny-ldm@3")
    x = pixels_to_tensor([sample_pixels("coffee.png", 128)])
    exact = 8 / 255 * torch.tanh(load_generator(target)(x))
    delta = immunizer_delta(target, x, eps=8 / 255)
    assert float(delta.abs().max()) <= 8 / 255 + 1e-7  # ε in float32
    levels, exact_levels = torch.round(delta * 255), torch.round(exact * 255)
    assert float((levels - exact_levels).abs().max()) <= 2
    assert float((levels != exact_levels).float().mean()) < 0.05


def test_the_encoder_attack_aims_at_the_signed_target_latent():
    # At the target's own size the loss is the distance to the published z_target,
    # not to a re-encoding of the target image: sign another latent and the loss follows.
    target = build_target("tiny-ldm@1", ref="acme/aim@1")
    z_name = target.encoder.z_target
    target._tensors[z_name] = torch.zeros_like(target.tensor(z_name))
    image = sample_pixels("coffee.png", 128)
    loss = immunize(image, target, steps=0, warm_start=False).protections[0].loss_before
    with torch.no_grad():
        latent = target.vae_encoder()(pixels_to_tensor([image]))
    assert float(loss) == pytest.approx(float(latent.pow(2).mean()), rel=1e-3)


def test_the_bundled_immunizer_cuts_the_loss_in_one_pass():
    from photoimmune.sdk.evaluate import same_eps_noise

    target = build_target("tiny-ldm@2")
    image = sample_pixels("coffee.png", 128)  # held out: never trained on
    protection = immunize(image, target, method="amortized").protections[0]
    noisy = same_eps_noise(image, "8/255", np.random.default_rng(0))
    # The loss of the noisy photo as it is (loss_before), with no perturbation added.
    noise = immunize(noisy, target, steps=0, warm_start=False).protections[0]
    assert float(protection.loss_after) < 0.95 * float(protection.loss_before)
    assert float(protection.loss_after) < 0.95 * float(noise.loss_before)


def test_warm_start_is_the_default_with_an_immunizer_and_can_be_turned_off(
    carried, plain, photo, monkeypatch
):
    import photoimmune.sdk.immunization as immunization

    calls = []
    real = immunization.combined_delta
    monkeypatch.setattr(
        immunization, "combined_delta", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    warm = immunize(photo, carried)
    assert calls and warm.protections[0].steps == 2  # the immunizer's finish_steps
    calls.clear()
    cold = immunize(photo, carried, warm_start=False, steps=3)
    assert not calls and cold.protections[0].steps == 3
    immunize(photo, plain, steps=1)  # no immunizer: plain PGD, no warm start asked
    assert not calls


def test_a_warm_start_refines_in_bf16_where_native_and_a_cold_run_stays_float32(
    carried, photo, monkeypatch
):
    from photoimmune.sdk.attacks.encoder import EncoderAttack
    from photoimmune.sdk.attacks.precision import fast_dtype

    seen: list[bool] = []
    real = EncoderAttack.loss
    monkeypatch.setattr(
        EncoderAttack,
        "loss",
        lambda self, x: seen.append(torch.is_autocast_enabled("cpu")) or real(self, x),
    )
    immunize(photo, carried)
    assert set(seen) == {fast_dtype("cpu") is not None}  # bf16 only where the CPU has it
    seen.clear()
    immunize(photo, carried, warm_start=False, steps=2)
    assert set(seen) == {False}


def test_a_cold_run_is_momentum_pgd_on_a_share_of_the_recommended_steps(plain, carried):
    from photoimmune.sdk.immunization import COLD_MOMENTUM, COLD_STEP_SHARE, choose_schedule

    recommended = plain.recommended_budget().steps
    cold = choose_schedule([plain])
    assert not cold.warm_start and cold.momentum == COLD_MOMENTUM
    assert cold.steps == math.ceil(recommended * COLD_STEP_SHARE) < recommended
    given = choose_schedule([plain], steps=7)
    assert (given.steps, given.warm_start, given.momentum) == (7, False, COLD_MOMENTUM)
    # The warm start's few steps refine; the diffusion and L2 attacks keep plain steps.
    assert choose_schedule([carried]).momentum == 0
    assert choose_schedule([plain], "diffusion").momentum == 0
    assert choose_schedule([plain], norm="l2").momentum == 0


def test_an_edit_trained_pass_starts_the_edit_attack_its_target_recommends(plain, photo):
    from photoimmune.sdk.descriptor import Budget
    from photoimmune.sdk.immunization import COLD_MOMENTUM, choose_schedule

    edit_first = (Budget(method="edit", eps="8/255", steps=20), *plain.budgets)
    recommends = plain.model_copy(update={"budgets": edit_first})
    torch.manual_seed(0)
    training = ImmunizerTraining(width=4, finish_steps=2, objective="edit")
    target = attach_immunizer(recommends, ImmunizerNet(4), training)
    default = choose_schedule([target])
    assert (default.budget.method, default.steps, default.warm_start) == ("edit", 2, True)
    # The pass starts only the attack it was trained for: the encoder attack runs cold.
    encoder = choose_schedule([target], "encoder")
    assert (encoder.warm_start, encoder.momentum) == (False, COLD_MOMENTUM)
    assert choose_schedule([target], "amortized").budget.method == "edit"
    (protection,) = immunize(photo, target, seed=0).protections
    assert (protection.method, protection.steps, protection.eps) == ("edit", 2, "8/255")
    assert float(protection.loss_after) < float(protection.loss_before)  # the edit moved


def test_a_model_folder_s_budgets_file_sets_its_published_recommendation(tmp_path):
    import shutil

    from photoimmune.sdk.targets import BUNDLED_BUDGETS

    v3 = build_target("tiny-ldm@3")
    assert v3.recommended_budget().method == "edit" and v3.immunizer.objective == "edit"
    assert v3.recommended_budget().resolution == 256  # photos up to 256 px at their own size
    assert v3.recommended_budget().full_steps_up_to == 128  # 20 of its 40 steps at 256 px
    assert build_target("tiny-ldm@3", recipe="checker").budgets == DEFAULT_BUDGETS
    folder = tmp_path / "model"
    shutil.copytree(resolve_model("tiny-ldm@1"), folder)
    (folder / BUNDLED_BUDGETS).write_text('[{"method": "diffusion", "eps": "4/255", "steps": 3}]')
    assert build_target(folder).recommended_budget().steps == 3
    (folder / BUNDLED_BUDGETS).write_text('[{"method": "paint", "eps": "4/255"}]')
    with pytest.raises(InputError, match="not a list of budgets"):
        build_target(folder)


def test_the_cold_default_reaches_photoguard_s_hundred_steps(plain):
    image = sample_pixels("coffee.png", 64)  # held out: never trained on
    default = immunize(image, plain, warm_start=False).protections[0]
    photoguard = immunize(image, plain, steps=100, warm_start=False, momentum=0.0).protections[0]
    assert default.steps < 100
    assert float(default.loss_after) <= 1.01 * float(photoguard.loss_after)


def test_an_immunizer_that_is_not_there_is_a_clear_error(plain, carried, photo):
    with pytest.raises(InputError, match="train-immunizer"):
        immunize(photo, plain, method="amortized")
    with pytest.raises(InputError, match="train-immunizer"):
        immunize(photo, [carried, plain], warm_start=True)
    with pytest.raises(InputError, match="--warm-start --steps"):
        immunize(photo, carried, method="amortized", steps=5)


def test_an_ensemble_combines_its_generators_then_runs_pgd(carried, photo):
    other = build_target("tiny-ldm@2")
    result = immunize(photo, [carried, other], steps=1)
    assert [p.steps for p in result.protections] == [1, 1]
    assert result.max_abs_delta <= 8


def test_training_is_quick_deterministic_and_binds_the_result(plain):
    small = ImmunizerTraining(steps=2, batch=2, crop=32, scales=(1.0, 2.0), width=4, seed=3)
    seen: list[float] = []
    first = train_immunizer(plain, small, progress=lambda s, n, loss: seen.append(loss))
    again = train_immunizer(plain, small)
    assert len(seen) == 2 and all(np.isfinite(seen))
    assert first.immunizer.target == plain.digest
    assert first.immunizer.weights == again.immunizer.weights  # same seed, same bytes
    with pytest.raises(InputError, match="steps"):
        train_immunizer(plain, ImmunizerTraining(steps=0))


def test_a_pass_trained_on_the_edit_objective_says_so_in_the_signed_spec(tmp_path, plain):
    small = ImmunizerTraining(steps=2, batch=2, crop=32, scales=(1.0,), width=4, seed=3)
    seen: list[float] = []
    edit = train_immunizer(
        plain, replace(small, objective="edit"), progress=lambda s, n, loss: seen.append(loss)
    )
    encoder = train_immunizer(plain, small)
    assert len(seen) == 2 and all(np.isfinite(seen))
    assert edit.immunizer.objective == "edit" and encoder.immunizer.objective == "encoder"
    assert edit.immunizer.weights != encoder.immunizer.weights
    # Signed with the descriptor; an encoder pass's JSON stays as it was before the field.
    assert b'"objective":"edit"' in edit.canonical_json()
    assert b"objective" not in encoder.canonical_json()
    assert load_target(save_target(edit, tmp_path / "rel").parent).immunizer.objective == "edit"


def test_a_fine_tune_starts_from_the_given_pass_and_records_it(plain, carried):
    from photoimmune.sdk.immunizer import training_record

    # lr 0: the training steps leave the start's weights exactly as they were
    still = ImmunizerTraining(steps=1, batch=1, crop=32, scales=(1.0,), width=4, lr=0.0)
    tuned = train_immunizer(plain, still, start=carried)
    assert tuned.immunizer.weights.sha256 == carried.immunizer.weights.sha256
    assert tuned.immunizer.target == plain.digest
    record = training_record(still, 1.0, [0.5], carried)
    assert record["start"] == carried.immunizer.weights.sha256
    assert training_record(still, 1.0, [0.5])["start"] is None
    with pytest.raises(InputError, match="width 8"):
        train_immunizer(plain, replace(still, width=8), start=carried)
    with pytest.raises(InputError, match="start must carry"):
        train_immunizer(plain, still, start=plain)


def test_softened_training_crops_keep_the_picture_and_lose_its_fine_detail():
    from photoimmune.sdk.immunizer import _training_crops
    from photoimmune.sdk.models.train_tiny import load_photos

    photos = load_photos(["astronaut.png"])

    def crops(soften: float) -> torch.Tensor:
        cfg = ImmunizerTraining(batch=4, scales=(1.0,), soften=soften)
        return _training_crops(cfg, photos, 64, torch.Generator().manual_seed(5))

    sharp, soft = crops(0.0), crops(1.0)
    detail = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean().item()  # noqa: E731
    assert detail(soft) < 0.7 * detail(sharp)  # blurred by a 2-4x down-and-up resize
    assert (soft.mean((1, 2, 3)) - sharp.mean((1, 2, 3))).abs().max() < 0.02  # same crops
    assert torch.equal(soft, torch.round(soft * 255) / 255)  # still 8-bit levels


def test_a_registry_publishes_and_verifies_the_immunizer(tmp_path, carried):
    from photoimmune.registry.admin import add_vendor, init_registry, open_registry, publish
    from photoimmune.registry.client import RegistryClient
    from photoimmune.registry.errors import TamperedTargetError
    from photoimmune.registry.keys import load_signer, write_key

    paths = init_registry(tmp_path / "reg")
    registry = open_registry(tmp_path / "reg")
    acme = write_key(tmp_path / "acme.pem")
    add_vendor(registry, "acme", [acme.public_key], 1, [load_signer(paths.keys / "targets.pem")])
    save_target(carried, tmp_path / "release")
    publish(registry, "acme", tmp_path / "release", [acme])
    mirror = tmp_path / "mirror"
    registry.service.export(mirror)

    def client(cache: str) -> RegistryClient:
        return RegistryClient(mirror, trusted_root=paths.trusted_root, cache_dir=tmp_path / cache)

    fetched = client("c1").get("acme/quick@1")
    assert fetched.digest == carried.digest
    assert fetched._immunizer_weights == carried._immunizer_weights
    # A mirror that swaps the weights is caught by the signed hash.
    (weights,) = Path(mirror).rglob(f"*{carried.immunizer.weights.path}")
    weights.write_bytes(b"\0" * len(weights.read_bytes()))
    with pytest.raises(TamperedTargetError):
        client("c2").get("acme/quick@1")


def test_cli_refuses_bad_immunizer_options_with_exit_2(tmp_path, capsys):
    from photoimmune.cli import main
    from photoimmune.sdk.io import save_image

    photo = tmp_path / "photo.png"
    save_image(sample_pixels("chelsea.png", 32), photo)
    out = str(tmp_path / "out")
    assert main(["immunize", str(photo), "-o", out, "--method", "fast"]) == 2
    assert "amortized" in capsys.readouterr().err  # the choices are named
    # A checker target is not the one the bundled generator was trained for.
    args = ["immunize", str(photo), "-o", out, "--recipe", "checker", "--no-sign"]
    assert main([*args, "--method", "amortized"]) == 2
    assert "train-immunizer" in capsys.readouterr().err
    train = ["targets", "train-immunizer", "-o", str(tmp_path / "rel")]
    assert main([*train, "--model", "no-such-model"]) == 2
    assert main([*train, "--model", "tiny-ldm@1", "--eps", "300/255"]) == 2
    assert main([*train, "--model", "tiny-ldm@1", "--steps", "0"]) == 2
    assert main([*train, "--model", "tiny-ldm@1", "--objective", "pixels"]) == 2
    assert "--objective" in capsys.readouterr().err
    assert main([*train, "--model", "tiny-ldm@1", "--start", str(tmp_path / "none")]) == 2
    assert "not a target folder" in capsys.readouterr().err
    assert not (tmp_path / "rel").exists()


def test_cli_trains_an_immunizer_and_immunizes_with_it(tmp_path):
    from photoimmune.cli import main

    release = tmp_path / "rel"
    small = ["--steps", "1", "--batch", "1", "--width", "4", "--finish-steps", "1"]
    train = ["targets", "train-immunizer", "--model", "tiny-ldm@1", "-o", str(release)]
    assert main([*train, "--ref", "acme/quick@1", *small]) == 0
    trained = load_target(release)
    assert trained.immunizer is not None and trained.immunizer.finish_steps == 1
    assert json.loads((release / "training.json").read_text())["config"]["steps"] == 1
    bound = trained.bind_model("tiny-ldm@1")  # a target read from a folder names no weights
    result = immunize(sample_pixels("chelsea.png", 32), bound, method="amortized")
    assert result.protections[0].target_digest == trained.digest == bound.digest
