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
  formats are decoded (PNG, JPEG, WebP, GIF, BMP, TIFF, PPM), and whatever a
  decoder raises on a crafted file becomes :class:`ImageLoadError` (exit status 2).
* **Files** are read only by :func:`read_image_bytes`: regular files only (FIFOs
  and devices are refused, never waited on), bounded by the bytes actually read.
* **Output** is atomic (temporary file, fsync, rename) and never replaces an
  existing file unless ``overwrite=True`` is passed, so an original can't be lost.
  A name too long for the file system is refused by :func:`check_output_path`
  before anything is computed.
* **Tensors**: :func:`pixels_to_tensor` and :func:`tensor_to_pixels` are the one
  place where 8-bit pixels meet ``[0, 1]`` or ``[-1, 1]`` float tensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import stat
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    ImageLoadError,
    ImageWriteError,
    InputError,
    OutputExistsError,
    OutputPathError,
    PhotoimmuneError,
)

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

    Args:
        source: a path, the file's bytes, a PIL image or a uint8 array (``(H, W)``,
            ``(H, W, 3)`` or ``(H, W, 4)``).
        max_pixels: refuse images with more pixels, before decoding.
            Default: :data:`DEFAULT_MAX_PIXELS` (about 67 megapixels).
        max_bytes: refuse files larger than this. Default: :data:`DEFAULT_MAX_BYTES`
            (256 MiB).
        verify: read and judge the file's C2PA manifest into
            :attr:`LoadedImage.manifest`. Default: False.
        trust: PEM trust anchors (CA certificates) for ``verify``. Default: None,
            nothing trusted.

    Returns:
        The :class:`LoadedImage`; its pixels are read-only ``uint8 (H, W, 3)``.

    Example:
        >>> img = load_image("photo.jpg")
        >>> img.pixels.shape, img.pixels.dtype
        ((64, 64, 3), dtype('uint8'))
        >>> load_image("photo.jpg", verify=True).manifest.verdict  # never signed
        'missing'
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
        with _decoder_errors(name):  # a lazily opened PIL image decodes only now
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


@contextlib.contextmanager
def _open_regular(name: str) -> Iterator[int]:
    """A read-only descriptor of the regular file ``name``, closed afterwards."""
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


def _require_regular(mode: int, name: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((what for test, what in _SPECIAL_KINDS if test(mode)), "a special file")
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
    return ImageLoadError(
        f"{name}: {amount}, over the {max_bytes}-byte limit; downscale the image or raise max_bytes"
    )


def _decode(data: bytes, name: str, max_pixels: int) -> LoadedImage:
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


def _decode_checked(data: bytes, name: str, max_pixels: int) -> LoadedImage:
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

    The path is checked first (:func:`check_output_path`); the temporary name is
    short whatever the final one, so a name that passes never fails for its length.

    Args:
        path: the file to write; missing parent folders are created.
        data: the file's bytes.
        overwrite: replace an existing file. Default: False (raise
            :class:`OutputExistsError`).
        mode: the file's permissions. Default: ``0o644``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> atomic_write_bytes("out/report.json", b"{}")
        PosixPath('out/report.json')
        >>> atomic_write_bytes("keys/db.url", b"postgresql://...", mode=0o600)
        PosixPath('keys/db.url')
    """
    dest = check_output_path(path, overwrite=overwrite)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 (O_CREAT|O_EXCL), whatever the umask.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=_temp_prefix(dest), suffix=".tmp")
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


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Refuse an output path that can never be written; call it before computing the content.

    A name longer than its file system allows (``NAME_MAX``, usually 255 bytes),
    a directory in the way, a parent that is a file, or (``overwrite=False``) a
    file already there would otherwise fail only at write time, after the
    expensive part. :func:`atomic_write_bytes` checks this itself, and its
    temporary names are short, so a name that passes here never fails for its
    length later.

    Example:
        >>> check_output_path("out/cat.png")
        PosixPath('out/cat.png')
        >>> check_output_path("photo.jpg", overwrite=False)
        Traceback (most recent call last):
        photoimmune.sdk.errors.OutputExistsError: photo.jpg: already exists; ... overwrite=True
        >>> check_output_path("out/" + "x" * 300 + ".png")
        Traceback (most recent call last):
        photoimmune.sdk.errors.OutputPathError: out/xxx...: the name ... is 304 bytes, over ...
    """
    dest = Path(path)
    # Lengths first: asking the file system about a name that is too long fails itself.
    limit = _name_max(dest.parent)
    for part in _parts_to_create(dest):
        size = len(os.fsencode(part))
        if size > limit:
            raise OutputPathError(
                f"{_abbreviated(str(dest))}: the name {_abbreviated(part)!r} is {size} bytes, "
                f"over this file system's limit of {limit}; choose a shorter name"
            )
    if dest.is_dir():
        raise OutputExistsError(f"{dest}: is a directory; give a file name")
    _check_parent_is_folder(dest)
    if not overwrite and os.path.lexists(dest):  # lexists: a dangling link is in the way too
        raise OutputExistsError(
            f"{dest}: already exists; choose another output path or pass overwrite=True"
        )
    return dest


def check_output_dir(path: str | os.PathLike[str], *, option: str = "output folder") -> Path:
    """Refuse a folder that files can never be written into; call it before any compute.

    The folder may be missing (writers create it), but it must not be a file, nor
    lie under one. ``option`` names it in the message (``"-o"`` in the CLI).

    Example:
        >>> check_output_dir("out/immunized")
        PosixPath('out/immunized')
        >>> check_output_dir("photo.jpg", option="-o")
        Traceback (most recent call last):
        photoimmune.sdk.errors.OutputPathError: -o photo.jpg: is a file, not a folder; ...
    """
    folder = Path(path)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputPathError(
            f"{option} {folder}: is a file, not a folder; give the folder to write into "
            "(it is created if missing)"
        )
    _check_parent_is_folder(folder / "x", option=option)
    return folder


def _check_parent_is_folder(dest: Path, option: str | None = None) -> None:
    """The nearest existing parent of ``dest`` must be a folder (``a.jpg/b.png`` never works)."""
    for parent in dest.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                where = f"{option} {dest.parent}" if option else str(dest)
                raise OutputPathError(f"{where}: {parent} is a file, not a folder")
            return


def _name_max(folder: Path) -> int:
    """NAME_MAX of the file system ``folder`` (or its nearest existing parent) is on."""
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError, ValueError):
            return os.pathconf(candidate, "PC_NAME_MAX")
    return 255  # POSIX systems all but universally


