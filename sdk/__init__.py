"""photoimmune.sdk: immunize images, read and write them safely, sign what was done.

Heavy submodules (anything that needs torch) are imported on first use, so
``import photoimmune.sdk`` and the CLI's ``--help`` stay fast.

Example:
    >>> from photoimmune.sdk import load_image
    >>> load_image("photo.jpg").pixels.shape  # doctest: +SKIP
    (512, 768, 3)
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import (
    ImageLoadError,
    ImageWriteError,
    InputError,
    OutputExistsError,
    PhotoimmuneError,
)

if TYPE_CHECKING:
    from .io import (
        LoadedImage,
        atomic_write_bytes,
        encode_image,
        load_image,
        pixels_to_tensor,
        save_image,
        tensor_to_pixels,
    )

try:
    __version__ = version("photoimmune")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public name -> submodule that defines it
_LAZY = {
    "LoadedImage": "io",
    "atomic_write_bytes": "io",
    "encode_image": "io",
    "load_image": "io",
    "pixels_to_tensor": "io",
    "save_image": "io",
    "tensor_to_pixels": "io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ImageLoadError",
    "ImageWriteError",
    "InputError",
    "LoadedImage",
    "OutputExistsError",
    "PhotoimmuneError",
    "__version__",
    "atomic_write_bytes",
    "encode_image",
    "load_image",
    "pixels_to_tensor",
    "save_image",
    "tensor_to_pixels",
]
