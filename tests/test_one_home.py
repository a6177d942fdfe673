"""Each rule has one home: the SDK and the CLI share names, choices and patterns, never copies."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from photoimmune.cli import checks
from photoimmune.sdk import descriptor
from photoimmune.sdk.assertion import ImmunizationAssertion
from photoimmune.sdk.errors import InputError
from photoimmune.sdk.jobs.planning import subscribed_models
from photoimmune.sdk.protection import Protection
from photoimmune.sdk.refs import ModelRef, check_model_name
from photoimmune.sdk.scorecard import Scorecard

LONG = "a" * 65


@pytest.mark.parametrize(
    "name",
    ["Photoimmune/tiny-ldm", "photoimmune/Tiny-LDM", f"photoimmune/{LONG}", f"{LONG}/tiny-ldm"],
)
def test_a_subscription_the_sdk_refuses_the_cli_refuses_with_the_same_message(name):
    with pytest.raises(InputError) as sdk:
        subscribed_models([name])
    with pytest.raises(InputError) as cli:
        checks.subscriptions([f"photoimmune/tiny-ldm,{name}"])
    assert str(cli.value) == f"--models: {sdk.value}"
    assert "lowercase" in str(sdk.value) and "1-64" in str(sdk.value)


@pytest.mark.parametrize(
    ("name", "says"),
    [("photoimmune/tiny-ldm@2", "not a version"), ("tiny-ldm", "with its vendor"), ("", "no")],
)
def test_the_cli_adds_only_its_option_to_the_sdk_message(name, says):
    with pytest.raises(InputError, match=says) as sdk:
        subscribed_models([name])
    with pytest.raises(InputError) as cli:
        checks.subscriptions([name])
    assert str(cli.value) == f"--models: {sdk.value}"


@pytest.mark.parametrize(
    "name", ["photoimmune/tiny-ldm", "a/b", "acme-labs/sd_1.5", f"{LONG[:64]}/x", "A/b", "a/b/c"]
)
def test_a_model_name_is_a_model_ref_without_its_version(name):
    vendor, _, model = name.partition("/")
    try:
        ModelRef(vendor=vendor, model=model, version="1")
        as_ref = True
    except ValueError:
        as_ref = False
    try:
        check_model_name(name)
        as_name = True
    except InputError:
        as_name = False
    assert as_name == as_ref


def test_the_cli_choices_are_the_sdks():
    from photoimmune.sdk.immunization import ImmunizeMethod
    from photoimmune.sdk.models.pipelines import PipelineKind

    assert checks.METHODS is descriptor.METHODS
    assert checks.IMMUNIZE_METHODS is descriptor.IMMUNIZE_METHODS
    assert checks.RECIPES is descriptor.RECIPES
    assert ImmunizeMethod is descriptor.ImmunizeMethod
    assert PipelineKind is descriptor.PipelineKind
    # The tuples list their Literals ("image" is what --target-image sets, never a --recipe).
    assert typing.get_args(descriptor.Method) == descriptor.METHODS
    assert typing.get_args(descriptor.ImmunizeMethod) == descriptor.IMMUNIZE_METHODS
    assert typing.get_args(descriptor.Recipe) == (*descriptor.RECIPES, "image")


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (descriptor.WeightFingerprints, "vae"),
        (descriptor.TensorFile, "sha256"),
        (descriptor.ImmunizerSpec, "target"),
        (Protection, "target_digest"),
        (ImmunizationAssertion, "pixels_sha256"),
        (Scorecard, "target_digest"),
    ],
)
def test_every_digest_field_has_the_one_pattern(model, field):
    assert model.model_json_schema()["properties"][field]["pattern"] == descriptor.SHA256_HEX


def test_checking_a_subscription_imports_no_torch():
    code = (
        "import sys; from photoimmune.cli import checks; checks.subscriptions(['a/b']); "
        "sys.exit('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