def _parts_to_create(dest: Path) -> list[str]:
    """The names of ``dest`` and of its parents that do not exist yet (existing ones fit)."""
    parts = [dest.name]
    for parent in dest.parents:
        if parent.name in ("", "..") or os.path.lexists(parent):
            break
        parts.append(parent.name)
    return parts


def _abbreviated(name: str) -> str:
    """``name`` short enough for a message, with its start and its end."""
    return name if len(name) <= 60 else f"{name[:40]}…{name[-16:]}"


def _temp_prefix(dest: Path) -> str:
    """The start of :func:`atomic_write_bytes`' temporary names for ``dest``.

    Short whatever the final name (at most 16 characters of it, so any name that
    fits the file system can be written), yet tied to it: the digest of the
    whole name tells apart files whose names begin alike.
    """
    digest = hashlib.sha256(os.fsencode(dest.name)).hexdigest()[:8]
    return f".{dest.name[:16]}.{digest}."


def stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files a killed :func:`atomic_write_bytes` to ``path`` left behind.

    Names are compared as strings, never as glob patterns: a photo may be
    called ``**.png`` or ``[1].png``. Only remove them while nobody else can
    be writing ``path``.

    Example:
        >>> for stale in stale_temp_files("out/cat.png"):
        ...     stale.unlink(missing_ok=True)
    """
    dest = Path(path)
    ours = _temp_prefix(dest)
    legacy = f".{dest.name}."  # what earlier versions named them
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return []
    return [
        dest.parent / name
        for name in names
        if name.endswith(".tmp")
        and (name.startswith(legacy) or (name.startswith(ours) and len(name) == len(ours) + 12))
    ]


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

    Args:
        pixels: uint8 RGB ``(H, W, 3)`` (grayscale ``(H, W)`` is expanded) or a PIL image.
        fmt: ``"PNG"``, ``"JPEG"`` or ``"WEBP"``.
        quality: JPEG/WebP quality, 1-100. Default: 95.

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

    Args:
        pixels: uint8 RGB ``(H, W, 3)`` or a PIL image.
        path: the file to write; its suffix (``.png``, ``.jpg``, ``.jpeg``, ``.webp``)
            picks the format.
        overwrite: replace an existing file. Default: False.
        quality: JPEG/WebP quality, 1-100. Default: 95.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> save_image(load_image("photo.jpg").pixels, "out/photo.png")
        PosixPath('out/photo.png')
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

    Args:
        pixels: one uint8 ``(H, W, 3)`` array or a list of equal-size ones.
        value_range: ``"unit"`` or ``"signed"``. Default: ``"unit"``.
        device: where the tensor goes. Default: None, the CPU.
        dtype: the tensor's dtype. Default: None, float32.

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

    Args:
        tensor: ``(3, H, W)`` or ``(N, 3, H, W)``.
        value_range: the range ``tensor`` is in, ``"unit"`` for ``[0, 1]`` or
            ``"signed"`` for ``[-1, 1]``. Default: ``"unit"``.

    Example:
        >>> import torch
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
