"""Finding the images a pipeline call edits, and putting re-immunized ones back.

Which argument is *the edited image* depends on the pipeline: ``image`` for
img2img, inpainting, InstructPix2Pix, SDXL and Flux img2img/inpaint/Kontext;
but in a ControlNet or T2I-Adapter text-to-image pipeline ``image`` is the
*condition* (an edge map, a pose), which is not the photo being edited, and
``control_image``, ``mask_image`` and ``ip_adapter_image`` never are.

An argument may hold one image or a list, each a PIL image, a path, file bytes,
the SDK loader's :class:`~photoimmune.sdk.io.LoadedImage`, a numpy array
(``HWC``/``NHWC``, uint8 or float in [0, 1]) or a tensor (``CHW``/``NCHW`` in [0, 1],
or [-1, 1]); other values (0..255 floats, a uint8 tensor) are refused, not clipped.
Arrays and tensors go to the pipeline as they came, or in the same form once
re-immunized; PIL images, paths and bytes go as PIL images of the checked pixels
(EXIF orientation applied), the form every pipeline accepts. A C2PA manifest
is read only where file bytes come with the image: a path, bytes, a
``LoadedImage``, or a PIL image straight from ``Image.open`` (whose file is read
again). A converted PIL image, an array or a tensor has none to read. Of a
multi-frame PIL image, the frame it is at is checked and edited, as diffusers
would edit it; paths and bytes give their first frame.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from photoimmune.sdk.errors import InputError
from photoimmune.sdk.io import (
    DEFAULT_MAX_BYTES,
    LoadedImage,
    PixelRange,
    load_image,
    pixels_to_tensor,
    tensor_to_pixels,
)

#: Components that turn ``image`` into a condition rather than the picture being edited.
_CONDITION_COMPONENTS = ("controlnet", "adapter")


@dataclass
class EditedImage:
    """One image of one argument, decoded, with the file bytes when there are any."""

    argument: str
    index: int
    pixels: np.ndarray  # uint8 (H, W, 3)
    data: bytes | None  # the file's bytes: where a C2PA manifest lives
    source: str
    to_input: Callable[[np.ndarray], Any]  # uint8 pixels -> the form this image came in
    original: Any = None  # what the caller passed, when a pipeline takes it as it is

    def as_input(self, pixels: np.ndarray | None) -> Any:
        """What to give the pipeline: the caller's own object if nothing changed."""
        if pixels is None:
            return self.original if self.original is not None else self.to_input(self.pixels)
        return self.to_input(pixels)


@dataclass
class EditedArgument:
    """An argument's images, and how to rebuild the argument from (new) pixels."""

    name: str
    images: list[EditedImage]
    rebuild: Callable[[list[Any]], Any]


def edited_argument_names(pipe) -> tuple[str, ...]:
    """The call arguments that carry the image(s) this pipeline edits.

    Example:
        >>> edited_argument_names(StableDiffusionImg2ImgPipeline(**parts))  # doctest: +SKIP
        ('image',)
    """
    params = inspect.signature(type(pipe).__call__).parameters
    if "image" not in params:
        return ()  # text-to-image: nothing is edited
    components = getattr(pipe, "components", {}) or {}
    conditioned = any(components.get(name) is not None for name in _CONDITION_COMPONENTS)
    if conditioned and "control_image" not in params:
        return ()  # `image` is the control condition
    return ("image",)


