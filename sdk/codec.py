"""Image files and pixels: safe decoding, and encoding; no manifests, no writes.

The lowest layer of image I/O. :mod:`photoimmune.sdk.io` (``load_image``, the
writers, the tensors) and :mod:`photoimmune.sdk.manifest` (which decodes the
pixels it signs and judges) both sit on it, so the order is: decoding here, then
manifests, then ``load_image(verify=True)`` in ``io``. Callers use
:mod:`photoimmune.sdk.io`, which re-exports the public names; the rules are
listed there and in ``docs/images.md``:

* **Input** (:func:`decode_image`): a path, raw bytes, a PIL image or a uint8
  numpy array becomes 8-bit RGB, ``(height, width, 3)``, EXIF orientation applied;
  modes are expanded, 16-bit scaled, transparency composited on white, animations
  give their first frame.
* **Limits**: ``max_bytes`` and ``max_pixels`` are checked *before* decoding; only
  :data:`SAFE_FORMATS` are decoded, and whatever a decoder raises on a crafted
  file becomes :class:`ImageLoadError` (exit status 2).
* **Files** are read only by :func:`read_image_bytes` (regular files only).
* **Output bytes**: :func:`encode_image` (PNG, JPEG, WebP), and
  :func:`encode_png_fast` where encoding speed matters more than bytes; writing
  them is ``io``'s :func:`~photoimmune.sdk.io.atomic_write_bytes`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    ImageLoadError,
    ImageTooLargeError,
    ImageWriteError,
    InputError,
    PhotoimmuneError,
)
from .limits import check_count

#: Refuse images with more pixels than this (about 67 megapixels, e.g. 8192x8192).
DEFAULT_MAX_PIXELS = 1 << 26
#: Refuse files larger than this many bytes before reading them.
DEFAULT_MAX_BYTES = 256 << 20
#: Raster formats we decode. Others (EPS, PDF, ...) are refused: some of Pillow's
#: decoders shell out or are rarely exercised, and none is a photo format.
SAFE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
#: Formats :func:`~photoimmune.sdk.io.save_image` writes, by file suffix.
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

_WHITE = (255, 255, 255)
#: The widest or tallest picture each format can hold (PNG's limit is far beyond memory):
#: libjpeg stops at 65500 pixels a side, libwebp at 16383.
_MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded to 8-bit RGB, and where it came from.

    :func:`~photoimmune.sdk.io.load_image` returns its subclass
    :class:`~photoimmune.sdk.io.LoadedImage`, which adds the manifest report.

    Attributes:
        pixels: ``uint8`` array of shape ``(height, width, 3)``, read-only.
        name: the path, or ``"<bytes>"``/``"<PIL image>"``/``"<array>"``, for messages.
        format: the container format Pillow found (``"PNG"``, ``"JPEG"``...), or None.
        original_mode: the Pillow mode before conversion (``"CMYK"``, ``"I;16"``...).
        data: the raw file bytes when loaded from a path or bytes (kept so that
            metadata Pillow drops, such as C2PA manifests, can still be read).
    """

    pixels: np.ndarray
    name: str
    format: str | None
    original_mode: str
    data: bytes | None = None

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def to_pil(self) -> Image.Image:
        """Return the pixels as a new RGB PIL image."""
        return Image.fromarray(self.pixels)


