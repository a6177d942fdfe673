"""Safe image input and output.

Everything that enters photoimmune as pixels goes through :func:`load_image`, and
everything that leaves as a file goes through :func:`save_image` or
:func:`atomic_write_bytes`. The rules, in one place:

* **Input** can be a path, raw bytes, a PIL image or a uint8 numpy array. The
  result is always 8-bit RGB, ``(height, width, 3)``, with the EXIF orientation
  applied, so "the pixels" means the same thing everywhere (hashing, attacks,
  manifests).
* **Modes**: grayscale, palette and 1-bit images are expanded to RGB; 16-bit
  images are scaled (not clipped) to 8 bits; CMYK uses Pillow's conversion (no
  ICC colour management); anything with transparency (LA, RGBA, palette with a
  transparent index) is *composited on white*, because that is how most viewers
  and editing pipelines show it and a diffusion model has no alpha channel.
  Animated files (GIF, APNG, WebP) contribute their first frame.
* **Limits**: files above ``max_bytes`` and images above ``max_pixels`` are refused
  *before* decoding, which stops decompression bombs. Only well-understood raster
  formats are decoded (PNG, JPEG, WebP, GIF, BMP, TIFF, PPM).
* **Output** is atomic (temporary file, fsync, rename) and never replaces an
  existing file unless ``overwrite=True`` is passed, so an original can't be lost.
* **Tensors**: :func:`pixels_to_tensor` and :func:`tensor_to_pixels` are the one
  place where 8-bit pixels meet ``[0, 1]`` or ``[-1, 1]`` float tensors.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError, ImageWriteError, InputError, OutputExistsError

if TYPE_CHECKING:  # torch is imported lazily: reading a file should not cost its 3 s import
    import torch

    from .manifest import ManifestReport, TrustAnchors

ImageSource = str | os.PathLike[str] | bytes | Image.Image | np.ndarray

#: Refuse images with more pixels than this (about 67 megapixels, e.g. 8192x8192).
DEFAULT_MAX_PIXELS = 1 << 26
#: Refuse files larger than this many bytes before reading them.
DEFAULT_MAX_BYTES = 256 << 20
#: Raster formats we decode. Others (EPS, PDF, ...) are refused: some of Pillow's
#: decoders shell out or are rarely exercised, and none is a photo format.
SAFE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
#: Formats :func:`save_image` writes, by file suffix.
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class LoadedImage:
    """An image decoded to 8-bit RGB, and where it came from.

    Attributes:
        pixels: ``uint8`` array of shape ``(height, width, 3)``, read-only.
        name: the path, or ``"<bytes>"``/``"<PIL image>"``/``"<array>"``, for messages.
        format: the container format Pillow found (``"PNG"``, ``"JPEG"``...), or None.
        original_mode: the Pillow mode before conversion (``"CMYK"``, ``"I;16"``...).
        data: the raw file bytes when loaded from a path or bytes (kept so that
            metadata Pillow drops, such as C2PA manifests, can still be read).
        manifest: the verified C2PA manifest report when loaded with ``verify=True``.
    """

    pixels: np.ndarray
    name: str
    format: str | None
    original_mode: str
    data: bytes | None = None
    manifest: ManifestReport | None = None

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def to_pil(self) -> Image.Image:
        """Return the pixels as a new RGB PIL image."""
        return Image.fromarray(self.pixels)


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    verify: bool = False,
    trust: TrustAnchors = None,
) -> LoadedImage:
    """Decode ``source`` into 8-bit RGB pixels, or raise :class:`ImageLoadError`.

    With ``verify=True`` the C2PA manifest in the file is read, validated against
    the ``trust`` anchors and bound to the decoded pixels (see
    :func:`photoimmune.sdk.manifest.read_manifest`); the report lands in
    :attr:`LoadedImage.manifest`. PIL images and arrays carry no manifest (PIL
    drops it on open), so pass the path or the bytes when provenance matters.

    Example:
        >>> img = load_image("photo.jpg")  # doctest: +SKIP
        >>> img.pixels.shape, img.pixels.dtype  # doctest: +SKIP
        ((512, 768, 3), dtype('uint8'))
        >>> load_image("immunized.png", verify=True, trust=ca_pem).manifest.ok  # doctest: +SKIP
        True
    """
    image = _load(source, max_pixels=max_pixels, max_bytes=max_bytes)
    if not verify:
        return image
    from .manifest import missing_report, read_manifest

    if image.data is None:
        report = missing_report("a PIL image or array carries no manifest; load the file itself")
    else:
        report = read_manifest(image.data, trust=trust, pixels=image.pixels)
    return dataclasses.replace(image, manifest=report)


def _load(source: ImageSource, *, max_pixels: int, max_bytes: int) -> LoadedImage:
    if isinstance(source, np.ndarray):
        return _load_array(source, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        name = "<PIL image>"
        _check_pixel_count(source.size, name, max_pixels)
        pixels = _to_rgb_array(source, name)
        return LoadedImage(_freeze(pixels), name, source.format, source.mode)
    if isinstance(source, bytes | bytearray | memoryview):
        name, data = "<bytes>", bytes(source)
        if len(data) > max_bytes:
            raise ImageLoadError(
                f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit; "
                "pass a smaller file or raise max_bytes"
            )
    elif isinstance(source, str | os.PathLike):
        name, data = os.fspath(source), _read_file(Path(source), max_bytes)
    else:
        raise ImageLoadError(
            f"cannot load an image from a {type(source).__name__}; "
            "pass a path, bytes, a PIL image or a uint8 numpy array"
        )
    return _decode(data, name, max_pixels)


def _read_file(path: Path, max_bytes: int) -> bytes:
    name = str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ImageLoadError(f"{name}: is a directory, not an image file")
        if size > max_bytes:
            raise ImageLoadError(
                f"{name}: {size} bytes is over the {max_bytes}-byte limit; "
                "downscale the image or raise max_bytes"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError(f"{name}: no such file; check the path") from None
    except PermissionError:
        raise ImageLoadError(f"{name}: permission denied; check the file's permissions") from None
    except OSError as err:
        raise ImageLoadError(f"{name}: cannot read the file ({err.strerror or err})") from err


def _decode(data: bytes, name: str, max_pixels: int) -> LoadedImage:
    if not data:
        raise ImageLoadError(f"{name}: file is empty (0 bytes); re-export or re-download it")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=SAFE_FORMATS)
    except UnidentifiedImageError:
        raise ImageLoadError(_unidentified_message(data, name)) from None
    except Image.DecompressionBombError:
        raise ImageLoadError(
            f"{name}: image header declares far more pixels than the limit "
            f"({max_pixels}); refusing it as a likely decompression bomb"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(f"{name}: {_damage(err)}; re-export or re-download it") from None
    with img:
        _check_pixel_count(img.size, name, max_pixels)
        try:
            img.load()
        except Image.DecompressionBombError:
            raise ImageLoadError(
                f"{name}: image is too large to decode safely; downscale it"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageLoadError(
                f"{name}: {_damage(err)}; the {img.format} file is damaged, "
                "re-export or re-download it"
            ) from None
        pixels = _to_rgb_array(img, name)
        return LoadedImage(_freeze(pixels), name, img.format, img.mode, data)


def _damage(err: Exception) -> str:
    return "file is truncated" if "truncated" in str(err).lower() else f"corrupt data ({err})"


def _unidentified_message(data: bytes, name: str) -> str:
    try:
        with Image.open(io.BytesIO(data)) as other:  # identify only; never decoded
            fmt = other.format
    except Exception:
        fmt = None
    if fmt:
        return (
            f"{name}: {fmt} images are not supported; convert it to PNG, JPEG or WebP "
            f"(supported: {', '.join(SAFE_FORMATS)})"
        )
    head = data[:4]
    what = "a ZIP archive" if head == b"PK\x03\x04" else "not an image file"
    return f"{name}: {what}; pass a PNG, JPEG or WebP image"


def _check_pixel_count(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{name}: image has zero size ({width}x{height}); nothing to protect")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{name}: {width}x{height} is {width * height} pixels, over the limit of "
            f"{max_pixels}; downscale the image or raise max_pixels"
        )


def _to_rgb_array(img: Image.Image, name: str) -> np.ndarray:
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as err:  # Pillow raises assorted errors on broken EXIF blocks.
        warnings.warn(f"{name}: ignoring unreadable EXIF orientation ({err})", stacklevel=3)
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _wide_gray_to_rgb(img, name)
    if mode == "F":
        raise ImageLoadError(
            f"{name}: floating-point images are not supported; save it as 8- or 16-bit"
        )
    if (mode == "P" and "transparency" in img.info) or mode == "PA" or mode in ("LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (*_WHITE, 255))
        img = Image.alpha_composite(background, img)
    try:
        rgb = img.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageLoadError(
            f"{name}: cannot convert mode {mode} to RGB ({err}); save it as RGB"
        ) from None
    return np.asarray(rgb, dtype=np.uint8)


def _wide_gray_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    values = np.asarray(img).astype(np.int64)
    if values.min(initial=0) < 0 or values.max(initial=0) > 0xFFFF:
        raise ImageLoadError(
            f"{name}: 32-bit integer pixels outside 0..65535; save it as 8- or 16-bit"
        )
    # Scale, don't clip: 65535 must map to 255 (Pillow's convert("L") clips instead).
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _load_array(array: np.ndarray, *, max_pixels: int) -> LoadedImage:
    name = "<array>"
    if array.dtype != np.uint8:
        raise ImageLoadError(
            f"{name}: dtype {array.dtype} is not uint8; scale to 0..255 and cast with "
            "array.astype(numpy.uint8), or use tensor_to_pixels for float tensors"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageLoadError(
            f"{name}: shape {array.shape} is not (height, width[, 1|3|4]); "
            "pass one image with channels last"
        )
    _check_pixel_count((array.shape[1], array.shape[0]), name, max_pixels)
    # uint8 arrays map to L, RGB or RGBA by their channel count.
    img = Image.fromarray(np.ascontiguousarray(array.squeeze(2) if array.shape[2] == 1 else array))
    return LoadedImage(_freeze(_to_rgb_array(img, name)), name, None, img.mode)


def _freeze(pixels: np.ndarray) -> np.ndarray:
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    pixels.setflags(write=False)
    return pixels


# --------------------------------------------------------------------------- output


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False, mode: int = 0o644
) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed to disk,
    then renamed into place. Without ``overwrite`` an existing file is never
    replaced, even by a concurrent writer (the final step is a hard link, which
    fails if the name exists).

    ``mode`` is the file's permissions (the umask does not apply). The temporary
    file is created 0600 and only widened to ``mode`` once written, so a secret
    written with ``mode=0o600`` is never readable by others, not even for an instant.

    Example:
        >>> atomic_write_bytes("out/report.json", b"{}")  # doctest: +SKIP
        PosixPath('out/report.json')
        >>> atomic_write_bytes("keys/db.url", b"postgresql://...", mode=0o600)  # doctest: +SKIP
        PosixPath('keys/db.url')
    """
    dest = Path(path)
    if dest.is_dir():
        raise OutputExistsError(f"{dest}: is a directory; give a file name")
    if not overwrite and dest.exists():
        raise OutputExistsError(
            f"{dest}: already exists; choose another output path or pass overwrite=True"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 (O_CREAT|O_EXCL), whatever the umask.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as err:
        raise ImageWriteError(f"{dest}: cannot write here ({err.strerror or err})") from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            # On the descriptor, not the name: nobody can swap the file in between.
            os.fchmod(fh.fileno(), mode)
        if overwrite:
            os.replace(tmp, dest)
        else:
            _link_no_clobber(tmp, dest)
        _fsync_dir(dest.parent)
    except FileExistsError:
        raise OutputExistsError(
            f"{dest}: was created by someone else while writing; nothing was replaced"
        ) from None
    except OSError as err:
        raise ImageWriteError(
            f"{dest}: write failed ({err.strerror or err}); nothing was replaced"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _link_no_clobber(tmp: Path, dest: Path) -> None:
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links: fall back to rename after a last check.
        if dest.exists():
            raise FileExistsError(dest) from None
        os.rename(tmp, dest)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def encode_image(pixels: np.ndarray | Image.Image, fmt: str, *, quality: int = 95) -> bytes:
    """Encode RGB pixels as ``fmt`` (``"PNG"``, ``"JPEG"`` or ``"WEBP"``) bytes.

    PNG is lossless and the default everywhere an exact perturbation matters;
    JPEG and WebP are written at ``quality`` (WebP lossless when quality is 100).

    Example:
        >>> len(encode_image(np.zeros((8, 8, 3), np.uint8), "PNG")) > 0
        True
    """
    fmt = fmt.upper()
    if fmt not in set(SAVE_FORMATS.values()):
        raise InputError(f"cannot write {fmt} images; use PNG, JPEG or WebP")
    img = pixels if isinstance(pixels, Image.Image) else Image.fromarray(_as_rgb(pixels))
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", optimize=False)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=quality, lossless=quality >= 100)
    else:
        img.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buf.getvalue()


def save_image(
    pixels: np.ndarray | Image.Image,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    quality: int = 95,
) -> Path:
    """Encode ``pixels`` by the suffix of ``path`` and write the file atomically.

    Example:
        >>> save_image(load_image("in.jpg").pixels, "out/in.png")  # doctest: +SKIP
        PosixPath('out/in.png')
    """
    dest = Path(path)
    fmt = SAVE_FORMATS.get(dest.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{dest}: unknown image suffix {dest.suffix!r}; use one of {', '.join(SAVE_FORMATS)}"
        )
    return atomic_write_bytes(dest, encode_image(pixels, fmt, quality=quality), overwrite=overwrite)


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(
            f"expected uint8 pixels of shape (height, width, 3), got {pixels.dtype} {pixels.shape}"
        )
    return np.ascontiguousarray(pixels)


def max_abs_delta(a: np.ndarray, b: np.ndarray) -> int:
    """Largest per-pixel difference between two uint8 images, in 8-bit levels.

    Example:
        >>> max_abs_delta(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 8, np.uint8))
        8
    """
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# --------------------------------------------------------------------------- tensors

PixelRange = Literal["unit", "signed"]


def pixels_to_tensor(
    pixels: np.ndarray | list[np.ndarray],
    *,
    value_range: PixelRange = "unit",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Turn uint8 RGB pixels into an ``(N, 3, H, W)`` float tensor.

    ``value_range="unit"`` gives ``[0, 1]`` (what photoimmune's budgets use);
    ``"signed"`` gives ``[-1, 1]`` (what diffusers' VAEs expect).

    Example:
        >>> pixels_to_tensor(np.full((2, 2, 3), 255, np.uint8)).amax().item()
        1.0
    """
    import torch

    stack = [_as_rgb(p) for p in pixels] if isinstance(pixels, list) else [_as_rgb(pixels)]
    if len({p.shape for p in stack}) != 1:
        raise InputError("all images in a batch must have the same size; resize them first")
    batch = torch.from_numpy(np.stack(stack)).permute(0, 3, 1, 2)
    tensor = batch.to(device=device, dtype=dtype or torch.float32) / 255.0
    return tensor * 2.0 - 1.0 if value_range == "signed" else tensor


def tensor_to_pixels(tensor: torch.Tensor, *, value_range: PixelRange = "unit") -> np.ndarray:
    """Turn a ``(3, H, W)`` or ``(N, 3, H, W)`` float tensor into uint8 RGB pixels.

    Values are clamped to the range and rounded to the nearest 8-bit level, so
    ``tensor_to_pixels(pixels_to_tensor(p))`` returns ``p`` exactly. A batch
    gives ``(N, H, W, 3)``.

    Example:
        >>> tensor_to_pixels(torch.zeros(3, 2, 2), value_range="signed")[0, 0]
        array([128, 128, 128], dtype=uint8)
    """
    import torch

    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise InputError(f"expected a (3, H, W) or (N, 3, H, W) tensor, got {tuple(tensor.shape)}")
    unit = (
        (tensor.detach().float() + 1.0) / 2.0
        if value_range == "signed"
        else tensor.detach().float()
    )
    levels = torch.round(unit.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return levels.movedim(-3, -1).cpu().numpy()
