"""Regression tests for the key folder and the image encoders, as a probe of the SDK found them:

1. ``init_keys`` with a bad argument (a negative or int ``leaf_validity``, ``organization``
   None or holding NUL, ``alg="rsa"``) failed half-way, leaving ``ca.key`` and ``ca.pem``
   (or an empty folder) that every later call took for a damaged key folder; a write that
   failed half-way did the same.
2. ``KeyDir("/tmp/k")`` (a str) raised TypeError, and its messages named CLI options only.
3. ``encode_image`` (so ``save_image`` and ``sign_pixels``) let Pillow's errors escape: PIL
   images in modes JPEG or PNG cannot hold, a quality out of range or not a number, a
   picture wider than WebP's or JPEG's limit, a format that is no str; and refused the
   grayscale ``(H, W)`` arrays its docstring promised to expand.

A failing write is made real, not mocked: a child process whose file-size limit
(``RLIMIT_FSIZE``) lets the first key through and stops the CA's certificate.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from photoimmune.sdk.codec import decode_image, encode_image
from photoimmune.sdk.errors import ImageLoadError, InputError, OutputExistsError
from photoimmune.sdk.io import save_image
from photoimmune.sdk.keys import KeyDir, SigningKeyError, init_keys
from photoimmune.sdk.manifest import read_manifest, sign_pixels
from photoimmune.sdk.samples import sample_pixels

from .helpers import protection

WAIT_S = 120  # a generous bound on a child that should finish in a second (never asserted)
KEY_FILES = ["ca.key", "ca.pem", "publisher.key", "publisher.pem", "vendor.key", "vendor.pem"]


# -- 1. init_keys: every argument checked first, and nothing half-written ----------------

BAD_ARGUMENTS = {
    "alg rsa": ({"alg": "rsa"}, r"alg 'rsa'.*use one of es256, es384, ed25519"),
    "organization None": ({"organization": None}, r"organization: got a NoneType"),
    "organization with NUL": ({"organization": "a\0b"}, r"organization 'a\\x00b'.*control"),
    "organization with newline": ({"organization": "a\nb"}, r"control character '\\n'"),
    "validity negative": ({"leaf_validity": dt.timedelta(days=-1)}, r"leaf_validity .*more than"),
    "validity zero": ({"leaf_validity": dt.timedelta(0)}, r"leaf_validity .*more than zero"),
    "validity past the CA": ({"leaf_validity": dt.timedelta(days=3651)}, r"at most 3650 days"),
    "validity int": ({"leaf_validity": 30}, r"leaf_validity: got a int.*datetime\.timedelta"),
}


@pytest.mark.parametrize("mistake", BAD_ARGUMENTS)
def test_init_keys_refuses_a_bad_argument_before_writing_anything(tmp_path, mistake):
    kwargs, message = BAD_ARGUMENTS[mistake]
    folder = tmp_path / "new" / "keys"
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "notes.txt").write_text("the user's own file")
    for target in (folder, mine):
        with pytest.raises(SigningKeyError, match=message):
            init_keys(target, **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # not even the new folder's parent
    assert os.listdir(mine) == ["notes.txt"]
    # Before the fix the leftover ca.key made this "already holds keys".
    assert init_keys(folder).signer().alg == "es256"
    assert sorted(os.listdir(folder)) == KEY_FILES


def _init_keys_with_file_size_limit(folder, limit: int) -> str:
    """The error ``init_keys(folder)`` raises in a child that may write files of at most
    ``limit`` bytes (a full disk, as far as the writer can tell)."""
    script = textwrap.dedent(
        """
        import json, resource, signal, sys
        from photoimmune.sdk.errors import PhotoimmuneError
        from photoimmune.sdk.keys import init_keys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a kill
        limit = int(sys.argv[2])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        try:
            init_keys(sys.argv[1])
            print(json.dumps(None))
        except PhotoimmuneError as err:
            print(json.dumps(f"{type(err).__name__}: {err}"))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(limit)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_failing_half_way_leaves_no_key_behind(tmp_path):
    # 400 bytes: ca.key (241) is written, ca.pem (about 700) is not.
    folder = tmp_path / "new" / "keys"
    error = _init_keys_with_file_size_limit(folder, 400)
    assert error.startswith(f"ImageWriteError: {folder}: cannot create the key folder")
    assert "File too large" in error and ".init-" not in error  # the hidden folder is gone
    assert os.listdir(folder.parent) == []

    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "notes.txt").write_text("the user's own file")
    error = _init_keys_with_file_size_limit(mine, 400)
    assert error.startswith(f"ImageWriteError: {mine / 'ca.pem'}: write failed")
    assert os.listdir(mine) == ["notes.txt"]  # ca.key, written first, removed again

    for target in (folder, mine):
        assert init_keys(target).signer("vendor").alg == "es256"


def test_a_killed_init_is_named_rather_than_its_keys_left_lying_about(tmp_path):
    left = tmp_path / ".keys.init-0123abcd"
    left.mkdir()
    (left / "ca.key").write_bytes(b"a private key a killed init_keys wrote")
    with pytest.raises(OutputExistsError, match=r"interrupted init_keys left .*\.keys\.init-"):
        init_keys(tmp_path / "keys")
    assert sorted(os.listdir(tmp_path)) == [left.name]
    # Another folder's name is not mistaken for it, glob characters included.
    assert init_keys(tmp_path / "[k]eys").exists()


# -- 2. KeyDir: a str path, and messages for Python callers ------------------------------


