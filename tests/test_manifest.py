"""Signed immunization manifests: each way a manifest can fail has its own verdict."""

from __future__ import annotations

import datetime as dt
import io
import json
import stat
import struct
import time
import zlib

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from PIL import Image

from photoimmune.cli import main
from photoimmune.sdk import ImageLoadError, OutputExistsError
from photoimmune.sdk.io import encode_image, load_image, save_image
from photoimmune.sdk.keys import (
    KeyDir,
    ManifestSigner,
    SigningKeyError,
    cryptography_callback,
    generate_key,
    init_keys,
    issue_leaf,
    private_key_pem,
    read_trust_anchors,
)
from photoimmune.sdk.manifest import read_manifest, sign_image, sign_pixels
from photoimmune.sdk.samples import sample_pixels

from .helpers import protection


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> KeyDir:
    return init_keys(tmp_path_factory.mktemp("k") / "keys")


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> KeyDir:
    return init_keys(tmp_path_factory.mktemp("k2") / "keys", alg="ed25519")


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return sample_pixels("chelsea.png", 96)


@pytest.fixture(scope="module")
def signed_png(keys, cat) -> bytes:
    return sign_pixels(cat, [protection()], keys.signer())


# PNG surgery, the way an attacker would do it: chunks rewritten with valid CRCs.
def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def _assemble(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


def _graft_manifest(donor: bytes, pixels: np.ndarray) -> bytes:
    """``pixels`` as a PNG carrying ``donor``'s C2PA chunk, placed where c2pa puts it."""
    manifest = [c for c in _chunks(donor) if c[0] == b"caBX"]
    assert manifest, "the donor carries no C2PA chunk"
    target = _chunks(encode_image(pixels, "PNG"))
    return _assemble([target[0], *manifest, *target[1:]])


def _verdict(data: bytes, keys: KeyDir) -> str:
    return read_manifest(data, trust=keys.trust_anchor_pem()).verdict


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_valid_and_trusted_in_each_format_leaves_pixels_alone(keys, cat, fmt):
    plain = encode_image(cat, fmt)
    signed = sign_image(plain, [protection()], keys.signer())
    assert np.array_equal(load_image(signed).pixels, load_image(plain).pixels)
    report = read_manifest(signed, trust=keys.trust_anchor_pem())
    assert report.verdict == "trusted" and report.ok and report.pixel_bound
    assert report.assertion.width == 96 and report.assertion.protections == (protection(),)
    assert report.covers("photoimmune/tiny-ldm@1") and not report.covers("photoimmune/tiny-ldm@2")
    assert "publisher" in report.signer
    # A plain re-save (what most tools and PIL do) strips the manifest.
    buf = io.BytesIO()
    Image.open(io.BytesIO(signed)).save(buf, fmt)
    assert _verdict(buf.getvalue(), keys) == "missing"


@pytest.mark.parametrize(("fmt", "quality"), [("WEBP", 100), ("JPEG", 50)])
def test_sign_pixels_encodes_at_the_format_and_quality_asked(keys, cat, fmt, quality):
    signed = sign_pixels(cat, [protection()], keys.signer(), fmt=fmt, quality=quality)
    image = load_image(signed)
    assert image.format == fmt
    # The pixels of encode_image at that quality (WebP at 100: lossless, the photo's own).
    assert np.array_equal(image.pixels, load_image(encode_image(cat, fmt, quality=quality)).pixels)
    assert np.array_equal(image.pixels, cat) == (fmt == "WEBP")
    assert _verdict(signed, keys) == "trusted"


def test_untrusted_ca(signed_png, other_keys):
    report = read_manifest(signed_png, trust=other_keys.trust_anchor_pem())
    assert report.verdict == "untrusted" and report.pixel_bound
    assert "signingCredential.untrusted" in report.failures
    assert read_manifest(signed_png).verdict == "untrusted"  # no anchors: nothing is trusted


def test_one_pixel_changed_breaks_the_binding(signed_png, cat, keys):
    changed = cat.copy()
    changed[10, 10] = 255 - changed[10, 10]
    report = read_manifest(_graft_manifest(signed_png, changed), trust=keys.trust_anchor_pem())
    assert report.verdict == "modified" and not report.pixel_bound
    assert "re-immunize" in report.explanation


def test_manifest_transplanted_from_another_image(signed_png, keys):
    other = sample_pixels("coffee.png", 96)
    report = read_manifest(_graft_manifest(signed_png, other), trust=keys.trust_anchor_pem())
    assert report.verdict == "transplanted" and not report.pixel_bound


@pytest.mark.parametrize("forge", [b"photoimmune/tiny-ldm@1", b"publisher"])
def test_flipped_manifest_bytes_are_invalid(signed_png, keys, forge):
    # A forger rewrites what the image claims to resist, or who signed it (in the
    # certificate): one byte each, with the PNG's own checksums made right again.
    chunks = _chunks(signed_png)
    index = next(i for i, c in enumerate(chunks) if c[0] == b"caBX")
    jumbf = bytearray(chunks[index][1])
    at = jumbf.index(forge) + len(forge) - 1
    jumbf[at] ^= 0x01
    chunks[index] = (b"caBX", bytes(jumbf))
    report = read_manifest(_assemble(chunks), trust=keys.trust_anchor_pem())
    assert report.verdict == "invalid", report


def test_expired_certificate(keys, cat):
    ca_key = serialization.load_pem_private_key((keys.path / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    leaf_key = generate_key("es256")
    leaf = issue_leaf(
        ca_key, ca_cert, leaf_key.public_key(), "short-lived", dt.timedelta(seconds=2)
    )
    signer = ManifestSigner(
        alg="es256",
        cert_chain_pem=leaf.public_bytes(serialization.Encoding.PEM),
        private_key_pem=private_key_pem(leaf_key),
    )
    signed = sign_pixels(cat, [protection()], signer)
    assert _verdict(signed, keys) == "trusted"
    time.sleep(max(0.0, (leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
    report = read_manifest(signed, trust=keys.trust_anchor_pem())
    assert report.verdict == "expired" and "signingCredential.expired" in report.failures


def test_truncated_file_is_unreadable(signed_png, keys, tmp_path):
    with pytest.raises(ImageLoadError, match="truncated"):
        read_manifest(signed_png[: len(signed_png) // 2], trust=keys.trust_anchor_pem())
    (tmp_path / "cut.png").write_bytes(signed_png[:-200])
    assert main(["verify", str(tmp_path / "cut.png")]) == 2


def test_chain_of_three_reimmunizations_reads_back_in_order(keys, cat):
    data, refs = None, ["acme/model@1", "acme/model@2", "acme/model@3"]
    for step, ref in enumerate(refs):
        pixels = cat.copy()
        pixels[0, 0] = step  # each round makes new pixels, as re-immunization does
        data = sign_pixels(pixels, [protection(ref)], keys.signer(), parent=data)
    report = read_manifest(data, trust=keys.trust_anchor_pem())
    assert report.verdict == "trusted"
    assert [a.protections[0].target_ref for a in report.history] == refs
    assert report.assertion == report.history[-1]


def test_parent_that_cannot_be_an_ingredient_is_left_out(keys, cat):
    bmp = io.BytesIO()
    Image.fromarray(cat).save(bmp, "BMP")
    signed = sign_pixels(cat, [protection()], keys.signer(), parent=bmp.getvalue())
    report = read_manifest(signed, trust=keys.trust_anchor_pem())
    assert report.verdict == "trusted" and len(report.history) == 1


@pytest.mark.parametrize("alg", ["es256", "ed25519"])
def test_callback_signer_as_a_kms_would_use(alg, tmp_path, cat):
    keys = init_keys(tmp_path / alg, alg=alg)
    key = serialization.load_pem_private_key(keys.key("vendor").read_bytes(), None)
    signer = ManifestSigner.from_callback(
        cryptography_callback(key), alg, keys.cert("vendor").read_bytes()
    )
    report = read_manifest(sign_pixels(cat, [protection()], signer), trust=keys.trust_anchor_pem())
    assert report.verdict == "trusted" and "vendor" in report.signer


def test_key_folder_permissions_and_refusals(tmp_path, keys, other_keys):
    made = init_keys(tmp_path / "new")
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o700
    for name in ("ca.key", "publisher.key", "vendor.key"):
        assert stat.S_IMODE((made.path / name).stat().st_mode) == 0o600
    before = made.key("publisher").read_bytes()
    with pytest.raises(OutputExistsError):
        init_keys(made.path)
    assert made.key("publisher").read_bytes() == before
    with pytest.raises(SigningKeyError, match="does not belong"):
        ManifestSigner.from_pem(keys.key("publisher"), other_keys.cert("publisher"))
    with pytest.raises(SigningKeyError, match="keys init"):
        KeyDir(tmp_path / "nowhere").signer()


@pytest.mark.parametrize("mistake", ["key file", "key text", "key bytes", "a photo"])
def test_a_trust_anchor_that_is_no_certificate_is_refused_not_blamed_on_images(
    keys, tmp_path, mistake
):
    # The CA's private key beside its certificate is the likeliest mix-up.
    ca_key = keys.path / "ca.key"
    photo = tmp_path / "cat.png"
    save_image(sample_pixels("chelsea.png", 16), photo)
    given = {
        "key file": ca_key,
        "key text": ca_key.read_text(),
        "key bytes": ca_key.read_bytes(),
        "a photo": photo,
    }[mistake]
    with pytest.raises(SigningKeyError, match=r"not a PEM CA certificate; pass the ca\.pem"):
        read_trust_anchors([keys.ca_cert, given])
    ca = keys.trust_anchor_pem()
    assert read_trust_anchors([keys.ca_cert, ca, ca.decode()]) == [ca, ca, ca]


def test_init_keys_refuses_an_organization_no_certificate_can_name(tmp_path):
    folder = tmp_path / "keys"
    for organization in ("a" * 55, "a" * 65, ""):
        with pytest.raises(SigningKeyError, match="give 1 to 54"):
            init_keys(folder, organization=organization)
    assert not folder.exists()
    assert init_keys(folder, organization="a" * 54).exists()  # "<54> publisher" is 64


def test_loader_returns_the_verified_manifest(signed_png, keys, cat):
    image = load_image(signed_png, verify=True, trust=keys.trust_anchor_pem())
    assert image.manifest.ok and np.array_equal(image.pixels, cat)
    from_pil = load_image(Image.open(io.BytesIO(signed_png)), verify=True)
    assert (
        from_pil.manifest.verdict == "missing" and "load the file" in from_pil.manifest.explanation
    )
    assert load_image(signed_png).manifest is None


def test_cli_immunize_signs_and_verify_reports(tmp_path, capsys, tiny_models):
    src = tmp_path / "cat.png"
    save_image(sample_pixels("chelsea.png", 64), src)
    common = ["--steps", "2", "--eps", "4/255"]
    assert (
        main(
            [
                "immunize",
                str(src),
                "-o",
                str(tmp_path / "a"),
                "--model",
                str(tiny_models[0]),
                *common,
            ]
        )
        == 0
    )
    first = tmp_path / "a" / "cat.png"
    # The default key folder was created on first use and its CA is trusted by default.
    assert main(["verify", str(first)]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "immunize",
                str(first),
                "-o",
                str(tmp_path / "b"),
                "--model",
                str(tiny_models[1]),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "immunize",
                str(src),
                "-o",
                str(tmp_path / "c"),
                "--model",
                str(tiny_models[0]),
                "--no-sign",
                *common,
            ]
        )
        == 0
    )
    capsys.readouterr()
    again = tmp_path / "b" / "cat.png"
    assert main(["verify", "--json", str(again), str(tmp_path / "c" / "cat.png")]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["verdict"] == "trusted" and lines[1]["verdict"] == "missing"
    chain = [a["protections"][0]["target_ref"] for a in lines[0]["history"]]
    assert chain == ["local/quick-1@0", "local/quick-2@0"]
    assert main(["verify", "--trust", str(tmp_path / "nothing.pem"), str(again)]) == 2
