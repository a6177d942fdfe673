"""The PGD engine on small analytic losses: budgets, schedules, masks, early stop, lattice."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from photoimmune.sdk import InputError
from photoimmune.sdk.attacks import (
    JpegApprox,
    PGDConfig,
    RandomBlur,
    RandomResize,
    default_eot,
    loss_and_grad,
    parse_budget,
    run_pgd,
    working_size,
)
from photoimmune.sdk.attacks.budget import budget_levels, format_budget


def _image(seed: int = 0, shape=(2, 3, 16, 16)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=gen).float() / 255


def _to_white(x: torch.Tensor) -> torch.Tensor:
    """Loss that wants every pixel at 1.0: PGD should push up to the budget."""
    return (x - 1).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("eps_levels", [4, 8, 16])
def test_linf_budget_holds_on_the_8bit_lattice(eps_levels):
    x = _image()
    res = run_pgd(_to_white, x, PGDConfig(eps=eps_levels / 255, steps=15))
    levels = torch.round(res.x_adv * 255)
    assert torch.allclose(res.x_adv * 255, levels, atol=1e-4)  # on the lattice
    assert (
        int((levels - torch.round(x * 255)).abs().max()) == eps_levels
    )  # uses the budget, no more
    assert bool((res.loss_after < res.loss_before).all())


def test_budget_that_is_not_whole_levels_rounds_down():
    x = _image()
    res = run_pgd(_to_white, x, PGDConfig(eps=0.03, steps=10))  # 7.65 levels
    assert int((torch.round(res.x_adv * 255) - torch.round(x * 255)).abs().max()) == 7


def test_l2_radius_holds():
    x = _image()
    res = run_pgd(_to_white, x, PGDConfig(eps=0.5, norm="l2", steps=20))
    norms = (res.x_adv - x).flatten(1).norm(dim=1)
    assert bool((norms <= 0.5 + 1e-6).all())
    assert bool((norms > 0.3).all())  # it moved a real distance
    assert bool((res.loss_after < res.loss_before).all())


def test_schedules():
    linear = PGDConfig(eps=0.3, steps=11, schedule="linear")
    assert linear.step_at(0) == pytest.approx(0.1)
    assert linear.step_at(10) == pytest.approx(0.001)  # decays to 1/100, as PhotoGuard
    cosine = PGDConfig(eps=0.3, steps=11, schedule="cosine")
    assert cosine.step_at(5) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))
    assert PGDConfig(eps=0.3, schedule="constant").step_at(7) == pytest.approx(0.1)


def test_early_stop_at_loss_target():
    x = _image()
    target = float(_to_white(x).min()) * 0.99  # reachable within one step or two
    res = run_pgd(_to_white, x, PGDConfig(eps=16 / 255, steps=50, loss_target=target))
    assert res.steps_run < 50


def test_momentum_still_descends_and_respects_budget():
    x = _image()
    res = run_pgd(_to_white, x, PGDConfig(eps=8 / 255, steps=20, momentum=0.9))
    assert bool((res.loss_after < res.loss_before).all())
    assert float((res.x_adv - x).abs().max()) <= 8 / 255 + 1e-6


def test_mask_leaves_masked_out_pixels_untouched():
    x = _image()
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8] = 1
    res = run_pgd(_to_white, x, PGDConfig(eps=8 / 255, steps=10), mask=mask)
    assert torch.equal(res.x_adv[..., 8:], x[..., 8:])
    assert float((res.x_adv[..., :8] - x[..., :8]).abs().max()) > 0


def test_best_iterate_is_kept_and_seeded_runs_repeat():
    x = _image()
    cfg = PGDConfig(eps=8 / 255, steps=10, eot=default_eot(), eot_samples=2)
    a = run_pgd(_to_white, x, cfg, generator=torch.Generator().manual_seed(1))
    b = run_pgd(_to_white, x, cfg, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.x_adv, b.x_adv)
    assert len(a.history) == 10


def test_quantised_finish_refines_on_the_lattice():
    # A loss that prefers pixels exactly 3.5 levels up: rounding alone can't
    # reach it, the ±1-level refinement keeps the result on whole levels.
    x = _image()
    goal = x + 3.5 / 255
    res = run_pgd(
        lambda v: (v - goal).pow(2).flatten(1).mean(1), x, PGDConfig(eps=8 / 255, steps=10)
    )
    assert torch.allclose(res.x_adv * 255, torch.round(res.x_adv * 255), atol=1e-4)
    delta = torch.round(res.x_adv * 255) - torch.round(x * 255)
    room = torch.round(x * 255) <= 250  # pixels not clipped by white
    assert float((delta[room] - 3.5).abs().mean()) <= 0.6  # the nearest levels, 3 or 4


def test_transforms_are_differentiable_and_shape_preserving():
    x = _image(shape=(1, 3, 20, 28)).requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    for transform in (JpegApprox(), RandomResize(), RandomBlur()):
        y = transform(x, gen)
        assert y.shape == x.shape
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert float(grad.abs().sum()) > 0


def test_jpeg_approximation_tracks_real_jpeg():
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 60 + 100).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=75, subsampling=0)
    real = np.asarray(Image.open(buf)).astype(np.float32) / 255
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    approx = JpegApprox((75, 75))(x, torch.Generator()).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert (
        np.abs(approx - real).mean()
        < 0.5 * np.abs(x[0].permute(1, 2, 0).numpy() - real).mean() + 0.01
    )


def test_budget_parsing():
    assert parse_budget("8/255") == Fraction(8, 255)
    assert parse_budget(0.03) == Fraction(3, 100)
    assert format_budget(parse_budget("16/255")) == "16/255"
    assert budget_levels(parse_budget("0.03")) == 7
    with pytest.raises(InputError, match="pixel scale"):
        parse_budget("2")
    with pytest.raises(InputError, match="not a number"):
        parse_budget("eight")
    assert parse_budget("8", upper=None) == 8  # an L2 radius may exceed 1


def test_working_size_scales_the_short_side_and_rounds_to_8():
    assert working_size(1000, 1500, 512) == (512, 768)
    assert working_size(128, 128, 128) == (128, 128)
    assert working_size(60, 90, 128) == (64, 88)


def test_loss_split_into_terms_gives_the_same_loss_and_gradient():
    # Terms are back-propagated one at a time (memory of one term); the sum must not change.
    x, delta = _image(1), torch.full((2, 3, 16, 16), 0.01)
    cfg, gen = PGDConfig(), torch.Generator()
    whole = loss_and_grad(lambda v: [_to_white(v) + v.mean((1, 2, 3))], x, delta, cfg, gen)
    split = loss_and_grad(lambda v: [_to_white(v), v.mean((1, 2, 3))], x, delta, cfg, gen)
    assert torch.allclose(whole[0], split[0]) and torch.allclose(whole[1], split[1])


def test_bf16_where_it_is_emulated_warns_and_fast_dtype_avoids_it():
    """On CPUs without AVX-512-BF16/AMX bf16 is 10-300x slower: asking for it warns."""
    import warnings

    from photoimmune.sdk.attacks import PrecisionWarning, bf16_is_native, fast_dtype

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.full((1, 3, 8, 8), 0.5)

    def loss(v):
        return conv(v).pow(2).flatten(1).mean(1)

    native = bf16_is_native("cpu")
    assert fast_dtype("cpu") == (torch.bfloat16 if native else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_pgd(loss, x, PGDConfig(steps=2, autocast=torch.bfloat16))
        run_pgd(loss, x, PGDConfig(steps=2, autocast=fast_dtype("cpu")))
    emulated = [w for w in caught if issubclass(w.category, PrecisionWarning)]
    assert len(emulated) == (0 if native else 1)
    if emulated:
        assert "fast_dtype" in str(emulated[0].message)


def test_apgd_checkpoints_follow_croce_and_hein():
    from photoimmune.sdk.attacks.pgd import _APGDControl

    assert _APGDControl._checkpoints(100) == {22, 41, 57, 70, 80, 87, 93, 99}
    assert PGDConfig(eps=0.1, schedule="apgd").first_step == pytest.approx(0.2)


def test_apgd_halves_its_step_into_an_interior_optimum():
    """Sign steps of a fixed size orbit an interior optimum; halving closes in on it."""
    x = _image(shape=(3, 3, 16, 16))
    eps = 16 / 255
    gen = torch.Generator().manual_seed(3)
    # Each image's optimum lies strictly inside the ball, off any step lattice.
    centre = x + (torch.rand(x.shape, generator=gen) * 1.4 - 0.7) * eps
    centre = centre.clamp(0, 1)

    def loss(v):
        return (v - centre).pow(2).flatten(1).mean(1)

    def run(schedule):
        cfg = PGDConfig(eps=eps, steps=100, schedule=schedule, quantize=False)
        return run_pgd(loss, x, cfg, generator=torch.Generator().manual_seed(0))

    apgd, constant = run("apgd"), run("constant")
    assert float((apgd.x_adv - x).abs().max()) <= eps + 1e-6
    # A constant step can get no closer than about its own size; APGD halves past it.
    assert bool((apgd.loss_after < constant.loss_after / 10).all())
    assert bool((apgd.loss_after < apgd.loss_before * 1e-3).all())


@pytest.mark.filterwarnings("ignore::photoimmune.sdk.attacks.PrecisionWarning")
def test_exact_steps_finish_in_float32_and_report_exact_losses():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).requires_grad_(False)
    x = _image(2, shape=(1, 3, 16, 16))
    under_autocast = []

    def loss(v):
        if v.requires_grad:  # the PGD iterations, not the scoring passes
            under_autocast.append(torch.is_autocast_enabled("cpu"))
        return conv(v).pow(2).flatten(1).mean(1)

    cfg = PGDConfig(steps=6, exact_steps=2, autocast=torch.bfloat16, quant_steps=1)
    res = run_pgd(loss, x, cfg)
    # Six iterations, then one lattice refinement, which runs as exactly as the end.
    assert under_autocast == [True] * 4 + [False] * 3
    with torch.no_grad():
        exact = loss(res.x_adv)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = loss(res.x_adv).float()
    assert torch.equal(res.loss_after, exact) and not torch.equal(exact, rounded)
    # A target every loss meets: the early stop waits for the first float32 iteration.
    for exact_steps, stops_after in ((0, 1), (2, 5)):
        cfg = PGDConfig(steps=6, exact_steps=exact_steps, autocast=torch.bfloat16, loss_target=1e9)
        assert run_pgd(loss, x, cfg).steps_run == stops_after
    with pytest.raises(InputError, match="exact_steps"):
        PGDConfig(steps=3, exact_steps=4)
