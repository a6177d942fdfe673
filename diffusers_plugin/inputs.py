"""Finding the images a pipeline call edits, and putting re-immunized ones back.

Which argument is *the edited image* depends on the pipeline: ``image`` for
img2img, inpainting, InstructPix2Pix, SDXL and Flux img2img/inpaint/Kontext;
but in a ControlNet or T2I-Adapter text-to-image pipeline ``image`` is the
*condition* (an edge map, a pose), which is not the photo being edited, and
``control_image``, ``mask_image`` and ``ip_adapter_image`` never are.

An argument may hold one image or a list, each a PIL image, a path, file bytes,
the SDK loader's :class:`~photoimmune.sdk.io.LoadedImage`, a numpy array
(``HWC``/``NHWC``, uint8 or float in [0, 1]) or a tensor (``CHW``/``NCHW`` in [0, 1],
or [-1, 1]). Whatever came in, a re-immunized image goes back in the same form.
Paths and bytes go back as PIL images, the form every pipeline accepts.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from photoimmune.sdk.io import DEFAULT_MAX_BYTES, LoadedImage, load_image

logger = logging.getLogger("photoimmune.diffusers_plugin")

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


def read_argument(name: str, value: Any) -> EditedArgument | None:
    """Decode an argument's images (None when it holds none, or holds latents)."""
    if value is None:
        return None
    if _is_latents(value):
        # Already encoded: no pixels to check. Whoever encoded them chose to skip the check.
        logger.warning("%s: latents, not pixels; the immunization check cannot see them", name)
        return None
    if isinstance(value, list | tuple):
        images = [_read_one(name, i, item) for i, item in enumerate(value)]
        return EditedArgument(name, images, list)
    if _is_batch(value):
        images = [_read_one(name, i, item) for i, item in enumerate(value)]
        stack = np.stack if isinstance(value, np.ndarray) else torch.stack
        return EditedArgument(name, images, stack)
    return EditedArgument(name, [_read_one(name, 0, value)], lambda items: items[0])


def _is_latents(value: Any) -> bool:
    first = value[0] if isinstance(value, list | tuple) and value else value
    return isinstance(first, torch.Tensor) and first.ndim in (3, 4) and first.shape[-3] != 3


def _is_batch(value: Any) -> bool:
    return isinstance(value, np.ndarray | torch.Tensor) and value.ndim == 4


def _read_one(name: str, index: int, value: Any) -> EditedImage:
    if isinstance(value, LoadedImage):
        return EditedImage(name, index, value.pixels, value.data, value.name, _to_pil)
    if isinstance(value, str | os.PathLike | bytes):
        loaded = load_image(value)
        return EditedImage(name, index, loaded.pixels, loaded.data, loaded.name, _to_pil)
    if isinstance(value, Image.Image):
        source = str(getattr(value, "filename", "") or "<PIL image>")
        pixels = load_image(value).pixels
        return EditedImage(name, index, pixels, _file_of(value), source, _to_pil, value)
    if isinstance(value, np.ndarray):
        pixels, to_input = _array_pixels(value), _array_like(value)
        return EditedImage(name, index, pixels, None, "<array>", to_input, value)
    if isinstance(value, torch.Tensor):
        pixels, to_input = _tensor_pixels(value)
        return EditedImage(name, index, pixels, None, "<tensor>", to_input, value)
    from photoimmune.sdk.errors import InputError

    raise InputError(
        f"{name}[{index}]: cannot read a {type(value).__name__} as an image; pass PIL images, "
        "paths, bytes, numpy arrays or tensors"
    )


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


def _array_pixels(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return load_image(array).pixels
    scaled = np.clip(np.asarray(array, dtype=np.float32), 0, 1) * 255
    return load_image(np.round(scaled).astype(np.uint8)).pixels


def _array_like(array: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    if array.dtype == np.uint8:
        return lambda pixels: pixels
    return lambda pixels: (pixels.astype(np.float32) / 255).astype(array.dtype)


def _tensor_pixels(tensor: torch.Tensor) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Pixels of a ``CHW`` tensor; diffusers reads negative values as the [-1, 1] range."""
    signed = bool(tensor.min() < 0)
    unit = (tensor.detach().float().cpu() + 1) / 2 if signed else tensor.detach().float().cpu()
    if unit.ndim != 3 or unit.shape[0] != 3:
        from photoimmune.sdk.errors import InputError

        raise InputError(
            "expected an image tensor of shape (3, H, W) or (N, 3, H, W), "
            f"not {tuple(tensor.shape)}"
        )
    pixels = np.round(unit.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    def to_input(new: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(new).permute(2, 0, 1).float() / 255
        out = out * 2 - 1 if signed else out
        return out.to(device=tensor.device, dtype=tensor.dtype)

    return pixels, to_input
