"""Hardening of the diffusers plugin's settings and inputs (``pipe.enable_immunization_check``).

1. A ``signer=`` of the wrong type (a key's path, a number) was ignored: the development
   key signed re-immunized images and outputs as if the vendor had.
2. A wrong ``model=`` let images covered for the declared release reach other weights.
3. Settings were checked only on first use, or never: a bad budget, step count, seed,
   threshold, output folder, resolver URL or flag failed after the work, or misbehaved.
4. A float array in 0..255, or a uint8 tensor, was read as an all-white, clean picture.
5. With ``model=`` and ``sign_outputs``, a registry gone after enable failed a text-to-image
   call after its picture was made (naming the output's agent asked the registry).

Real components: the bundled tiny-ldm@2 and @3, a local registry, development keys.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

import photoimmune.diffusers_plugin  # noqa: F401 (gives pipelines enable_immunization_check)
from photoimmune.registry.admin import local_registry, open_registry
from photoimmune.registry.client import RegistryClient
from photoimmune.registry.server import create_app
from photoimmune.registry.service import RegistryPaths
from photoimmune.sdk import InputError, read_manifest, sign_pixels
from photoimmune.sdk.errors import OutputPathError
from photoimmune.sdk.keys import KeyDir, init_keys
from photoimmune.sdk.manifest import GENERATED
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.samples import sample_pixels

from .helpers import LoopbackServer, edit, protection

V2, V3 = "photoimmune/tiny-ldm@2", "photoimmune/tiny-ldm@3"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with tiny-ldm@2 and @3, development keys, and a photo whose trusted
    manifest claims a protection against @2's published target."""
    root = tmp_path_factory.mktemp("plugin-hardening")
    client = local_registry(root / "reg", ["tiny-ldm@2", "tiny-ldm@3"])
    keys = init_keys(root / "keys")
    claim = protection(V2, target_digest=client.get(V2).digest)
    pixels = sample_pixels("chelsea.png", 32)
    signed = sign_pixels(pixels, [claim], keys.signer("publisher"))
    return root / "reg", keys, signed


@pytest.fixture(scope="module")
def plain_v3():
    return load_pipeline("tiny-ldm@3")


@pytest.fixture
def v3_pipe(plain_v3):
    """The module's tiny-ldm@3 pipeline, its check undone after each test."""
    yield plain_v3
    plain_v3.disable_immunization_check()


def _enable(pipe, world, **settings):
    registry_dir, keys, _ = world
    defaults = {"signer": keys.signer("vendor"), "trust": keys.ca_cert, "steps": 1}
    pipe.enable_immunization_check(settings.pop("registry", registry_dir), **defaults | settings)
    return pipe


# -- 1. signer= ------------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["keys/vendor.key", 5])
def test_a_signer_of_the_wrong_type_is_refused_not_replaced_by_the_development_key(
    v3_pipe, world, tmp_path, signer
):
    with pytest.raises(InputError, match=r"signer=.*ManifestSigner\.from_pem\(key, cert\)"):
        _enable(v3_pipe, world, signer=signer)
    assert "_immunization_check" not in v3_pipe.__dict__  # not enabled
    assert not (tmp_path / "keys").exists()  # no development key was made (conftest's folder)


def test_a_key_folder_without_keys_is_refused_at_enable(v3_pipe, world, tmp_path):
    with pytest.raises(InputError, match="no signing keys there"):
        _enable(v3_pipe, world, signer=KeyDir(tmp_path / "empty"))


# -- 2. model= -------------------------------------------------------------------------


def test_a_declared_release_whose_vae_is_not_the_pipelines_is_refused_on_every_path(v3_pipe, world):
    """@3's weights declared as @2: a photo covered for @2 was passed unchecked."""
    _, _, signed = world
    clean = Image.fromarray(sample_pixels("coffee.png", 32))
    for image in (signed, clean):  # the covered-manifest path, and the detection path
        pipe = _enable(v3_pipe, world, model=V2)
        with pytest.raises(InputError, match=re.escape(f"its VAE is not {V2}'s")):
            edit(pipe, image)


def test_the_right_declared_release_still_checks_the_claim(v3_pipe, world):
    _, _, signed = world
    pipe = _enable(v3_pipe, world, model=V3, policy="allow")
    edit(pipe, signed)
    (check,) = pipe.immunization_report.images
    assert (check.status, check.action, check.protected_against) == ("outdated", "allowed", (V2,))


