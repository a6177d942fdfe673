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
  Other files a user names (keys, certificates) are refused the same way by
  :func:`check_input_file` before they are read.
* **Paths** holding a NUL character are refused as bad input (the OS cannot name
  them), and an environment variable naming a folder counts as unset when empty
  (:func:`env_path`).
* **Output** is atomic (temporary file, fsync, rename) and never replaces an
  existing file unless ``overwrite=True`` is passed, so an original can't be lost.
  A name too long for the file system is refused by :func:`check_output_path`
  before anything is computed.
* **Layers**: decoding and encoding live below the manifests, in
  :mod:`photoimmune.sdk.codec` (re-exported here); this module sits above
  :mod:`photoimmune.sdk.manifest`, which ``load_image(verify=True)`` calls.
* **Tensors**: :func:`pixels_to_tensor` and :func:`tensor_to_pixels` are the one
  place where 8-bit pixels meet ``[0, 1]`` or ``[-1, 1]`` float tensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
from PIL import Image

from .codec import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    SAFE_FORMATS,
    SAVE_FORMATS,
    DecodedImage,
    ImageSource,
    as_rgb_pixels,
    check_input_file,
    check_no_nul,
    decode_image,
    encode_image,
    encode_png_fast,
    read_image_bytes,
)
from .errors import (
    ImageLoadError,
    ImageWriteError,
    InputError,
    OutputExistsError,
    OutputPathError,
)
from .limits import check_count
from .manifest import ManifestReport, TrustAnchors, missing_report, read_manifest

if TYPE_CHECKING:  # torch is imported lazily: reading a file should not cost its 3 s import
    import torch

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "SAFE_FORMATS",
    "SAVE_FORMATS",
    "DecodedImage",
    "ImageSource",
    "LoadedImage",
    "PixelRange",
    "atomic_write_bytes",
    "check_input_file",
    "check_not_an_input",
    "check_output_dir",
    "check_output_path",
    "decode_image",
    "encode_image",
    "encode_png_fast",
    "env_path",
    "load_image",
    "max_abs_delta",
    "pixels_to_tensor",
    "read_image_bytes",
    "save_image",
    "stale_temp_files",
    "tensor_to_pixels",
]


@dataclass(frozen=True)
class LoadedImage(DecodedImage):
    """A :class:`~photoimmune.sdk.codec.DecodedImage` (pixels, name, format, original
    mode, data) and, if asked, its manifest.

    Attributes:
        manifest: the verified C2PA manifest report when loaded with ``verify=True``.
    """

    manifest: ManifestReport | None = None


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
        max_pixels: refuse images with more pixels, before decoding; a whole number
            above 0. Default: :data:`DEFAULT_MAX_PIXELS` (about 67 megapixels).
        max_bytes: refuse files larger than this; a whole number above 0.
            Default: :data:`DEFAULT_MAX_BYTES` (256 MiB).
        verify: read and judge the file's C2PA manifest into
            :attr:`LoadedImage.manifest`. Default: False.
        trust: trust anchors (CA certificates) for ``verify``: PEM bytes or text, a PEM
            file's path, or a list of them (as :func:`~.manifest.read_manifest` takes).
            Default: None, nothing trusted.

    Returns:
        The :class:`LoadedImage`; its pixels are read-only ``uint8 (H, W, 3)``.

    Example:
        >>> img = load_image("photo.jpg")
        >>> img.pixels.shape, img.pixels.dtype
        ((64, 64, 3), dtype('uint8'))
        >>> load_image("photo.jpg", verify=True).manifest.verdict  # never signed
        'missing'
    """
    for name, limit, default in (
        ("max_pixels", max_pixels, DEFAULT_MAX_PIXELS),
        ("max_bytes", max_bytes, DEFAULT_MAX_BYTES),
    ):
        check_count(limit, name, 1, note=f"default {default}")
    if isinstance(source, str) and not source:  # Path("") would name the current folder
        raise ImageLoadError(
            "an empty path was given; pass an image file's path, its bytes, a PIL image or a "
            "uint8 array"
        )
    decoded = decode_image(source, max_pixels=max_pixels, max_bytes=max_bytes)
    fields = {f.name: getattr(decoded, f.name) for f in dataclasses.fields(decoded)}
    if not verify:
        return LoadedImage(**fields)
    if decoded.data is None:
        report = missing_report("a PIL image or array carries no manifest; load the file itself")
    else:
        report = read_manifest(decoded.data, trust=trust, pixels=decoded.pixels)
    return LoadedImage(**fields, manifest=report)


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
    check_no_nul(path, OutputPathError)
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


def check_not_an_input(
    path: str | os.PathLike[str], inputs: Iterable[object], *, option: str = "output"
) -> Path:
    """Refuse an output that is one of ``inputs``, even where outputs may be replaced.

    Generated files (a report's CSV, its pictures) replace their own earlier copies
    on a rerun; an input photo given the same name must never be one of them. Inputs
    that are not paths (bytes, arrays) cannot collide and are skipped.

    Example:
        >>> check_not_an_input("out/table.csv", ["photo.png"], option="--csv")
        PosixPath('out/table.csv')
    """
    dest = Path(path)
    for source in inputs:
        if not isinstance(source, (str, os.PathLike)):
            continue
        with contextlib.suppress(OSError):  # either missing: nothing to protect
            if os.path.samefile(dest, source):
                raise OutputPathError(
                    f"{option} {dest}: is one of the input photos, which are never "
                    "overwritten; choose another path"
                )
    return dest


def check_output_dir(path: str | os.PathLike[str], *, option: str = "output folder") -> Path:
    """Refuse a folder that files can never be written into; call it before any compute.

    The folder may be missing (writers create it), but it must not be a file, nor
    lie under one, and this user must be allowed to create files in it (or, while it
    is missing, in the nearest folder above it that exists). ``option`` names it in
    the message (``"-o"`` in the CLI).

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
    # os.access, not the mode bits: it answers for this user (root, ACLs, a read-only mount),
    # and creating an entry in a folder takes both write and search (x) permission.
    existing = next(p for p in (folder, *folder.absolute().parents) if os.path.lexists(p))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{option} {folder}: {existing} is not writable for you; choose another folder "
            "or change its permissions"
        )
    return folder


