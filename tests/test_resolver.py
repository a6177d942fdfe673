"""Soft-binding recovery of stripped manifests, the manifest store and resolver, signed outputs.

The end-to-end tests follow issue 27's check: a signed file recorded in an SQLite
store, served on loopback, a JPEG q75 half-size copy recovered (naming the
target ref), an unrelated photo not; a tiny-ldm pipeline signing its outputs.
"""

from __future__ import annotations

import io
import json

import c2pa
import httpx
import numpy as np
import pytest
from PIL import Image

import photoimmune.diffusers_plugin  # noqa: F401  (adds enable_immunization_check)
from photoimmune.cli import main
from photoimmune.diffusers_plugin.outputs import sign_outputs
from photoimmune.registry import local_registry
from photoimmune.resolver import (
    ManifestStore,
    NotSignedError,
    ResolverClient,
    ResolverUnavailableError,
    StoreUnavailableError,
    create_app,
    recover,
)
from photoimmune.resolver.client import CLOSE_SIMILARITY, closeness, similarity
from photoimmune.sdk.codec import decode_image, encode_image, encode_png_fast
from photoimmune.sdk.errors import DatabaseLocationError
from photoimmune.sdk.keys import init_keys
from photoimmune.sdk.manifest import (
    ACTIONS_LABEL,
    EDITED_WITH_AI,
    GENERATED,
    read_manifest,
    sign_output,
    sign_pixels,
)
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.samples import sample_dir, sample_pixels
from photoimmune.sdk.softbinding import REGIONS

from .helpers import LoopbackServer, edit, protection

V1, V2 = "photoimmune/tiny-ldm@1", "photoimmune/tiny-ldm@2"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return init_keys(tmp_path_factory.mktemp("keys") / "dev")


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry") / "reg"
    local_registry(folder, ["tiny-ldm@1", "tiny-ldm@2"])
    return folder


@pytest.fixture(scope="module")
def signed(keys, registry_dir, tmp_path_factory):
    """astronaut, signed by a publisher as immunized against tiny-ldm@1 (its real digest)."""
    digest = local_registry(registry_dir, []).get(V1).digest
    data = sign_pixels(
        sample_pixels("astronaut.png", 128),
        [protection(V1, target_digest=digest)],
        keys.signer("publisher"),
    )
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def resolver(signed, tmp_path_factory):
    """The signed file recorded with `manifests add` in an SQLite store, served on loopback."""
    db = f"sqlite:///{tmp_path_factory.mktemp('store') / 'manifests.db'}"
    assert main(["manifests", "add", str(signed), "--db", db]) == 0
    server = LoopbackServer(create_app(ManifestStore(db)))
    server.start()
    yield server.url
    server.stop()


