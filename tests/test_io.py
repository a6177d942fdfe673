"""Image input: every odd or hostile file gets RGB pixels or a clear ImageLoadError."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photoimmune.sdk import ImageLoadError, InputError, OutputExistsError, PhotoimmuneError
from photoimmune.sdk.io import (
    atomic_write_bytes,
    encode_png_fast,
    load_image,
    pixels_to_tensor,
    save_image,
    tensor_to_pixels,
)


def _png_bytes(img: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **params)
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **params)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with no pixel data (a bomb header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    idat = zlib.compress(b"")
    idat_chunk = b"IDAT" + idat
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + crc
        + struct.pack(">I", len(idat))
        + idat_chunk
        + struct.pack(">I", zlib.crc32(idat_chunk) & 0xFFFFFFFF)
    )


@pytest.fixture
def gradient() -> np.ndarray:
    """A 24x32 RGB image with distinct values everywhere, so orientation is checkable."""
    y, x = np.mgrid[0:24, 0:32]
    return np.stack([x * 8, y * 10, (x + y) * 4], axis=2).astype(np.uint8)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- refused inputs


def test_truncated_png_names_file_and_problem(tmp_path, gradient):
    data = _png_bytes(Image.fromarray(gradient))
    path = _write(tmp_path, "cut.png", data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png.*(truncated|corrupt)"):
        load_image(path)


def test_truncated_jpeg(tmp_path, gradient):
    data = _jpeg_bytes(Image.fromarray(gradient))
    path = _write(tmp_path, "cut.jpg", data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg.*truncated"):
        load_image(path)


def test_zip_file_is_named_as_such(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photo.png", b"not really")
    path = _write(tmp_path, "photos.png", buf.getvalue())
    with pytest.raises(ImageLoadError, match=r"photos\.png: a ZIP archive"):
        load_image(path)


def test_empty_file(tmp_path):
    path = _write(tmp_path, "empty.jpg", b"")
    with pytest.raises(ImageLoadError, match=r"empty\.jpg: file is empty"):
        load_image(path)


def test_text_file(tmp_path):
    path = _write(tmp_path, "notes.png", b"hello, I am not a picture\n")
    with pytest.raises(ImageLoadError, match="not an image file"):
        load_image(path)


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    path = _write(tmp_path, "bomb.png", _png_header_only(60000, 60000))
    with pytest.raises(ImageLoadError, match=r"bomb\.png.*(decompression bomb|over the limit)"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path, gradient):
    path = _write(tmp_path, "small.png", _png_bytes(Image.fromarray(gradient)))
    with pytest.raises(ImageLoadError, match="768 pixels, over the limit of 100"):
        load_image(path, max_pixels=100)


def test_a_decoded_image_passes_through_with_its_name_and_limits(tmp_path, gradient):
    path = _write(tmp_path, "once.png", _png_bytes(Image.fromarray(gradient)))
    loaded = load_image(path)
    again = load_image(loaded)  # no second read of the file
    assert again.name == str(path) and again.data == loaded.data
    assert np.array_equal(again.pixels, loaded.pixels)
    with pytest.raises(ImageLoadError, match=r"once\.png: .* over the limit of 100"):
        load_image(loaded, max_pixels=100)


def test_byte_limit(tmp_path, gradient):
    path = _write(tmp_path, "big.png", _png_bytes(Image.fromarray(gradient)))
    with pytest.raises(ImageLoadError, match="byte limit"):
        load_image(path, max_bytes=10)


def test_zero_size_header(tmp_path):
    path = _write(tmp_path, "zero.png", _png_header_only(0, 5))
    with pytest.raises(ImageLoadError, match=r"zero\.png"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)


def test_unsupported_format_is_named(tmp_path):
    # An ICO file Pillow can identify but we refuse to decode.
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "ICO")
    path = _write(tmp_path, "favicon.ico", buf.getvalue())
    with pytest.raises(ImageLoadError, match="ICO images are not supported"):
        load_image(path)


def test_float_tiff_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.ones((4, 4), np.float32)).save(buf, "TIFF")
    with pytest.raises(ImageLoadError, match="floating-point"):
        load_image(buf.getvalue())


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), "not uint8"),
        (np.zeros((4, 4, 2), np.uint8), "is not"),
        (np.zeros((0, 4, 3), np.uint8), "zero size"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(array)


def test_unknown_source_type():
    with pytest.raises(ImageLoadError, match="cannot load an image from a int"):
        load_image(42)  # type: ignore[arg-type]


def test_errors_share_one_root():
    assert issubclass(ImageLoadError, PhotoimmuneError)
    assert ImageLoadError("x").exit_code == 2


# ---------------------------------------------------------------- accepted inputs


def test_one_pixel_image(tmp_path):
    path = _write(tmp_path, "dot.png", _png_bytes(Image.new("RGB", (1, 1), (10, 20, 30))))
    img = load_image(path)
    assert img.pixels.shape == (1, 1, 3)
    assert img.pixels[0, 0].tolist() == [10, 20, 30]


def test_rgb_png_round_trip_is_exact(tmp_path, gradient):
    img = load_image(_write(tmp_path, "g.png", _png_bytes(Image.fromarray(gradient))))
    assert img.format == "PNG"
    assert img.original_mode == "RGB"
    np.testing.assert_array_equal(img.pixels, gradient)
    assert not img.pixels.flags.writeable


def test_fast_png_is_exact_and_readable_by_pillow(gradient):
    noisy = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for pixels in (gradient, noisy, np.zeros((1, 1, 3), np.uint8)):
        data = encode_png_fast(pixels)
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # checks every chunk's CRC and the zlib stream's checksum
            assert img.format == "PNG" and img.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(img), pixels)


def test_fast_png_of_a_smooth_picture_is_compressed(gradient):
    assert len(encode_png_fast(gradient)) < gradient.nbytes / 2


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)],
)
def test_fast_png_refuses_what_is_not_an_rgb_picture(pixels):
    with pytest.raises(InputError):
        encode_png_fast(pixels)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = _write(tmp_path, "deep.png", _png_bytes(Image.fromarray(wide)))
    img = load_image(path)
    assert img.pixels[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (img.pixels[..., 0] == img.pixels[..., 2]).all()


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    img = load_image(_write(tmp_path, "print.jpg", _jpeg_bytes(cmyk, quality=100)))
    assert img.original_mode == "CMYK"
    r, g, b = img.pixels[4, 4].tolist()
    assert r > 200 and g < 50 and b < 50


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    path = _write(tmp_path, "logo.png", _png_bytes(pal, transparency=0))
    img = load_image(path)
    assert img.pixels[0, 0].tolist() == [255, 0, 0]  # opaque index 1: red
    assert img.pixels[2, 2].tolist() == [255, 255, 255]  # transparent index 0: white


def test_rgba_half_transparent_blends_with_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 128  # black at ~50% alpha
    img = load_image(rgba)
    assert abs(int(img.pixels[0, 0, 0]) - 127) <= 1


def test_la_and_grayscale_and_one_bit(tmp_path):
    la = Image.new("LA", (3, 3), (0, 0))  # fully transparent black
    assert load_image(_png_bytes(la)).pixels[0, 0].tolist() == [255, 255, 255]
    gray = Image.new("L", (3, 3), 77)
    assert load_image(_png_bytes(gray)).pixels[1, 1].tolist() == [77, 77, 77]
    bits = Image.new("1", (3, 3), 1)
    assert load_image(_png_bytes(bits)).pixels[1, 1].tolist() == [255, 255, 255]


def test_exif_rotated_jpeg_is_upright(tmp_path, gradient):
    stored = Image.fromarray(gradient)
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _write(tmp_path, "phone.jpg", _jpeg_bytes(stored, exif=exif.tobytes(), quality=100))
    img = load_image(path)
    assert img.pixels.shape == (32, 24, 3)  # width and height swapped
    expected = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(img.pixels.astype(int) - expected.astype(int)).mean() < 3


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    img = load_image(buf.getvalue())
    assert img.pixels[0, 0].tolist() == [255, 0, 0]


def test_webp_and_tiff_and_bmp(gradient):
    for fmt in ("WEBP", "TIFF", "BMP"):
        buf = io.BytesIO()
        Image.fromarray(gradient).save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        img = load_image(buf.getvalue())
        assert img.format == fmt
        np.testing.assert_array_equal(img.pixels, gradient)


def test_pil_source_applies_the_same_rules():
    pil = Image.new("RGBA", (5, 5), (0, 0, 0, 0))
    img = load_image(pil)
    assert img.name == "<PIL image>"
    assert img.pixels[0, 0].tolist() == [255, 255, 255]


def test_bytes_keep_raw_data_for_metadata_readers(gradient):
    data = _png_bytes(Image.fromarray(gradient))
    assert load_image(data).data == data


def test_a_real_photo_matches_scikit_image():
    from skimage import data as skdata

    path = Path(skdata.__file__).parent / "astronaut.png"
    img = load_image(path)
    np.testing.assert_array_equal(img.pixels, skdata.astronaut())


# ---------------------------------------------------------------- output


def test_save_never_overwrites_unless_asked(tmp_path, gradient):
    original = _write(tmp_path, "orig.png", _png_bytes(Image.fromarray(gradient)))
    before = original.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        save_image(np.zeros_like(gradient), original)
    assert original.read_bytes() == before
    save_image(np.zeros_like(gradient), original, overwrite=True)
    assert load_image(original).pixels.max() == 0


def test_save_leaves_no_temporary_files(tmp_path, gradient):
    out = save_image(gradient, tmp_path / "sub" / "out.png")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.png"]
    np.testing.assert_array_equal(load_image(out).pixels, gradient)


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    dest = _write(tmp_path, "keep.bin", b"old")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("photoimmune.sdk.io.os.fsync", broken_fsync)
    with pytest.raises(PhotoimmuneError, match="nothing was replaced"):
        atomic_write_bytes(dest, b"new", overwrite=True)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]


def test_save_rejects_unknown_suffix(tmp_path, gradient):
    with pytest.raises(InputError, match="unknown image suffix"):
        save_image(gradient, tmp_path / "out.gifx")


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_lossy_formats_round_trip_closely(tmp_path, gradient, suffix):
    out = save_image(gradient, tmp_path / f"out{suffix}", quality=100)
    diff = np.abs(load_image(out).pixels.astype(int) - gradient.astype(int))
    assert diff.mean() < 2


# ---------------------------------------------------------------- tensors


def test_tensor_round_trip_is_exact(gradient):
    for value_range in ("unit", "signed"):
        t = pixels_to_tensor(gradient, value_range=value_range)
        assert t.shape == (1, 3, 24, 32)
        lo, hi = (0.0, 1.0) if value_range == "unit" else (-1.0, 1.0)
        assert lo <= t.min().item() and t.max().item() <= hi
        np.testing.assert_array_equal(tensor_to_pixels(t[0], value_range=value_range), gradient)


def test_tensor_batches_and_clamping(gradient):
    batch = pixels_to_tensor([gradient, gradient[::-1].copy()])
    assert batch.shape == (2, 3, 24, 32)
    assert tensor_to_pixels(batch).shape == (2, 24, 32, 3)
    out = tensor_to_pixels(torch.full((3, 1, 1), 7.0))
    assert out.tolist() == [[[255, 255, 255]]]
    with pytest.raises(InputError, match="same size"):
        pixels_to_tensor([gradient, gradient[:10]])