# -- 3. the other settings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("eps", "abc"),
        ("eps", 0),
        ("eps", 8),
        ("steps", -1),
        ("steps", "2"),
        ("seed", "x"),
        ("detection_threshold", "hi"),
        ("detection_threshold", math.nan),
        ("detection_threshold", -5),
        ("detection_threshold", True),
        ("sign_outputs", "no"),
        ("detect", "no"),
        ("resolvers", ["not a url"]),
        ("resolvers", 5),
        ("trust", 5),
        ("registry", 5),
        ("model", 5),
        ("progress", 5),
        ("polciy", "refuse"),
    ],
)
def test_a_bad_setting_is_refused_by_name_at_enable(v3_pipe, world, setting, value):
    with pytest.raises(InputError, match=re.escape(f"{setting}=")):
        _enable(v3_pipe, world, **{setting: value})
    assert "_immunization_check" not in v3_pipe.__dict__


def test_the_unknown_setting_message_lists_the_allowed_ones(v3_pipe, world):
    with pytest.raises(InputError, match=r"unknown setting polciy=.*policy=.*sign_outputs="):
        _enable(v3_pipe, world, polciy="refuse")


def test_a_key_folder_as_trust_is_refused_naming_its_ca(v3_pipe, world):
    _, keys, _ = world
    with pytest.raises(InputError, match=r"trust=.*KeyDir\.ca_cert"):
        _enable(v3_pipe, world, trust=keys)


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(v3_pipe, world, tmp_path):
    taken = tmp_path / "taken"
    taken.write_bytes(b"mine")
    with pytest.raises(OutputPathError, match=r"output_dir .*is a file"):
        _enable(v3_pipe, world, output_dir=taken)
    assert taken.read_bytes() == b"mine"


def test_an_output_dir_taken_after_enable_fails_with_a_photoimmune_error(v3_pipe, world, tmp_path):
    """Was FileExistsError from mkdir, after the re-immunization."""
    _, _, signed = world
    pipe = _enable(v3_pipe, world, output_dir=tmp_path / "out")
    (tmp_path / "out").write_bytes(b"mine")
    with pytest.raises(OutputPathError, match="is a file"):
        edit(pipe, signed)
    assert (tmp_path / "out").read_bytes() == b"mine"


def test_good_settings_are_kept(v3_pipe, world):
    pipe = _enable(
        v3_pipe,
        world,
        resolvers="http://127.0.0.1:9/",  # one URL alone is a list of one, not of characters
        detection_threshold=0.5,
        sign_outputs=False,
        eps="4/255",
        seed=3,
    )
    check = pipe._immunization_check
    assert [r.url for r in check.resolvers] == ["http://127.0.0.1:9"]
    assert (check.detection_threshold, check.sign_outputs, check.eps, check.seed) == (
        0.5,
        False,
        "4/255",
        3,
    )


# -- 4. value ranges -----------------------------------------------------------------


def test_arrays_and_tensors_in_another_range_are_refused_naming_the_range(v3_pipe, world):
    pixels = sample_pixels("chelsea.png", 32)
    pipe = _enable(v3_pipe, world, detect=False)
    with pytest.raises(InputError, match=r"values from 0 to \d+.*floats in \[0, 1\]"):
        edit(pipe, pixels.astype(np.float32))
    uint8_tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()
    with pytest.raises(InputError, match=r"torch\.uint8.*\[0, 1\] or \[-1, 1\]"):
        edit(pipe, uint8_tensor)
    assert pipe.immunization_report is None  # refused before any check was reported
    edit(pipe, pixels.astype(np.float32) / 255)  # the range diffusers reads still passes
    (check,) = pipe.immunization_report.images
    assert (check.source, check.action) == ("<array>", "passed")


# -- 5. the registry gone after enable -----------------------------------------------


def test_a_registry_outage_after_enable_still_signs_a_generated_picture(plain_v3, world, tmp_path):
    registry_dir, keys, _ = world
    server = LoopbackServer(create_app(open_registry(registry_dir).service))
    server.start()
    client = RegistryClient(
        server.url,
        trusted_root=RegistryPaths(registry_dir).trusted_root,
        cache_dir=tmp_path / "cache",
    )
    pipe = StableDiffusionPipeline(**plain_v3.components)
    _enable(pipe, world, registry=client, model=V3, sign_outputs=True)
    server.stop()  # nothing was asked of it yet: the first question meets the outage
    out = pipe(
        "a photo of a cat",
        num_inference_steps=1,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    assert out.images.shape == (1, 32, 32, 3)
    (signed,) = pipe.immunization_report.outputs
    assert signed.software_agent == "StableDiffusionPipeline"  # the release could not be asked
    assert signed.action == "c2pa.created"  # a text-to-image call: no input
    report = read_manifest(signed.signed_image, trust=keys.ca_cert)
    assert report.validation_state == "Trusted" and report.digital_source_type == GENERATED