def test_a_key_dir_given_a_str_signs_and_names_the_python_way_on(tmp_path):
    made = init_keys(tmp_path / "keys")
    keys = KeyDir(str(made.path))
    assert keys.path == made.path and keys == made  # kept as a Path
    assert keys.signer().alg == "es256"  # before the fix: TypeError (str / str)
    assert keys.trust_anchor_pem() == made.ca_cert.read_bytes()

    nowhere = tmp_path / "nowhere"
    with pytest.raises(SigningKeyError) as missing:
        KeyDir(str(nowhere)).signer()
    text = str(missing.value)
    assert f"init_keys({str(nowhere)!r})" in text and "ManifestSigner.from_pem" in text
    assert f"`photoimmune keys init --dir {nowhere}`" in text  # the CLI's way stays

    made.key("vendor").unlink()
    with pytest.raises(SigningKeyError, match=r"restore it from your backup.*from_pem"):
        keys.signer("vendor")
    with pytest.raises(SigningKeyError, match=r"role 'admin': use one of publisher, vendor"):
        keys.signer("admin")
    with pytest.raises(SigningKeyError, match=r"got a int; pass the key folder's path"):
        KeyDir(5)


# -- 3. encode_image: Pillow's errors never escape --------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "1", "CMYK"])
def test_pil_images_of_any_mode_are_encoded_by_the_loaders_rules(mode, fmt):
    img = Image.new("RGBA", (8, 8), (200, 40, 10, 0)).convert(mode)
    data = encode_image(img, fmt)  # before the fix: OSError "cannot write mode RGBA as JPEG"
    pixels = decode_image(data).pixels
    assert pixels.shape == (8, 8, 3)
    if fmt == "PNG":  # lossless: exactly what loading the PIL image gives
        assert np.array_equal(pixels, decode_image(img).pixels)


def test_a_float_pil_image_is_refused_clearly():
    with pytest.raises(ImageLoadError, match=r"pixels: floating-point images are not supported"):
        encode_image(Image.new("F", (8, 8)), "PNG")  # before the fix: OSError


def test_a_multi_frame_image_gives_its_current_frame_and_stays_on_it():
    first, second = sample_pixels("chelsea.png", 16), sample_pixels("coffee.png", 16)
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, "TIFF", save_all=True, append_images=[Image.fromarray(second)])
    with Image.open(buf) as img:
        img.seek(1)
        assert np.array_equal(decode_image(encode_image(img, "PNG")).pixels, second)
        assert img.tell() == 1


@pytest.mark.parametrize("quality", [-5, 0, 101, 500, 1.5, "high", None, True])
def test_quality_is_a_whole_number_from_1_to_100(quality, tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    for fmt in ("JPEG", "WEBP", "PNG"):
        with pytest.raises(InputError, match=r"quality.*whole number from 1 to 100"):
            encode_image(pixels, fmt, quality=quality)
    with pytest.raises(InputError, match="quality"):
        save_image(pixels, tmp_path / "out.jpg", quality=quality)
    assert not (tmp_path / "out.jpg").exists()


def test_a_quality_out_of_range_is_named_with_its_default():
    with pytest.raises(InputError) as caught:
        encode_image(np.zeros((8, 8, 3), np.uint8), "JPEG", quality=101)
    assert str(caught.value) == (
        "quality=101: give a whole number from 1 to 100 (95 by default; WebP at 100 is lossless)"
    )


def test_qualities_at_the_ends_of_the_range_are_written():
    pixels = sample_pixels("chelsea.png", 16)
    for quality in (1, np.int64(50), 100):
        for fmt in ("JPEG", "WEBP"):
            assert decode_image(encode_image(pixels, fmt, quality=quality)).format == fmt


@pytest.mark.parametrize(
    ("fmt", "shape", "limit"),
    [
        ("WEBP", (1, 16384, 3), 16383),
        ("WEBP", (16384, 1, 3), 16383),
        ("JPEG", (1, 65501, 3), 65500),
    ],
)
def test_a_picture_past_a_formats_size_limit_is_refused_naming_it(fmt, shape, limit, tmp_path):
    pixels = np.zeros(shape, np.uint8)
    with pytest.raises(
        InputError, match=rf"over {fmt}'s limit of {limit} pixels a side; save it as PNG"
    ):
        encode_image(pixels, fmt)  # before the fix: ValueError (WebP) or OSError (JPEG)
    out = tmp_path / f"wide.{fmt.lower()}"
    with pytest.raises(InputError, match="limit"):
        save_image(pixels, out)
    assert not out.exists()
    assert decode_image(encode_image(pixels, "PNG")).pixels.shape == shape  # PNG holds it


def test_the_largest_picture_a_format_holds_is_still_written():
    assert decode_image(encode_image(np.zeros((1, 16383, 3), np.uint8), "WEBP")).width == 16383


@pytest.mark.parametrize("fmt", [None, 5, "GIF", "jpg", ""])
def test_an_unknown_format_is_refused_naming_the_supported_ones(fmt):
    with pytest.raises(
        InputError, match=r"fmt .*: cannot write this format; use one of JPEG, PNG, WEBP"
    ):
        encode_image(np.zeros((8, 8, 3), np.uint8), fmt)
    assert len(encode_image(np.zeros((8, 8, 3), np.uint8), "webp")) > 0  # any case


def test_grayscale_arrays_are_expanded_as_the_docstring_says():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for fmt in ("PNG", "WEBP"):
        pixels = decode_image(encode_image(gray, fmt, quality=100)).pixels  # both lossless
        assert np.array_equal(pixels, np.repeat(gray[..., None], 3, axis=2))


def test_sign_pixels_encodes_a_transparent_pil_image_as_jpeg(tmp_path):
    keys = init_keys(tmp_path / "keys")
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    data = sign_pixels(img, [protection()], keys.signer(), fmt="JPEG")
    report = read_manifest(data, trust=keys.trust_anchor_pem())
    assert report.verdict == "trusted"
    assert decode_image(data).pixels.min() >= 250  # composited on white, as the loader does