def _stripped_copy(path, tmp_path, name="copy.jpg"):
    """What a platform serves: no metadata, half size, JPEG quality 75."""
    image = Image.open(path).convert("RGB")
    copy = tmp_path / name
    image.resize((image.width // 2, image.height // 2)).save(copy, quality=75)
    return copy


def test_every_signed_image_carries_its_soft_binding(signed, keys):
    report = read_manifest(signed.read_bytes(), trust=keys.trust_anchor_pem())
    assert report.ok and len(report.soft_binding) == len(REGIONS)
    assert {c.region for c in report.soft_binding} == set(REGIONS)


def test_a_stripped_copy_is_recovered_and_names_the_target(
    resolver, signed, keys, tmp_path, capsys
):
    copy = _stripped_copy(signed, tmp_path)
    ca = str(keys.ca_cert)
    assert main(["verify", str(copy), "--resolver", resolver, "--trust", ca, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["verdict"] == "missing"  # these bytes carry nothing ...
    found = answer["recovered"]  # ... the resolver's signed file does
    assert found["binding"] == "soft" and found["counts"] and found["pixels_close"]
    assert found["protected_against"] == [V1]
    assert found["manifest"]["verdict"] == "trusted" and "soft binding" in found["explanation"]
    # An unrelated photo is not recovered (exit 1: nothing protects it).
    other = tmp_path / "coffee.png"
    Image.fromarray(sample_pixels("coffee.png", 128)).save(other)
    assert main(["verify", str(other), "--resolver", resolver, "--trust", ca, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["recovered"] is None


def test_a_recovery_counts_only_when_trusted_and_close(resolver, signed, tmp_path):
    copy = decode_image(_stripped_copy(signed, tmp_path).read_bytes()).pixels
    untrusted = recover(copy, [resolver], trust=None)
    assert untrusted is not None and untrusted.pixels_close and not untrusted.counts
    assert untrusted.manifest.verdict == "untrusted"


def _dark_photo(name: str, top: int, left: int) -> np.ndarray:
    """A 256x256 crop of a dark sample photo, "immunized" with ±8/255 noise."""
    pixels = np.asarray(Image.open(sample_dir() / name).convert("RGB"))[top:, left:][:256, :256]
    noise = np.random.default_rng(0).integers(-8, 9, pixels.shape)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def _laundered(pixels: np.ndarray) -> np.ndarray:
    """A platform's copy: 10 % cropped off, halved, JPEG quality 75."""
    h, w = pixels.shape[:2]
    crop = Image.fromarray(pixels[h // 20 : h // 20 + h * 9 // 10, w // 20 : w // 20 + w * 9 // 10])
    buf = io.BytesIO()
    crop.resize((crop.width // 2, crop.height // 2), Image.Resampling.BICUBIC).save(
        buf, "JPEG", quality=75
    )
    return decode_image(buf.getvalue()).pixels


def test_the_pixel_check_tells_dark_photos_apart():
    hubble = _dark_photo("hubble_deep_field.jpg", 100, 100)
    elsewhere = _dark_photo("hubble_deep_field.jpg", 500, 700)  # same sky, other galaxies
    retina = _dark_photo("retina.jpg", 20, 20)
    assert max(hubble.mean(), elsewhere.mean(), retina.mean()) < 30  # all nearly black
    for signed in (hubble, retina):
        assert closeness(_laundered(signed), signed, REGIONS) >= CLOSE_SIMILARITY
    for copy, signed in ((elsewhere, hubble), (retina, hubble), (hubble, retina)):
        assert closeness(_laundered(copy), signed, REGIONS) < CLOSE_SIMILARITY


def test_similarity_is_zero_for_a_flat_picture():
    flat = np.full((40, 40, 3), 7, np.uint8)
    noise = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert similarity(flat, noise) == 0.0 and similarity(flat, flat) == 0.0


def test_the_resolver_answers_bad_requests_with_4xx_json(resolver):
    with httpx.Client(base_url=resolver) as http:
        for path, params, status in [
            ("/v1/lookup", {"code": "not-hex"}, 422),
            ("/v1/lookup", {"code": "0" * 16, "alg": "com.example.other"}, 400),
            ("/v1/assets/999", {}, 404),
            ("/v1/assets/9223372036854775808", {}, 422),  # over SQLite's integers
            ("/v1/assets/-9223372036854775809", {}, 422),  # and under them
        ]:
            response = http.get(path, params=params)
            assert response.status_code == status and "detail" in response.json()


def test_errors_say_what_to_do(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    plain.write_bytes(encode_image(sample_pixels("coffee.png", 32), "PNG"))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["manifests", "add", str(plain), "--db", db]) == 2
    assert "no signed immunization manifest" in capsys.readouterr().err
    with pytest.raises(NotSignedError):
        ManifestStore(db).add(b"not an image")
    with pytest.raises(DatabaseLocationError, match="no-such-folder does not exist"):
        ManifestStore(str(tmp_path / "no-such-folder" / "m.db"))
    assert main(["verify", str(plain), "--resolver", "ftp://example"]) == 2
    assert "http(s) URL" in capsys.readouterr().err
    with pytest.raises(ResolverUnavailableError, match="manifests serve"):
        ResolverClient("http://127.0.0.1:9", timeout=2).lookup(0)


def test_a_store_that_cannot_open_says_why_never_with_the_password(tmp_path):
    typo = tmp_path / "typo.db"
    with pytest.raises(DatabaseLocationError, match=r"no such manifest store; .*manifests add"):
        ManifestStore(typo, created_by="photoimmune manifests add")
    assert not typo.exists()  # asked for an existing store: none is made
    with pytest.raises(DatabaseLocationError, match=r"driver is not installed \(pg8000\)"):
        ManifestStore("postgresql+pg8000://alice:S3cretPW@127.0.0.1:1/x")
    with pytest.raises(StoreUnavailableError) as caught:  # nothing listens on port 1
        ManifestStore("postgresql+psycopg://alice:S3cretPW@127.0.0.1:1/x")
    assert "S3cretPW" not in str(caught.value) and "alice:***@127.0.0.1" in str(caught.value)
    assert "manifest store" in str(caught.value) and caught.value.exit_code == 1


def test_the_store_runs_on_postgres(fresh_postgres_url, signed):
    store = ManifestStore(fresh_postgres_url)
    added = store.add(signed.read_bytes())
    assert added.new and added.codes == len(REGIONS)
    assert not store.add(signed.read_bytes()).new
    code = read_manifest(signed.read_bytes()).soft_binding[0].code
    assert [m.asset for m in store.lookup(code ^ 0b11)] == [added.asset]  # 2 bits off
    assert store.asset(added.asset)[0] == signed.read_bytes()
    store.dispose()


def test_outputs_are_signed_as_the_models_work(keys):
    source = sign_pixels(sample_pixels("chelsea.png", 32), [protection()], keys.signer())
    output = encode_png_fast(sample_pixels("coffee.png", 32))
    ca = keys.trust_anchor_pem()
    created = sign_output(output, keys.signer("vendor"), model=V1)
    assert created.action == "c2pa.created" and created.digital_source_type == GENERATED
    report = read_manifest(created.data, trust=ca)
    assert report.digital_source_type == GENERATED and report.validation_state == "Trusted"
    edited = sign_output(output, keys.signer("vendor"), model=V1, ingredient=source)
    assert edited.action == "c2pa.edited" and edited.ingredient_attached
    report = read_manifest(edited.data, trust=ca)
    assert report.digital_source_type == edited.digital_source_type == EDITED_WITH_AI
    assert report.protected_against == (V1,)  # the input's chain is kept
    assert (decode_image(edited.data).pixels == sample_pixels("coffee.png", 32)).all()


def test_an_output_whose_input_cannot_be_attached_reports_created(keys, caplog):
    broken = encode_image(sample_pixels("chelsea.png", 32), "PNG")[:60]  # PNG magic, no image
    output = encode_png_fast(sample_pixels("coffee.png", 32))
    signed = sign_output(output, keys.signer("vendor"), model=V1, ingredient=broken)
    actions = _actions(signed.data)
    assert signed.action == "c2pa.created" and not signed.ingredient_attached
    assert [a["action"] for a in actions] == ["c2pa.created"]
    assert signed.digital_source_type == EDITED_WITH_AI == actions[0]["digitalSourceType"]
    pictures = [sample_pixels("coffee.png", 32)]
    reported = sign_outputs(pictures, [("in.png", broken)], keys.signer("vendor"), V1)
    assert reported[0].action == "c2pa.created" and reported[0].ingredient is None


def _actions(data: bytes) -> list[dict]:
    """The actions of the active manifest in ``data``, as c2pa reads them."""
    with c2pa.Reader("image/png", io.BytesIO(data)) as reader:
        store = json.loads(reader.json())
    manifest = store["manifests"][store["active_manifest"]]
    return next(a["data"]["actions"] for a in manifest["assertions"] if a["label"] == ACTIONS_LABEL)


@pytest.mark.slow
def test_a_pipeline_signs_its_outputs(registry_dir, keys, signed):
    pipe = load_pipeline("tiny-ldm@1")
    pipe.enable_immunization_check(registry_dir, trust=[keys.ca_cert], sign_outputs=True)
    edit(pipe, str(signed))
    report = pipe.immunization_report
    assert report.images[0].status == "covered" and report.images[0].action == "passed"
    output = report.outputs[0]
    assert output.action == "c2pa.edited" and output.software_agent == V1
    checked = read_manifest(output.signed_image)
    assert checked.digital_source_type == EDITED_WITH_AI
    assert checked.digital_source_type.endswith("TrainedAlgorithmicMedia")
    assert checked.protected_against == (V1,)


@pytest.mark.slow
def test_a_recovered_outdated_image_is_reimmunized(registry_dir, keys, resolver, signed, tmp_path):
    copy = _stripped_copy(signed, tmp_path)
    pipe = load_pipeline("tiny-ldm@2")
    pipe.enable_immunization_check(
        registry_dir,
        signer=keys.signer("vendor"),
        trust=[keys.ca_cert],
        resolvers=[resolver],
        steps=4,
    )
    edited = edit(pipe, str(copy))
    check = pipe.immunization_report.images[0]
    assert check.recovered_from == resolver and check.status == "outdated"
    assert check.action == "reimmunized" and check.protected_against == (V1,)
    chain = read_manifest(check.signed_image, trust=keys.trust_anchor_pem())
    assert chain.ok and chain.protected_against == (V1, V2)  # the recovered original kept
    signed_output = pipe.immunization_report.outputs[0].signed_image  # signer given: on
    assert np.array_equal(
        decode_image(signed_output).pixels, (edited[0] * 255).round().astype(np.uint8)
    )