ImageSource = str | os.PathLike[str] | bytes | Image.Image | np.ndarray | DecodedImage


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str = "<bytes>",
) -> DecodedImage:
    """Decode ``source`` into 8-bit RGB pixels, or raise :class:`ImageLoadError`.

    :func:`~photoimmune.sdk.io.load_image` without ``verify``; what the manifest
    code decodes with, below the manifests.

    Args:
        source: a path, the file's bytes, a PIL image or a uint8 array (``(H, W)``,
            ``(H, W, 3)`` or ``(H, W, 4)``); or an image already decoded, which
            keeps its name and bytes, so that one read of a file serves every step.
        max_pixels: refuse images with more pixels, before decoding.
            Default: :data:`DEFAULT_MAX_PIXELS`.
        max_bytes: refuse files larger than this. Default: :data:`DEFAULT_MAX_BYTES`.
        name: what messages call ``source`` when it is bytes (the caller knows where they
            came from: a file's name, "the uploaded image"). Default: ``"<bytes>"``.

    Example:
        >>> decode_image("photo.jpg").pixels.shape
        (64, 64, 3)
    """
    if isinstance(source, DecodedImage):
        _check_pixel_count((source.width, source.height), source.name, max_pixels)
        return source
    if isinstance(source, np.ndarray):
        return _load_array(source, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        name = "<PIL image>"
        _check_pixel_count(source.size, name, max_pixels)
        with _decoder_errors(name):  # a lazily opened PIL image decodes only now
            pixels = _to_rgb_array(source, name)
        return DecodedImage(_freeze(pixels), name, source.format, source.mode)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageTooLargeError(
                f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit; "
                "pass a smaller file or raise max_bytes"
            )
    elif isinstance(source, str | os.PathLike):
        name, data = os.fspath(source), read_image_bytes(source, max_bytes=max_bytes)
    else:
        raise ImageLoadError(
            f"cannot load an image from a {type(source).__name__}; "
            "pass a path, bytes, a PIL image or a uint8 numpy array"
        )
    return _decode(data, name, max_pixels)


def read_image_bytes(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES, head: int | None = None
) -> bytes:
    """Read an image file's bytes: the one way photoimmune reads a file it is given.

    Only regular files are read (a symbolic link counts as the file it points
    to): a FIFO would block forever and a device such as ``/dev/zero`` never
    ends, so both are refused before a byte is read. The file is opened
    non-blocking and checked again on the open descriptor, so a file swapped for
    a FIFO in between is refused too. The size limit is enforced on the bytes
    actually read, never on the size the file system reports (``/proc`` files
    report 0 and a growing file outgrows its size). With ``head`` only the first
    ``head`` bytes are returned, whatever the file's size.

    Raises :class:`ImageLoadError` (exit status 2) with what to do.

    Example:
        >>> read_image_bytes("photo.jpg")[:3]
        b'\\xff\\xd8\\xff'
        >>> read_image_bytes("/dev/zero")
        Traceback (most recent call last):
        photoimmune.sdk.errors.ImageLoadError: /dev/zero: is a character device, not a regular ...
    """
    name = os.fspath(path)
    with _open_regular(name) as fd:
        if head is not None:
            return _read_up_to(fd, name, head)
        size = os.fstat(fd).st_size
        if size > max_bytes:  # a quick, clear refusal; the real bound is what read() returns
            raise _too_big(name, size, max_bytes)
        data = _read_up_to(fd, name, max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_big(name, len(data), max_bytes, at_least=True)
    return data


# Windows has neither flag (nor FIFOs that block an open).
_NONBLOCKING = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def check_no_nul(path: str | os.PathLike[str], error: type[InputError]) -> None:
    """Refuse a path with a NUL character: no file can have one, and the OS calls would
    raise a bare ValueError ("embedded null byte") instead of naming the path.

    Example:
        >>> check_no_nul("a.png\\0x", InputError)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: 'a.png\\x00x': a path cannot contain a NUL ...
    """
    text = os.fspath(path)
    if "\0" in text:
        raise error(
            f"{text!r}: a path cannot contain a NUL character (\\x00); pass the file's name "
            "without it"
        )


def check_input_file(
    path: str | os.PathLike[str],
    what: str = "file",
    *,
    option: str | None = None,
    error: type[InputError] = InputError,
) -> Path:
    """Refuse a path that is not a regular file (missing, a folder, a FIFO, a device),
    saying which; call it before reading a file that is not an image (a key, a certificate).

    Images go through :func:`read_image_bytes`, which refuses the same files in the same
    words; a FIFO read with ``Path.read_bytes`` would wait forever and ``/dev/zero``
    would fill the memory, and "no such file" would send the user looking for a file
    that is there. ``what`` names the file in the advice; ``option`` (``"--cert"``)
    starts the message; ``error`` is the class raised (a key's reader raises its own).

    Example:
        >>> check_input_file("photo.jpg")
        PosixPath('photo.jpg')
        >>> check_input_file("/dev/zero", "certificate", option="--cert")
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: --cert /dev/zero: is a character device, not a ...
    """
    check_no_nul(path, error)
    source = Path(path)
    where = f"{option} {source}" if option else str(source)
    try:
        mode = source.stat().st_mode  # follows links: a link counts as the file it names
    except FileNotFoundError:
        if source.is_symlink():
            raise error(f"{where}: a symbolic link to a missing file; check the link") from None
        raise error(f"{where}: no such {what}; check the path") from None
    except OSError as err:
        raise error(
            f"{where}: cannot read it ({err.strerror or err}); check the path and its permissions"
        ) from None
    if (kind := file_kind(mode)) is not None:
        raise error(f"{where}: is {kind}, not a regular file; pass the {what} itself")
    return source


@contextlib.contextmanager
def _open_regular(name: str) -> Iterator[int]:
    """A read-only descriptor of the regular file ``name``, closed afterwards."""
    check_no_nul(name, ImageLoadError)
    try:
        # Checked before opening too: opening a device can act (a tape rewinds, a modem dials).
        _require_regular(os.stat(name).st_mode, name)
        # O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever.
        fd = os.open(name, os.O_RDONLY | _NONBLOCKING)
    except OSError as err:
        raise _open_error(name, err) from None
    try:
        _require_regular(os.fstat(fd).st_mode, name)  # the file we hold, whatever was swapped in
        yield fd
    finally:
        os.close(fd)


def _read_up_to(fd: int, name: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        while total < limit:
            chunk = os.read(fd, min(1 << 20, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as err:
        raise ImageLoadError(f"{name}: cannot read the file ({err.strerror or err})") from None
    return b"".join(chunks)


_SPECIAL_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is, in words, or None for a regular file: the
    one wording every refusal of a non-file uses.

    Example:
        >>> file_kind(os.stat("/").st_mode)
        'a directory'
    """
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _SPECIAL_KINDS if test(mode)), "a special file")


def _require_regular(mode: int, name: str) -> None:
    if (kind := file_kind(mode)) is not None:
        raise ImageLoadError(f"{name}: is {kind}, not a regular file; pass an image file")


def _open_error(name: str, err: OSError) -> ImageLoadError:
    if isinstance(err, FileNotFoundError):
        if os.path.islink(name):
            return ImageLoadError(f"{name}: a symbolic link to a missing file; check the link")
        return ImageLoadError(f"{name}: no such file; check the path")
    if isinstance(err, PermissionError):
        return ImageLoadError(f"{name}: permission denied; check the file's permissions")
    if err.errno == errno.ELOOP:
        return ImageLoadError(f"{name}: a loop of symbolic links; check the link")
    return ImageLoadError(f"{name}: cannot read the file ({err.strerror or err})")


def _too_big(name: str, size: int, max_bytes: int, *, at_least: bool = False) -> ImageLoadError:
    # at_least: the file reported a size within the limit but kept on giving bytes.
    amount = f"more than {max_bytes} bytes were read" if at_least else f"{size} bytes"
    return ImageTooLargeError(
        f"{name}: {amount}, over the {max_bytes}-byte limit; downscale the image or raise max_bytes"
    )


def _decode(data: bytes, name: str, max_pixels: int) -> DecodedImage:
    if not data:
        raise ImageLoadError(f"{name}: file is empty (0 bytes); re-export or re-download it")
    with _decoder_errors(name):
        return _decode_checked(data, name, max_pixels)


@contextlib.contextmanager
def _decoder_errors(name: str) -> Iterator[None]:
    """Turn whatever else a decoder raises into :class:`ImageLoadError` (exit status 2).

    Pillow's decoders raise more than OSError on crafted input (a TIFF frame
    without dimensions gives TypeError, found by fuzzing); a bad file is bad
    input, never a traceback, and a folder of photos must not stop at one.
    """
    try:
        yield
    except PhotoimmuneError:
        raise
    except Exception as err:
        raise ImageLoadError(
            f"{name}: cannot decode the file ({type(err).__name__}: {err}); "
            "re-export or re-download it"
        ) from None


def _decode_checked(data: bytes, name: str, max_pixels: int) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=SAFE_FORMATS)
    except UnidentifiedImageError:
        raise ImageLoadError(_unidentified_message(data, name)) from None
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
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
            raise ImageTooLargeError(
                f"{name}: image is too large to decode safely; downscale it"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageLoadError(
                f"{name}: {_damage(err)}; the {img.format} file is damaged, "
                "re-export or re-download it"
            ) from None
        pixels = _to_rgb_array(img, name)
        return DecodedImage(_freeze(pixels), name, img.format, img.mode, data)


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
        raise ImageTooLargeError(
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


def _load_array(array: np.ndarray, *, max_pixels: int) -> DecodedImage:
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
    return DecodedImage(_freeze(_to_rgb_array(img, name)), name, None, img.mode)


def _freeze(pixels: np.ndarray) -> np.ndarray:
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    pixels.setflags(write=False)
    return pixels


# --------------------------------------------------------------------------- encoding


def encode_image(pixels: np.ndarray | Image.Image, fmt: str, *, quality: int = 95) -> bytes:
    """Encode RGB pixels as ``fmt`` (``"PNG"``, ``"JPEG"`` or ``"WEBP"``) bytes.

    PNG is lossless and the default everywhere an exact perturbation matters;
    JPEG and WebP are written at ``quality`` (WebP lossless when quality is 100).
    A PIL image is first made RGB by the loader's rules (:func:`decode_image`):
    its current frame, EXIF orientation applied, transparency composited on white.

    Args:
        pixels: uint8 RGB ``(H, W, 3)`` (grayscale ``(H, W)`` is expanded) or a PIL image.
        fmt: ``"PNG"``, ``"JPEG"`` or ``"WEBP"`` (any case).
        quality: JPEG/WebP quality, a whole number from 1 to 100. Default: 95.

    Raises:
        InputError: an unknown ``fmt``, a ``quality`` out of range, pixels that are no
            picture, or one too wide or tall for ``fmt`` (JPEG: 65500 pixels a side,
            WebP: 16383).

    Example:
        >>> len(encode_image(np.zeros((8, 8, 3), np.uint8), "PNG")) > 0
        True
    """
    formats = sorted(set(SAVE_FORMATS.values()))
    if not isinstance(fmt, str) or fmt.upper() not in formats:
        raise InputError(f"fmt {fmt!r}: cannot write this format; use one of {', '.join(formats)}")
    fmt = fmt.upper()
    check_count(quality, "quality", 1, 100, note="95 by default; WebP at 100 is lossless")
    quality = int(quality)  # Pillow takes no numpy integers (nor their numpy bools)
    rgb = _rgb_to_encode(pixels)
    height, width = rgb.shape[:2]
    _check_not_empty(width, height, fmt)  # Pillow: ValueError, or MemoryError (WebP)
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise InputError(
            f"pixels: {width}x{height} is over {fmt}'s limit of {limit} pixels a side; save "
            "it as PNG, which has no such limit, or downscale it"
        )
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    try:
        if fmt == "PNG":
            img.save(buf, "PNG", optimize=False)
        elif fmt == "WEBP":
            img.save(buf, "WEBP", quality=quality, lossless=quality >= 100)
        else:
            img.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    except (OSError, ValueError) as err:  # the encoder's own limits, past the checks above
        raise ImageWriteError(
            f"pixels: the {fmt} encoder failed ({err}); try PNG, or a smaller picture"
        ) from None
    return buf.getvalue()


def _rgb_to_encode(pixels: np.ndarray | Image.Image) -> np.ndarray:
    """``pixels`` as uint8 ``(H, W, 3)``: a PIL image by the loader's rules, grayscale
    expanded, anything else checked by :func:`as_rgb_pixels`."""
    if isinstance(pixels, Image.Image):
        with _decoder_errors("pixels"):  # a lazily opened image decodes only now
            # A copy holds the current frame alone, and the caller's image stays on it.
            return _to_rgb_array(pixels.copy(), "pixels")
    if isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    return as_rgb_pixels(pixels)


def encode_png_fast(pixels: np.ndarray) -> bytes:
    """Lossless PNG bytes of uint8 RGB pixels, written for speed rather than size.

    Every row takes PNG's Sub filter (each byte minus the one a pixel to its left,
    one numpy subtraction) and the stream is deflated Huffman-only (no match
    search, which is where zlib spends its time). Pillow instead tries all five
    filters on every row and searches matches even at level 1: at 512x512 this is
    several times faster than Pillow at level 1 and about as small
    (``bench/sign_outputs.py``). Any PNG decoder reads it.

    Raises:
        InputError: ``pixels`` is not uint8 ``(height, width, 3)``.

    Example:
        >>> x = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        >>> (decode_image(encode_png_fast(x)).pixels == x).all()
        np.True_
    """
    rows = as_rgb_pixels(pixels)
    height, width = rows.shape[:2]
    _check_not_empty(width, height, "PNG")
    rows = rows.reshape(height, width * 3)
    scanlines = np.empty((height, 1 + width * 3), np.uint8)
    scanlines[:, 0] = 1  # the filter type byte: Sub
    scanlines[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=scanlines[:, 4:])  # uint8 wraps: mod 256
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    stream = deflate.compress(scanlines.data) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", stream),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _check_not_empty(width: int, height: int, fmt: str) -> None:
    if not width or not height:
        raise InputError(
            f"pixels: an empty picture ({width}x{height}) cannot be saved as {fmt}; pass at "
            "least one row and one column"
        )


def as_rgb_pixels(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as a contiguous uint8 ``(H, W, 3)`` array, or an InputError that says
    what was given instead (the encoders' and the tensor converters' one check).

    Example:
        >>> as_rgb_pixels(np.zeros((2, 2, 3), np.uint8)).shape
        (2, 2, 3)
    """
    if not isinstance(pixels, np.ndarray):  # a list would fail on .dtype, with no advice
        raise InputError(
            f"pixels: got a {type(pixels).__name__}; pass a uint8 numpy array of shape "
            "(height, width, 3) (numpy.asarray(x, dtype=numpy.uint8) converts nested lists)"
        )
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(
            f"expected uint8 pixels of shape (height, width, 3), got {pixels.dtype} {pixels.shape}"
        )
    return np.ascontiguousarray(pixels)
