"""The diffusers plugin: attach, check, each policy, each pipeline family, detection.

Real components throughout: the bundled tiny-ldm pipelines, a local TUF registry
where the vendors published their targets, c2pa manifests signed with
development keys, and the real encoder attack (few steps, to stay fast).
SDXL and Flux pipelines are tiny random test doubles built from config
(tests/tiny_pipelines.py), since their real checkpoints can't be downloaded here.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
import zlib
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from PIL import Image

import photoimmune.diffusers_plugin as plugin
from photoimmune.registry.admin import add_vendor, local_registry, open_registry, publish
from photoimmune.registry.keys import load_signer, write_key
from photoimmune.registry.service import RegistryPaths
from photoimmune.sdk import InputError, immunize, load_image, read_manifest, sign_pixels
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.protection import Protection
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import build_target, save_target

from .helpers import edit, protection
from .tiny_pipelines import SIZE, tiny_flux, tiny_sdxl

V1, V2 = "photoimmune/tiny-ldm@1", "photoimmune/tiny-ldm@2"
HONOURING = "photoimmune/tiny-ldm@4"  # v2's weights as a cooperative @4 (not the bundled v4)
FAST = {"steps": 8}  # re-immunization iterations in tests: the mechanics, not the strength


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return init_keys(tmp_path_factory.mktemp("keys") / "dev")


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory):
    """A registry where photoimmune published tiny-ldm@1 and @2, and 'acme' its test pipelines."""
    folder = tmp_path_factory.mktemp("registry") / "reg"
    local_registry(folder, ["tiny-ldm@1", "tiny-ldm@2"])
    paths = RegistryPaths(folder)
    acme_key = write_key(folder / "vendor-keys" / "acme.pem")
    add_vendor(
        open_registry(folder),
        "acme",
        [acme_key.public_key],
        1,
        [load_signer(paths.keys / "targets.pem")],
    )
    for name, pipe in _acme_pipelines().items():
        saved = folder.parent / name
        pipe.save_pretrained(saved)
        target = build_target(saved, ref=f"acme/{name}@1")
        save_target(target, folder.parent / f"{name}-release")
        publish(open_registry(folder), "acme", folder.parent / f"{name}-release", [acme_key])
    return folder


def _acme_pipelines() -> dict:
    return {"tiny-sdxl": tiny_sdxl(), "tiny-flux": tiny_flux(), "tiny-ip2p": _ip2p()}


def _ip2p():
    """InstructPix2Pix on the bundled text encoder and VAE, with a random 8-channel UNet."""
    base = load_pipeline("tiny-ldm@1")
    torch.manual_seed(0)
    config = dict(base.unet.config)
    config["in_channels"] = 8  # the image's latent joins the noisy latent
    unet = UNet2DConditionModel.from_config(config)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=unet,
        scheduler=base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def photo():
    return sample_pixels("chelsea.png", 128)


@pytest.fixture(scope="module")
def v1_signed(registry_dir, keys, photo, tmp_path_factory):
    """chelsea immunized by a publisher against tiny-ldm@1 (16/255, 100 steps) and signed."""
    client = local_registry(registry_dir, [])
    result = immunize(photo, client.get(V1), eps="16/255", steps=100, seed=0)
    path = tmp_path_factory.mktemp("photos") / "chelsea-v1.png"
    path.write_bytes(sign_pixels(result.pixels, result.protections, keys.signer("publisher")))
    return path


def _enable(pipe, registry_dir, keys, **kwargs):
    settings = {"signer": keys.signer("vendor"), "trust": keys.ca_cert, **FAST, **kwargs}
    pipe.enable_immunization_check(registry_dir, **settings)
    return pipe


@pytest.fixture
def v2_pipe(registry_dir, keys):
    return _enable(load_pipeline("tiny-ldm@2"), registry_dir, keys)


# -- attaching ---------------------------------------------------------------------------


def test_enable_keeps_class_identity_and_touches_no_other_instance(registry_dir, keys, tmp_path):
    pipe, other = load_pipeline("tiny-ldm@2"), load_pipeline("tiny-ldm@2")
    base = type(pipe)
    _enable(pipe, registry_dir, keys)
    _enable(pipe, registry_dir, keys, policy="warn")  # idempotent: settings replaced
    assert isinstance(pipe, StableDiffusionImg2ImgPipeline) and type(pipe) is not base
    assert type(pipe).__name__ == base.__name__ and type(pipe).__mro__[1] is base
    assert type(other) is base and "_immunization_check" not in other.__dict__
    assert pipe._immunization_check.policy == "warn"
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionImg2ImgPipeline"
    pipe.disable_immunization_check()
    pipe.disable_immunization_check()
    assert type(pipe) is base and not hasattr(pipe, "immunization_report")


def test_disabled_pipeline_edits_without_checking(registry_dir, keys, v1_signed):
    pipe = _enable(load_pipeline("tiny-ldm@2"), registry_dir, keys)
    pipe.disable_immunization_check()
    plain = load_pipeline("tiny-ldm@2")
    image = Image.open(v1_signed)
    assert np.array_equal(edit(pipe, image), edit(plain, image))


# -- the forward-compatibility path ----------------------------------------------------


def test_outdated_image_is_reimmunized_signed_and_chained(
    v2_pipe, registry_dir, keys, v1_signed, tmp_path
):
    before = v1_signed.read_bytes()
    v2_pipe._immunization_check.output_dir = tmp_path / "out"
    edit(v2_pipe, str(v1_signed))
    report = v2_pipe.immunization_report
    (check,) = report.images
    assert report.model == V2 and report.pipeline == "StableDiffusionImg2ImgPipeline"
    assert (check.status, check.action, check.verdict) == ("outdated", "reimmunized", "trusted")
    assert check.protected_against == (V1,) and check.protection.target_ref == V2
    assert float(check.protection.loss_after) < float(check.protection.loss_before)
    assert v1_signed.read_bytes() == before  # the received file is never touched
    signed = read_manifest(check.signed_image, trust=keys.trust_anchor_pem())
    assert signed.ok and signed.covers(V2) and "vendor" in (signed.signer or "")
    assert [[p.target_ref for p in a.protections] for a in signed.history] == [[V1], [V1, V2]]
    received = load_image(v1_signed).pixels.astype(int)
    delta = np.abs(load_image(check.signed_image).pixels.astype(int) - received)
    assert delta.max() <= 8  # the target's budget, 8/255, on top of what was received
    assert (tmp_path / "out").exists() and Path(check.saved_to).read_bytes() == check.signed_image

    # Fed back, the re-immunized image is covered and passes untouched...
    edit(v2_pipe, check.signed_image)
    (again,) = v2_pipe.immunization_report.images
    assert (again.status, again.action) == ("covered", "passed")
    assert again.protected_against == (V1, V2)
    # ... and a v1 pipeline finds the carried-over v1 protection: no second hop, no extra ε.
    assert [p.target_ref for p in signed.assertion.protections] == [V1, V2]
    v1_pipe = _enable(load_pipeline("tiny-ldm@1"), registry_dir, keys)
    edit(v1_pipe, check.signed_image)
    assert v1_pipe.immunization_report.images[0].status == "covered"


def test_a_release_that_honours_an_older_target_passes_its_images_untouched(
    keys, v1_signed, tmp_path
):
    """v2's weights republished as a cooperative @4 whose target honours v1's: the v1 image
    is covered (no re-immunization, no added ε); an image protected against nothing it
    honours is still outdated."""
    folder = tmp_path / "reg"
    client = local_registry(folder, ["tiny-ldm@1"])
    honouring = build_target("tiny-ldm@2", ref=HONOURING, honours=[client.get(V1)])
    save_target(honouring, tmp_path / "v4")
    vendor_key = load_signer(folder / "vendor-keys" / "photoimmune.pem")
    publish(open_registry(folder), "photoimmune", tmp_path / "v4", [vendor_key])
    pipe = _enable(load_pipeline("tiny-ldm@2"), folder, keys)  # newest wins: it runs as @4
    plain = edit(load_pipeline("tiny-ldm@2"), load_image(v1_signed).to_pil())
    assert np.array_equal(edit(pipe, str(v1_signed)), plain)
    (check,) = pipe.immunization_report.images
    assert pipe.immunization_report.model == HONOURING
    assert (check.status, check.action, check.protected_against) == ("covered", "passed", (V1,))
    other = sign_pixels(load_image(v1_signed).pixels, [_claim(V1)], keys.signer("publisher"))
    edit(pipe, other)
    assert pipe.immunization_report.images[0].status == "outdated"


def test_the_default_setup_trusts_its_own_output_and_reports_progress(registry_dir, v1_signed):
    # Issue 31 #7: no signer=, no trust=: the fallback (development) key signs, and its CA
    # is trusted like a KeyDir's, so the pipeline's own output fed back is not re-immunized
    # (another ε on top). The publisher's CA is not trusted here: v1_signed is 'unverified'.
    steps: list[tuple[int, int]] = []
    pipe = load_pipeline("tiny-ldm@2")
    pipe.enable_immunization_check(
        registry_dir, progress=lambda step, total, loss: steps.append((step, total)), **FAST
    )
    edit(pipe, str(v1_signed))
    (first,) = pipe.immunization_report.images
    assert (first.status, first.action) == ("unverified", "reimmunized")
    assert steps[:2] == [(1, 8), (2, 8)] and (8, 8) in steps  # the attack's steps, reported
    reported = len(steps)
    edit(pipe, first.signed_image)
    (again,) = pipe.immunization_report.images
    assert (again.status, again.action, again.verdict) == ("covered", "passed", "trusted")
    assert len(steps) == reported  # nothing ran the second time


@pytest.mark.slow
@pytest.mark.parametrize(("method", "eps"), [("diffusion", "16/255"), ("edit", "8/255")])
def test_reimmunizes_with_the_diffusion_or_edit_attack_end_to_end(
    registry_dir, keys, v1_signed, method, eps
):
    """method=...: the plugin runs PhotoGuard's diffusion attack, or the edit attack,
    through the running version's pipeline, with that method's recommended budget
    (16/255 for diffusion; v2 recommends none for edit: PhotoGuard's 8/255)."""
    pipe = _enable(load_pipeline("tiny-ldm@2"), registry_dir, keys, method=method, steps=2)
    edit(pipe, str(v1_signed))
    (check,) = pipe.immunization_report.images
    assert (check.action, check.protection.method) == ("reimmunized", method)
    assert (check.protection.eps, check.protection.steps) == (eps, 2)
    assert float(check.protection.loss_after) < float(check.protection.loss_before)
    signed = read_manifest(check.signed_image, trust=keys.trust_anchor_pem())
    assert signed.ok and signed.covers(V2)
    assert [p.method for p in signed.assertion.protections] == ["encoder", method]
    received = load_image(v1_signed).pixels.astype(int)
    budget = int(eps.split("/")[0])
    assert np.abs(load_image(check.signed_image).pixels.astype(int) - received).max() <= budget


def test_an_unknown_reimmunization_method_is_refused(registry_dir, keys):
    with pytest.raises(InputError, match="unknown method 'pid'"):
        _enable(load_pipeline("tiny-ldm@2"), registry_dir, keys, method="pid")


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_reimmunizes_inside_no_grad_and_inference_mode(v2_pipe, v1_signed, mode):
    """Callers wrap pipelines in no_grad or inference_mode; the attack still gets gradients."""
    with mode():
        edit_image(v2_pipe, v1_signed, "a cat", steps=2)
    assert v2_pipe.immunization_report.images[0].action == "reimmunized"


def test_a_claim_against_another_target_digest_is_not_coverage(v2_pipe, keys, photo):
    """Trusted and bound, but made against a target this registry does not publish for v2."""
    signed = sign_pixels(photo, [_claim(V2)], keys.signer("publisher"))
    edit(v2_pipe, signed)
    assert v2_pipe.immunization_report.images[0].status == "outdated"


def test_checked_pipeline_pickles_and_copies_as_its_plain_class(v2_pipe):
    base = type(v2_pipe).__mro__[1]
    for copy in (pickle.loads(pickle.dumps(v2_pipe)), deepcopy(v2_pipe)):
        assert type(copy) is base and "_immunization_check" not in copy.__dict__
    assert "_immunization_check" in v2_pipe.__dict__  # the original keeps its check


def test_calls_without_an_image_do_not_need_the_model(registry_dir, keys):
    pipe = _enable(tiny_flux("kontext", seed=7), registry_dir, keys)  # weights nobody published
    pipe(
        prompt="a cat",
        image=None,
        num_inference_steps=1,
        height=SIZE,
        width=SIZE,
        max_area=SIZE * SIZE,  # Kontext scales any size to this area (default 1024²)
        max_sequence_length=16,
        output_type="np",
    )
    report = pipe.immunization_report
    assert report.images == () and report.model is None


def test_weights_claimed_by_two_vendors_must_be_named(tmp_path):
    from photoimmune.registry import AmbiguousReleaseError

    folder = tmp_path / "reg"
    local_registry(folder, ["tiny-ldm@2"])
    copier = write_key(folder / "vendor-keys" / "copier.pem")
    targets_key = load_signer(RegistryPaths(folder).keys / "targets.pem")
    add_vendor(open_registry(folder), "copier", [copier.public_key], 1, [targets_key])
    save_target(build_target("tiny-ldm@2", ref="copier/lookalike@9"), tmp_path / "copy")
    publish(open_registry(folder), "copier", tmp_path / "copy", [copier])
    pipe = load_pipeline("tiny-ldm@2")
    pipe.enable_immunization_check(local_registry(folder, []), trust=None)
    with pytest.raises(AmbiguousReleaseError, match=r"copier/lookalike.*photoimmune/tiny-ldm"):
        edit(pipe, Image.fromarray(sample_pixels("coffee.png", 128)))


def test_covered_image_reaches_the_pipeline_unchanged(v2_pipe, registry_dir, keys, v1_signed):
    edit(v2_pipe, str(v1_signed))
    covered = v2_pipe.immunization_report.images[0].signed_image
    plain = load_pipeline("tiny-ldm@2")
    assert np.array_equal(edit(v2_pipe, covered), edit(plain, load_image(covered).to_pil()))


# -- policies ----------------------------------------------------------------------------


def test_refuse_raises_naming_the_image_and_its_protection(registry_dir, keys, v1_signed):
    pipe = _enable(load_pipeline("tiny-ldm@2"), registry_dir, keys, policy="refuse")
    with pytest.raises(plugin.ImmunizedImageError, match=r"chelsea-v1.*tiny-ldm@1.*refuse") as err:
        edit(pipe, Image.open(v1_signed))
    assert err.value.check.action == "refused" and err.value.check.status == "outdated"
    assert pipe.immunization_report.images[0].action == "refused"


@pytest.mark.parametrize(("policy", "action"), [("warn", "warned"), ("allow", "allowed")])
def test_warn_and_allow_edit_the_image_as_given(registry_dir, keys, v1_signed, policy, action):
    pipe = _enable(load_pipeline("tiny-ldm@2"), registry_dir, keys, policy=policy)
    plain = load_pipeline("tiny-ldm@2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        edited = edit(pipe, Image.open(v1_signed))
    assert pipe.immunization_report.images[0].action == action
    assert any(issubclass(w.category, plugin.ImmunizationWarning) for w in caught) == (
        policy == "warn"
    )
    assert np.array_equal(edited, edit(plain, Image.open(v1_signed)))


def test_clean_photo_passes_untouched(v2_pipe):
    clean = Image.fromarray(sample_pixels("coffee.png", 128))
    edit(v2_pipe, clean)
    (check,) = v2_pipe.immunization_report.images
    assert (check.status, check.action, check.verdict) == ("clean", "passed", "unavailable")
    assert check.detection_score > plugin.detection.DEFAULT_THRESHOLD


def test_unregistered_weights_are_named(registry_dir, keys, photo):
    pipe = load_pipeline("tiny-ldm@2")
    torch.manual_seed(1)
    pipe.unet = UNet2DConditionModel.from_config(pipe.unet.config)  # weights nobody published
    _enable(pipe, registry_dir, keys)
    with pytest.raises(plugin.UnregisteredModelError, match="match no release"):
        edit(pipe, Image.fromarray(photo))


# -- manifests that do not hold up -----------------------------------------------------


def test_forged_manifest_claiming_this_version_is_not_believed(v2_pipe, photo, tmp_path):
    forger = init_keys(tmp_path / "forger")  # a CA the vendor does not trust
    claim = _claim(V2)
    forged = sign_pixels(photo, [claim], forger.signer("publisher"))
    edit(v2_pipe, forged)
    (check,) = v2_pipe.immunization_report.images
    assert (check.status, check.verdict, check.action) == ("unverified", "untrusted", "reimmunized")
    assert check.protection.target_ref == V2


def test_tampered_manifest_is_invalid_and_reimmunized(v2_pipe, v1_signed):
    data = bytearray(v1_signed.read_bytes())
    at = data.find(b"tiny-ldm@1")
    data[at : at + 10] = b"tiny-ldm@2"  # rewrite the claim inside the signed manifest
    chunk = data.find(b"caBX") - 4  # then mend the PNG chunk's CRC, as a forger would
    end = chunk + 8 + int.from_bytes(data[chunk : chunk + 4], "big")
    data[end : end + 4] = zlib.crc32(data[chunk + 4 : end]).to_bytes(4, "big")
    edit(v2_pipe, bytes(data))
    (check,) = v2_pipe.immunization_report.images
    assert (check.status, check.verdict, check.action) == ("unverified", "invalid", "reimmunized")


def test_manifest_for_other_pixels_is_not_believed(v2_pipe, v1_signed):
    signed = load_image(v1_signed)
    other = sample_pixels("astronaut.png", 128)
    edit(v2_pipe, dataclasses.replace(signed, pixels=other))  # a loader result, other pixels
    (check,) = v2_pipe.immunization_report.images
    assert (check.status, check.verdict) == ("unverified", "transplanted")
    edited = Image.open(v1_signed)
    edited.paste((255, 0, 0), (0, 0, 8, 8))  # opened from the signed file, then changed
    edit(v2_pipe, edited)
    assert v2_pipe.immunization_report.images[0].verdict == "modified"


# -- detection without a manifest -------------------------------------------------------


def test_stripped_manifest_is_detected_and_reimmunized(v2_pipe, v1_signed):
    stripped = Image.fromarray(load_image(v1_signed).pixels)  # a plain re-save drops C2PA
    edit(v2_pipe, stripped)
    (check,) = v2_pipe.immunization_report.images
    assert (check.status, check.verdict, check.action) == ("detected", "unavailable", "reimmunized")
    assert check.detection_score <= plugin.detection.DEFAULT_THRESHOLD
    assert check.detected_against in (V1, V2)
    manifest = read_manifest(check.signed_image, trust=None)
    assert manifest.assertion.covers(V2) and len(manifest.history) == 1  # no parent to chain


# v6's own target carries v3's mark (v3's protections are its own), and is read first
@pytest.mark.parametrize(
    ("release", "against"), [("tiny-ldm@4", "tiny-ldm@3"), ("tiny-ldm@6", "tiny-ldm@6")]
)
def test_a_stripped_copy_carrying_a_mark_the_release_honours_is_covered(
    tmp_path, keys, release, against
):
    """No manifest, but the pixels carry tiny-ldm@3's mark, which the bundled v4 honours
    (its gate reads it) and v6 too (v3's encoder and UNet: v3's protections are its own):
    nothing to add. A clean photo is told apart."""
    folder = tmp_path / "reg"
    local_registry(folder, ["tiny-ldm@3", release])
    photo = sample_pixels("coffee.png", 128)
    protected = immunize(photo, build_target("tiny-ldm@3"), method="amortized", seed=0).pixels
    pipe = _enable(load_pipeline(release), folder, keys)
    edit(pipe, [Image.fromarray(protected), Image.fromarray(photo)])
    marked, clean = pipe.immunization_report.images
    assert (marked.status, marked.action) == ("covered", "passed")
    assert marked.detected_against == f"photoimmune/{against}" and marked.signed_image is None
    assert (clean.status, clean.action, clean.detected_against) == ("clean", "passed", None)


def test_a_detector_measures_how_far_a_latent_is_from_its_target(tiny_models):
    from photoimmune.sdk.targets import build_target

    detector = plugin.detection.LatentDetector(build_target(tiny_models[0]))
    gray = np.full((64, 64, 3), 128, np.uint8)  # the gray target image, 8-bit
    near, far = detector.distances([gray, sample_pixels("coffee.png", 64)])
    assert 0 <= near < 0.01 * far


# -- input forms -------------------------------------------------------------------------


def test_list_input_is_checked_per_image(v2_pipe, v1_signed):
    clean = sample_pixels("coffee.png", 128)
    edits = edit(v2_pipe, [Image.open(v1_signed), Image.fromarray(clean)])
    assert len(edits) == 2
    first, second = v2_pipe.immunization_report.images
    assert (first.index, first.action, second.index, second.action) == (
        0,
        "reimmunized",
        1,
        "passed",
    )


@pytest.mark.parametrize(
    "form", ["uint8", "float", "tensor01", "tensor11", "batch", "list of batches"]
)
def test_arrays_and_tensors_go_back_in_their_own_form(form):
    from photoimmune.diffusers_plugin.inputs import read_argument

    pixels = sample_pixels("coffee.png", 32)
    unit = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
    value = {
        "uint8": pixels,
        "float": pixels.astype(np.float32) / 255,
        "tensor01": unit,
        "tensor11": unit * 2 - 1,
        "batch": torch.stack([unit, unit.flip(-1)]),
        "list of batches": [torch.stack([unit, unit]), unit[None]],
    }[form]
    argument = read_argument("image", value)
    assert np.array_equal(argument.images[0].pixels, pixels)
    rebuilt = argument.rebuild([im.to_input(im.pixels) for im in argument.images])
    if isinstance(value, list):
        assert [r.shape for r in rebuilt] == [v.shape for v in value]
        rebuilt, value = torch.cat(rebuilt), torch.cat(value)
    assert type(rebuilt) is type(value) and rebuilt.shape == value.shape
    assert float(abs(_as_float(rebuilt) - _as_float(value)).max()) < 1e-2


def _as_float(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.float()
    return torch.from_numpy(np.array(value, dtype=np.float32))


def test_a_batch_has_one_range():
    """diffusers reads a tensor batch as [-1, 1] if any value is negative; so must the check."""
    from photoimmune.diffusers_plugin.inputs import read_argument

    batch = torch.stack([torch.full((3, 8, 8), -1.0), torch.full((3, 8, 8), 0.5)])
    second = read_argument("image", batch).images[1]
    assert int(second.pixels[0, 0, 0]) == 191  # 0.5 in [-1, 1], not 128


def test_latents_are_not_mistaken_for_pixels(registry_dir, keys):
    from photoimmune.diffusers_plugin.inputs import is_latents, read_argument

    assert is_latents(torch.zeros(1, 4, 16, 16)) and is_latents(
        [torch.zeros(3, 8, 8), torch.zeros(4, 2, 2)]
    )
    assert not is_latents(torch.zeros(1, 3, 16, 16)) and read_argument("image", None) is None
    pipe = _enable(load_pipeline("tiny-ldm@2"), registry_dir, keys, policy="refuse")
    with pytest.raises(plugin.ImmunizationCheckError, match="latents"):
        pipe("a cat", image=torch.zeros(1, 4, 16, 16), num_inference_steps=1, output_type="np")


# -- pipeline families -------------------------------------------------------------------


def _claim(ref: str) -> Protection:
    """A claim against ``ref`` made for a target digest no registry publishes."""
    return protection(ref, target_digest="1" * 64)


FAMILIES = {
    "sd-inpaint": (
        lambda: load_pipeline("tiny-ldm@2", "inpaint"),
        V2,
        128,
        {"mask_image": Image.new("L", (128, 128), 255)},
    ),
    "instruct-pix2pix": (_ip2p, "acme/tiny-ip2p@1", 128, {}),
    "sdxl-img2img": (tiny_sdxl, "acme/tiny-sdxl@1", SIZE, {}),
    "sdxl-inpaint": (
        lambda: tiny_sdxl("inpaint"),
        "acme/tiny-sdxl@1",
        SIZE,
        {"mask_image": Image.new("L", (SIZE, SIZE), 255)},
    ),
    "flux-img2img": (tiny_flux, "acme/tiny-flux@1", SIZE, {}),
    "flux-kontext": (
        lambda: tiny_flux("kontext"),
        "acme/tiny-flux@1",
        SIZE,
        {"max_area": SIZE * SIZE, "_auto_resize": False},
    ),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_recognises_itself_and_reimmunizes(family, registry_dir, keys, photo):
    build, ref, size, extra = FAMILIES[family]
    pipe = _enable(build(), registry_dir, keys, steps=2)
    pixels = np.asarray(Image.fromarray(photo).resize((size, size)))
    older = ref.rsplit("@", 1)[0] + "@0"
    signed = sign_pixels(pixels, [_claim(older)], keys.signer("publisher"))
    kwargs = {"height": size, "width": size, "max_sequence_length": 16} if "flux" in family else {}
    if family == "instruct-pix2pix":
        out = pipe("make it a painting", image=signed, num_inference_steps=2, output_type="np")
    else:
        strength = {} if "kontext" in family else {"strength": 0.5}
        out = pipe(
            prompt="a cat",
            image=signed,
            num_inference_steps=2,
            output_type="np",
            **strength,
            **kwargs,
            **extra,
        )
    assert out.images.shape[-1] == 3
    (check,) = pipe.immunization_report.images
    assert pipe.immunization_report.model == ref
    assert (check.status, check.action) == ("outdated", "reimmunized")
    assert check.protected_against == (older,) and check.protection.target_ref == ref


def test_control_and_adapter_images_are_not_the_edited_image():
    base = load_pipeline("tiny-ldm@1")
    controlnet = ControlNetModel.from_unet(base.unet)
    parts = {k: v for k, v in base.components.items() if k != "image_encoder"}
    txt2img = StableDiffusionControlNetPipeline(**parts, controlnet=controlnet)
    img2img = StableDiffusionControlNetImg2ImgPipeline(**parts, controlnet=controlnet)
    assert plugin.edited_argument_names(txt2img) == ()  # `image` is the control image there
    assert plugin.edited_argument_names(img2img) == ("image",)
    assert plugin.edited_argument_names(base) == ("image",)