def env_path(name: str) -> Path | None:
    """The path the environment variable ``name`` holds, or None when it is unset or empty.

    Empty counts as unset: ``VAR= command`` clears a variable for one command, and an
    empty path would otherwise mean the current folder, where files would then appear.

    Example:
        >>> env_path("PHOTOIMMUNE_KEY_DIR")  # doctest: +SKIP
        PosixPath('/home/me/keys')
        >>> env_path("PHOTOIMMUNE_UNSET_EXAMPLE") is None
        True
    """
    value = os.environ.get(name, "")
    return Path(value) if value else None


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


def build_folder(folder: Path, what: str, *, mode: int = 0o777) -> Path:
    """Create the hidden sibling a new ``folder`` is built in before it is renamed into
    place, so that a failure (or Ctrl-C) leaves nothing under the name asked for.

    Its name starts with ``folder``'s cut short, so a name that fits the file system still
    does; :func:`interrupted_builds` finds the ones a killed process left. ``mode`` is
    reduced by the umask, as ``mkdir``'s is. A place the file system refuses is an
    :class:`OutputPathError` naming ``folder`` (``what`` says what it was to hold).

    Example:
        >>> work = build_folder(Path("out/keys"), "key folder", mode=0o700)
        >>> work.name.startswith(".keys.init-")
        True
        >>> work.rmdir()
    """
    work = folder.parent / f"{_build_prefix(folder)}{secrets.token_hex(4)}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir(mode=mode)
    except OSError as err:  # the file system refuses the place itself: the path is wrong
        raise OutputPathError(
            f"{folder}: cannot create the {what} ({err.strerror or err}); check the path, "
            "or choose another folder"
        ) from None
    return work


def interrupted_builds(folder: Path) -> list[Path]:
    """The hidden build folders of ``folder`` (:func:`build_folder`) a killed process left.

    Names are compared as strings, never as glob patterns: a folder may be called ``[1]``.

    Example:
        >>> interrupted_builds(Path("out/no-such-parent/keys"))
        []
    """
    prefix = _build_prefix(folder)
    try:
        names = os.listdir(folder.parent)
    except OSError:  # no parent yet: nothing was left there
        return []
    return sorted(folder.parent / name for name in names if name.startswith(prefix))


def _build_prefix(folder: Path) -> str:
    return f".{folder.name[:32]}.init-"


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

    _check_range(value_range)
    stack = (
        [as_rgb_pixels(p) for p in pixels] if isinstance(pixels, list) else [as_rgb_pixels(pixels)]
    )
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

    _check_range(value_range)
    if not isinstance(tensor, torch.Tensor):
        raise InputError(
            f"tensor: got a {type(tensor).__name__}; give a torch tensor (a uint8 numpy array "
            "is pixels already)"
        )
    if not tensor.is_floating_point():
        # An 8-bit tensor's 200 would read as 200.0, clamped to 1.0: white.
        raise InputError(
            f"tensor: dtype {tensor.dtype} holds no [0, 1] or [-1, 1] values; give a float "
            "tensor (8-bit levels: tensor.float() / 255)"
        )
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise InputError(f"expected a (3, H, W) or (N, 3, H, W) tensor, got {tuple(tensor.shape)}")
    unit = (
        (tensor.detach().float() + 1.0) / 2.0
        if value_range == "signed"
        else tensor.detach().float()
    )
    levels = torch.round(unit.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return levels.movedim(-3, -1).cpu().numpy()


def _check_range(value_range: object) -> None:
    if value_range not in get_args(PixelRange):
        raise InputError(
            f"value_range={value_range!r}: use 'unit' for [0, 1] or 'signed' for [-1, 1]"
        )
