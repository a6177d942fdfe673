"""Protection marks: kept inside ε, found after JPEG, absent from clean photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from photoimmune.sdk import InputError, immunize
from photoimmune.sdk.descriptor import MarkSpec
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.mark import apply_marks, mark_pattern, mark_score
from photoimmune.sdk.models.honour import jpeg
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import build_target

MARK = MarkSpec(seed=3)
PHOTOS = ("chelsea.png", "coffee.png", "camera.png", "coins.png", "brick.png", "page.png")


def _photos(size: int = 128) -> torch.Tensor:
    return pixels_to_tensor([sample_pixels(name, size) for name in PHOTOS])


def test_the_pattern_is_the_seeds_and_the_same_at_every_call():
    a, b = mark_pattern(MARK, 33, 20), mark_pattern(MarkSpec(seed=3), 33, 20)
    assert a.shape == (1, 1, 33, 20) and torch.equal(a, b)
    assert not torch.equal(a, mark_pattern(MarkSpec(seed=4), 33, 20))
    # cells of 2 x 2 pixels
    assert torch.equal(a[..., 0:32:2, 0:20:2], a[..., 1:33:2, 1:21:2][..., :16, :10])


def test_a_mark_stays_inside_the_budget_on_8_bit_levels_and_out_of_the_mask():
    x = _photos(64)
    gen = torch.Generator().manual_seed(0)
    x_adv = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * 8 / 255).clamp(0, 1) * 255
    x_adv = x_adv.round() / 255
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32] = 1
    marked = apply_marks(x, x_adv, [MARK], 8 / 255, mask)
    levels = (marked - x) * 255
    assert float(levels.abs().max()) <= 8 + 1e-4
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert torch.equal(marked[..., 32:], x_adv[..., 32:])  # outside the mask: as attacked
    assert apply_marks(x, x_adv, [], 8 / 255) is x_adv


def test_marked_photos_score_far_above_clean_and_noisy_ones_even_after_jpeg():
    x = _photos()
    gen = torch.Generator().manual_seed(1)
    noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * 8 / 255
    noisy = ((x + noise).clamp(0, 1) * 255).round() / 255
    marked = apply_marks(x, noisy, [MARK], 8 / 255)  # same-ε noise as the "attack"
    clean = torch.cat([x, noisy, jpeg(x), jpeg(noisy)])
    assert float(mark_score(clean, MARK).abs().max()) < 5
    assert float(mark_score(marked, MARK).min()) > 8
    assert float(mark_score(jpeg(marked), MARK).min()) > 6
    assert float(mark_score(marked, MarkSpec(seed=4)).abs().max()) < 5  # another key


def test_immunize_adds_the_targets_mark_and_records_the_saved_images_loss():
    target = build_target("tiny-ldm@3")
    assert target.mark == MarkSpec(seed=3, cell=2, amplitude="2/255")
    photo = sample_pixels("chelsea.png", 128)
    result = immunize(photo, target, method="amortized", seed=0)
    assert result.max_abs_delta <= 8
    assert float(mark_score(pixels_to_tensor(result.pixels), target.mark)) > 8
    assert float(mark_score(pixels_to_tensor(photo), target.mark)) < 5
    protection = result.protections[0]
    assert float(protection.loss_after) < float(protection.loss_before)
    # An L2 budget sets no room aside per pixel: no mark.
    l2 = immunize(photo, target, method="encoder", norm="l2", eps="1.0", steps=1, seed=0)
    assert float(mark_score(pixels_to_tensor(l2.pixels), target.mark)) < 5


def test_a_mark_is_signed_with_the_target_and_left_out_when_absent(tmp_path):
    plain = build_target("tiny-ldm@2")
    assert plain.mark is None and b'"mark"' not in plain.canonical_json()
    marked = plain.model_copy(update={"mark": MARK})
    assert b'"mark"' in marked.canonical_json() and marked.digest != plain.digest


@pytest.mark.parametrize("text", ['{"seed": -1}', '{"cell": 2}', '{"seed": 1, "amplitude": "2"}'])
def test_a_bad_mark_file_says_what_a_mark_needs(tmp_path, text):
    import shutil

    from photoimmune.sdk.models import resolve_model

    folder = tmp_path / "model"
    shutil.copytree(resolve_model("tiny-ldm@1"), folder)
    (folder / "mark.json").write_text(text)
    with pytest.raises(InputError, match="needs a seed"):
        build_target(folder)


def test_the_score_is_about_unit_normal_on_pictures_without_the_mark():
    gen = np.random.default_rng(0)
    scores = [
        float(mark_score(pixels_to_tensor(_photo_crop(gen)), MarkSpec(seed=int(seed))))
        for seed in range(40)
    ]
    assert 0.5 < float(np.std(scores)) < 1.6 and abs(float(np.mean(scores))) < 0.6


def _photo_crop(gen: np.random.Generator) -> np.ndarray:
    photo = sample_pixels(PHOTOS[int(gen.integers(len(PHOTOS)))])
    top = int(gen.integers(photo.shape[0] - 96))
    left = int(gen.integers(photo.shape[1] - 96))
    return np.ascontiguousarray(photo[top : top + 96, left : left + 96])
