"""Regression tests for a hardening probe of the core SDK API: immunize(), Protection,
sign_image / read_manifest and the tensor helpers.

Protections that protect nothing (an all-zero mask, an L2 budget that rounds back to the
original pixels, an empty list, a record out of its rules) are refused instead of being
signed as trusted; bad arguments are refused with an InputError naming the parameter,
before any model loads; ``trust=`` takes what the plugin's takes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from photoimmune.sdk.attacks.pgd import PGDConfig, PGDResult
from photoimmune.sdk.descriptor import Budget
from photoimmune.sdk.errors import ImageLoadError, InputError, UnknownModelError
from photoimmune.sdk.immunization import (
    ImmunizationResult,
    _check_changed,
    _group_results,
    immunize,
)
from photoimmune.sdk.io import encode_image, load_image, pixels_to_tensor, tensor_to_pixels
from photoimmune.sdk.keys import KeyDir, SigningKeyError, init_keys
from photoimmune.sdk.manifest import read_manifest, sign_image, sign_pixels
from photoimmune.sdk.protection import Protection
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import build_target

from .helpers import protection


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> KeyDir:
    return init_keys(tmp_path_factory.mktemp("k") / "keys")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_pixels("chelsea.png", 32)


@pytest.fixture(scope="module")
def signed(keys, photo) -> bytes:
    return sign_pixels(photo, [protection()], keys.signer())


# -- 1. protections that protect nothing ------------------------------------------------


def test_an_all_zero_mask_is_refused_before_any_model_loads(photo, tmp_path):
    # A missing model folder as the target: reaching build_target would say so instead.
    with pytest.raises(InputError, match="mask selects no pixel") as caught:
        immunize(photo, str(tmp_path / "no-model"), steps=1, mask=np.zeros((32, 32)))
    assert not isinstance(caught.value, UnknownModelError)


def test_an_l2_budget_that_changes_no_pixel_is_refused_and_a_larger_one_protects(photo):
    with pytest.raises(InputError, match="changed no pixel") as caught:
        immunize(photo, "tiny-ldm@1", steps=2, norm="l2")  # 8/255 over 32x32x3 values
    assert "norm='linf'" in str(caught.value) and "larger eps" in str(caught.value)
    result = immunize(photo, "tiny-ldm@1", steps=1, norm="l2", eps="1")
    assert result.max_abs_delta > 0 and result.protections[0].norm == "l2"


def test_a_flat_saturated_photo_left_unchanged_is_named_with_advice_that_can_help():
    # The attack rarely leaves such a photo unchanged (its random start moves it), so
    # the refusal is checked on a result as the attack would hand it over.
    white = np.full((8, 8, 3), 255, np.uint8)
    unchanged = ImmunizationResult(white, white, [protection()], 0.1, source="<array>")
    applied = Budget(method="encoder", eps="8/255", steps=10)
    with pytest.raises(InputError) as caught:
        _check_changed(unchanged, applied, "images[1] (<array>)")
    said = str(caught.value)
    assert said.startswith("images[1] (<array>): ") and "all-white" in said
    assert "inside [0, 255]" in said and "more steps" not in said
    cat = sample_pixels("chelsea.png", 8)
    textured = ImmunizationResult(cat, cat, [protection()], 0.1, source="cat.png")
    with pytest.raises(InputError, match=r"^cat\.png: .*larger eps or more steps"):
        _check_changed(textured, applied, "cat.png")


@pytest.mark.parametrize("overflowed", [math.inf, math.nan])
def test_a_loss_that_overflowed_is_an_input_error_advising_another_autocast(photo, overflowed):
    # float16 autocast overflows past 65504; the losses are given as it leaves them.
    group = [load_image(photo)]
    target = build_target("tiny-ldm@1")
    x = pixels_to_tensor([photo])
    outcome = PGDResult(x, torch.tensor([1.0]), torch.tensor([overflowed]), steps_run=1)
    applied = Budget(method="encoder", eps="8/255", steps=1)
    with pytest.raises(InputError) as caught:
        _group_results(group, [target], applied, outcome, ([[1.0]], [[overflowed]]), 0.1)
    said = str(caught.value)
    assert "overflowed" in said and str(target.ref) in said
    assert "autocast=None" in said and "torch.bfloat16" in said


def test_signing_no_protection_at_all_is_refused(keys, photo):
    png = encode_image(photo, "PNG")
    single = protection()
    for wrong, said in (
        ([], "an empty list"),
        (None, "a NoneType"),
        (single, "a Protection"),
        ("photoimmune/tiny-ldm@1", "a str"),
    ):
        with pytest.raises(InputError, match=f"protections: got {said}"):
            sign_image(png, wrong, keys.signer())
    with pytest.raises(InputError, match="is not a Protection"):
        sign_image(png, [single.model_dump()], keys.signer())
    with pytest.raises(InputError, match="non-empty list"):  # refused before encoding
        sign_pixels(photo, [], keys.signer())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"target_ref": ""}, "target_ref"),
        ({"target_ref": "Acme/Model@1"}, "target_ref"),
        ({"eps": "banana"}, "eps='banana'"),
        ({"eps": "2"}, "eps='2'"),  # over the pixel range under L∞
        ({"eps": "0.001"}, "below 1/255"),
        ({"loss_before": "nan"}, "loss_before"),
        ({"loss_after": "x"}, "loss_after"),
        ({"loss_before": "inf"}, "loss_before"),
    ],
)
def test_a_protection_out_of_its_rules_is_refused_naming_the_field(changes, field):
    # A record model's refusal, as the manifest reader expects (it reads "invalid").
    with pytest.raises(ValidationError, match="Protection") as caught:
        protection(**changes)
    assert field in str(caught.value)


def test_a_protection_keeps_what_immunize_and_older_versions_wrote():
    # An L2 radius may exceed the pixel range; losses may be negative (the edit loss).
    wide = protection(norm="l2", eps="1275/255", loss_before="-2.5", loss_after="-3")
    assert wide.eps == "1275/255" and wide.loss_cut == pytest.approx(-0.2)
    assert protection(eps="0.03").eps == "0.03"


def test_a_zero_loss_before_has_a_defined_cut():
    assert protection(loss_before="0", loss_after="0.5").loss_cut == 0.0


def test_a_malformed_record_in_a_manifest_reads_as_invalid_not_as_an_error(keys, photo):
    # What an older or a forged signer could have written: built without validation.
    fields = {**protection().model_dump(), "target_ref": "", "loss_before": "nan"}
    forged = sign_pixels(photo, [Protection.model_construct(**fields)], keys.signer())
    report = read_manifest(forged, trust=keys.trust_anchor_pem())
    assert report.verdict == "invalid" and "malformed" in report.explanation
    assert not report.ok


# -- 2. trust= takes what the plugin's takes -----------------------------------------------


def test_trust_takes_pem_bytes_text_paths_and_lists(keys, signed, tmp_path):
    pem = keys.trust_anchor_pem()
    for trust in (
        pem,
        pem.decode(),
        str(keys.ca_cert),
        Path(keys.ca_cert),
        [keys.ca_cert, pem],
    ):
        assert read_manifest(signed, trust=trust).verdict == "trusted", trust
    path = tmp_path / "signed.png"
    path.write_bytes(signed)
    assert load_image(path, verify=True, trust=str(keys.ca_cert)).manifest.verdict == "trusted"


def test_a_bad_trust_anchor_is_named_not_blamed_on_the_image(keys, signed, tmp_path):
    with pytest.raises(SigningKeyError, match="trust anchor bytes: not a PEM CA certificate"):
        read_manifest(signed, trust=[b"junk", keys.trust_anchor_pem()])
    missing = tmp_path / "ca.pem"
    with pytest.raises(SigningKeyError, match=str(missing)):
        read_manifest(signed, trust=missing)
    with pytest.raises(InputError, match="trust: got a int"):
        read_manifest(signed, trust=5)


# -- 3. immunize()'s arguments, refused by name before any model loads ------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"method": "pgd"}, "method='pgd'"),
        ({"method": "ENCODER"}, "method='ENCODER'"),
        ({"norm": "l1"}, "norm='l1'"),
        ({"norm": "LINF"}, "norm='LINF'"),
        ({"seed": "a"}, "seed='a'"),
        ({"seed": None}, "seed=None"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"seed": 2**70}, f"seed={2**70}"),
        ({"steps": 1.5}, "steps=1.5"),
        ({"steps": "2"}, "steps='2'"),
        ({"steps": -1}, "steps=-1"),
        ({"steps": 10**12}, f"steps={10**12}"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"bogus": 1}, "bogus="),
        ({"eot": True, "eot_samples": 0}, "eot_samples=0"),
        ({"mask": [[1] * 32] * 32}, "mask: got a list"),
        ({"progress": 5}, "progress=5"),
        ({"autocast": "bf16"}, "autocast='bf16'"),
        ({"schedule": "zigzag"}, "schedule='zigzag'"),
        ({"momentum": -5}, "momentum=-5"),
        ({"weights": [1.0]}, "weights="),  # one target: nothing to weigh
    ],
)
def test_a_bad_argument_is_refused_naming_it_before_any_model_loads(
    photo, tmp_path, options, named
):
    with pytest.raises(InputError) as caught:
        immunize(photo, str(tmp_path / "no-model"), **{"steps": 1, **options})
    assert named in str(caught.value)
    assert not isinstance(caught.value, UnknownModelError)  # the target was never built


def test_exact_steps_are_checked_against_the_callers_steps(photo, tmp_path):
    # Past the argument checks, a missing model folder is what stops it.
    with pytest.raises(UnknownModelError):
        immunize(photo, str(tmp_path / "no-model"), steps=200, exact_steps=150)
    with pytest.raises(InputError, match="exact_steps=4 must lie between 0 and steps=3"):
        immunize(photo, str(tmp_path / "no-model"), steps=3, exact_steps=4)


def test_the_pgd_keywords_immunize_accepts_are_listed(photo, tmp_path):
    with pytest.raises(InputError, match="unknown keyword bogus=") as caught:
        immunize(photo, str(tmp_path / "no-model"), bogus=1)
    assert "schedule" in str(caught.value) and "momentum" in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_device_this_machine_lacks_is_refused(photo, tmp_path):
    with pytest.raises(InputError, match="no CUDA device"):
        immunize(photo, str(tmp_path / "no-model"), device="cuda")


@pytest.mark.parametrize("targets", [[], None, 5, ["tiny-ldm@1", 5]])
def test_targets_that_are_none_are_refused(photo, targets):
    with pytest.raises(InputError, match="targets"):
        immunize(photo, targets, steps=1)


@pytest.mark.parametrize("weights", [[math.nan, 1.0], [1.0], "ab", [True, 1.0]])
def test_ensemble_weights_must_be_one_finite_number_per_target(photo, tmp_path, weights):
    missing = [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(InputError, match="weights=") as caught:
        immunize(photo, missing, steps=1, weights=weights)
    assert not isinstance(caught.value, UnknownModelError)


def test_a_model_folder_without_a_vae_or_an_empty_name_is_named(photo, tmp_path):
    folder = tmp_path / "half-a-model"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline"}))
    with pytest.raises(UnknownModelError, match=r"no vae/config\.json"):
        immunize(photo, str(folder), steps=1)
    with pytest.raises(UnknownModelError, match="an empty model name was given"):
        immunize(photo, "", steps=1)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"schedule": "zigzag"}, "schedule='zigzag'"),
        ({"norm": "l1"}, "norm='l1'"),
        ({"steps": 1.5}, "steps=1.5"),
        ({"steps": -1}, "steps=-1"),
        ({"step_size": 0}, "step_size=0"),
        ({"final_step_fraction": 2}, "final_step_fraction=2"),
        ({"eps": math.nan}, "eps=nan"),
        ({"eot_samples": 0}, "eot_samples=0"),
        ({"quant_steps": -1}, "quant_steps=-1"),
        ({"loss_target": math.inf}, "loss_target=inf"),
        ({"autocast": torch.float64}, "autocast=torch.float64"),
    ],
)
def test_pgd_config_refuses_settings_it_would_misread(options, named):
    with pytest.raises(InputError) as caught:
        PGDConfig(**options)
    assert named in str(caught.value)


# -- 4. sign_image / read_manifest arguments -------------------------------------------------


def test_signing_refuses_a_path_or_a_signer_that_is_none(keys, photo, tmp_path):
    png = encode_image(photo, "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(png)
    with pytest.raises(InputError, match=r"data: got a str.*read_bytes"):
        sign_image(str(path), [protection()], keys.signer())
    with pytest.raises(InputError, match="parent: got a str"):
        sign_image(png, [protection()], keys.signer(), parent=str(path))
    with pytest.raises(InputError, match="signer: got a NoneType"):
        sign_image(png, [protection()], None)
    with pytest.raises(InputError, match=r'signer: got a KeyDir.*keys.signer\("publisher"\)'):
        sign_image(png, [protection()], keys)


def test_reading_refuses_a_path_and_pixels_that_are_not_the_files(signed, photo, tmp_path):
    with pytest.raises(InputError, match="data: got a str"):
        read_manifest(str(tmp_path / "a.png"))
    for pixels in (photo.astype(float), photo[..., 0]):
        with pytest.raises(InputError, match=r"pixels: give the file's decoded uint8"):
            read_manifest(signed, pixels=pixels)
    assert read_manifest(bytearray(signed)).verdict == "untrusted"  # bytes-like still read


# -- 5. the tensor helpers and load_image's limits ---------------------------------------------


def test_tensor_to_pixels_refuses_what_it_would_misread():
    with pytest.raises(InputError, match=r"dtype torch\.uint8"):
        tensor_to_pixels(torch.full((3, 2, 2), 200, dtype=torch.uint8))
    with pytest.raises(InputError, match="tensor: got a ndarray"):
        tensor_to_pixels(np.zeros((3, 2, 2)))
    with pytest.raises(InputError, match="value_range='bogus'"):
        tensor_to_pixels(torch.zeros(3, 2, 2), value_range="bogus")
    with pytest.raises(InputError, match="value_range='bogus'"):
        pixels_to_tensor(np.zeros((2, 2, 3), np.uint8), value_range="bogus")


def test_load_image_refuses_bad_limits_and_an_empty_path(photo):
    with pytest.raises(InputError, match="max_pixels='x'"):
        load_image(photo, max_pixels="x")
    with pytest.raises(InputError, match="max_bytes=None"):
        load_image(photo, max_bytes=None)
    with pytest.raises(InputError, match=r"max_pixels=0: give a whole number, 1 or more \(default"):
        load_image(photo, max_pixels=0)
    with pytest.raises(ImageLoadError, match="an empty path was given"):
        load_image("")