def bind_call(call: Callable, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """The call's arguments by name, however they were passed."""
    return inspect.signature(call).bind_partial(None, *args, **kwargs)  # None stands for self


def is_latents(value: Any) -> bool:
    """Whether an argument holds latents (tensors whose channel axis is not 3), not pixels."""
    items = value if isinstance(value, list | tuple) else [value]
    return any(isinstance(v, torch.Tensor) and v.ndim in (3, 4) and v.shape[-3] != 3 for v in items)


def read_argument(name: str, value: Any) -> EditedArgument | None:
    """Decode an argument's images, one :class:`EditedImage` each (None when it holds none).

    Batches (``NCHW`` tensors, ``NHWC`` arrays), alone or in a list, count image by image.
    """
    if value is None:
        return None
    items = list(value) if isinstance(value, list | tuple) else [value]
    # diffusers reads the range of tensors once for the whole argument, so do we.
    signed = any(isinstance(v, torch.Tensor) and bool(v.min() < 0) for v in items)
    images: list[EditedImage] = []
    sizes: list[int | None] = []  # batch size of each item, None for a single image
    for item in items:
        parts = list(item) if _is_batch(item) else [item]
        sizes.append(len(parts) if _is_batch(item) else None)
        images += [_read_one(name, len(images), part, signed) for part in parts]

    def rebuild(values: list[Any]) -> Any:
        out, at = [], 0
        for item, size in zip(items, sizes, strict=True):
            if size is None:
                out.append(values[at])
            else:
                stack = np.stack if isinstance(item, np.ndarray) else torch.stack
                out.append(stack(values[at : at + size]))
            at += size or 1
        return out if isinstance(value, list | tuple) else out[0]

    return EditedArgument(name, images, rebuild)


def _is_batch(value: Any) -> bool:
    return isinstance(value, np.ndarray | torch.Tensor) and value.ndim == 4


def _read_one(name: str, index: int, value: Any, signed: bool) -> EditedImage:
    if isinstance(value, LoadedImage):
        return EditedImage(name, index, value.pixels, value.data, value.name, _to_pil)
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if isinstance(value, str | os.PathLike | bytes):
        loaded = load_image(value)
        return EditedImage(name, index, loaded.pixels, loaded.data, loaded.name, _to_pil)
    if isinstance(value, Image.Image):
        # The pipeline gets the checked pixels (EXIF orientation applied, transparency
        # flattened), so what is edited is exactly what was checked.
        source = str(getattr(value, "filename", "") or "<PIL image>")
        pixels = load_image(_current_frame(value)).pixels
        return EditedImage(name, index, pixels, _file_of(value), source, _to_pil)
    if isinstance(value, np.ndarray):
        _check_values(f"{name}[{index}]", value)
        pixels, to_input = load_image(uint8_pixels(value)).pixels, _array_like(value)
        return EditedImage(name, index, pixels, None, "<array>", to_input, value)
    if isinstance(value, torch.Tensor):
        _check_values(f"{name}[{index}]", value)
        pixels, to_input = _tensor_pixels(value, signed)
        return EditedImage(name, index, pixels, None, "<tensor>", to_input, value)
    raise InputError(
        f"{name}[{index}]: cannot read a {type(value).__name__} as an image; pass PIL images, "
        "paths, bytes, numpy arrays or tensors"
    )


def _check_values(where: str, value: np.ndarray | torch.Tensor) -> None:
    """Refuse numbers in a range diffusers does not read: 0..255 floats, or a uint8 tensor,
    would be clipped to an all-white picture, checked as clean and edited as such."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8 or value.size == 0:  # an empty one: the loader says why
            return
        kind, floating, low = "array", value.dtype.kind == "f", 0
        expected, convert, scale = "uint8, or floats in [0, 1]", "array.astype(np.uint8)", "array"
    else:
        if value.numel() == 0:
            return
        kind, floating, low = "tensor", value.is_floating_point(), -1
        expected, convert, scale = "floats in [0, 1] or [-1, 1]", "tensor.float() / 255", "tensor"
    if not floating:
        raise InputError(
            f"{where}: {kind} of {value.dtype}; diffusers reads {kind}s of {expected}: "
            f"convert it (for 0..255 values, {convert})"
        )
    lowest, highest = float(value.min()), float(value.max())
    if not low <= lowest <= highest <= 1:  # NaN compares false: refused too
        raise InputError(
            f"{where}: {kind} with values from {lowest:g} to {highest:g}; diffusers reads "
            f"{kind}s of {expected}: scale it (for 0..255 values, {scale} / 255)"
        )


def _current_frame(img: Image.Image) -> Image.Image:
    """The frame of a multi-frame image (GIF, APNG, WebP, TIFF) that it is at, alone.

    The pipeline edits the frame the caller selected with ``seek()`` (diffusers
    converts the current frame), while the SDK loader takes a file's first frame and
    would rewind the caller's image to it. A copy holds the current frame only, and
    the caller's image stays where it was.
    """
    return img.copy() if img.tell() else img


def _to_pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels)


def _file_of(img: Image.Image) -> bytes | None:
    """The bytes of the file an ``Image.open``-ed picture came from: its manifest lives there.

    Whether those bytes still describe the picture is what the manifest's pixel
    binding decides, so a picture changed since it was opened is not trusted.
    """
    path = Path(getattr(img, "filename", "") or "")
    if not path.name or not path.is_file() or path.stat().st_size > DEFAULT_MAX_BYTES:
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


def uint8_pixels(array: np.ndarray) -> np.ndarray:
    """A picture as diffusers passes arrays (uint8, or floats in [0, 1]) in contiguous
    uint8: floats are clipped to [0, 1] and rounded to the nearest 8-bit level.

    Example:
        >>> uint8_pixels(np.array([[[0.0, 0.5, 1.5]]], np.float32)).tolist()
        [[[0, 128, 255]]]
    """
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    scaled = np.clip(np.asarray(array, dtype=np.float32), 0, 1) * 255
    return np.ascontiguousarray(np.round(scaled).astype(np.uint8))


def _array_like(array: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    if array.dtype == np.uint8:
        return lambda pixels: pixels
    return lambda pixels: (pixels.astype(np.float32) / 255).astype(array.dtype)


def _tensor_pixels(
    tensor: torch.Tensor, signed: bool
) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Pixels of a ``CHW`` tensor in [0, 1], or in [-1, 1] when ``signed``."""
    value_range: PixelRange = "signed" if signed else "unit"
    pixels = tensor_to_pixels(tensor, value_range=value_range)

    def to_input(new: np.ndarray) -> torch.Tensor:
        out = pixels_to_tensor(new, value_range=value_range, device=tensor.device)[0]
        return out.to(dtype=tensor.dtype)

    return pixels, to_input
