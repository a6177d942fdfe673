"""photoimmune.sdk: immunize images, read and write them safely, sign what was done.

Heavy submodules (anything that needs torch) are imported on first use, so
``import photoimmune.sdk`` and the CLI's ``--help`` stay fast.

Example:
    >>> from photoimmune.sdk import load_image
    >>> load_image("photo.jpg").pixels.shape
    (64, 64, 3)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from .errors import (
    ImageLoadError,
    ImageTooLargeError,
    ImageWriteError,
    InputError,
    ManifestError,
    OutputExistsError,
    PhotoimmuneError,
)
from .lazy import lazy_getattr

if TYPE_CHECKING:
    from .assertion import ImmunizationAssertion
    from .descriptor import AttackTarget
    from .immunization import ImmunizationResult, immunize
    from .io import (
        LoadedImage,
        atomic_write_bytes,
        encode_image,
        load_image,
        pixels_to_tensor,
        save_image,
        tensor_to_pixels,
    )
    from .keys import KeyDir, ManifestSigner, init_keys
    from .manifest import ManifestReport, read_manifest, sign_image, sign_pixels
    from .protection import Protection
    from .refs import ModelRef
    from .targets import build_target, load_target, save_target

try:
    __version__ = version("photoimmune")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public name -> submodule that defines it
_LAZY = {
    "AttackTarget": "descriptor",
    "ImmunizationAssertion": "assertion",
    "ImmunizationResult": "immunization",
    "KeyDir": "keys",
    "ManifestReport": "manifest",
    "ManifestSigner": "keys",
    "init_keys": "keys",
    "read_manifest": "manifest",
    "sign_image": "manifest",
    "sign_pixels": "manifest",
    "ModelRef": "refs",
    "Protection": "protection",
    "build_target": "targets",
    "load_target": "targets",
    "save_target": "targets",
    "immunize": "immunization",
    "LoadedImage": "io",
    "atomic_write_bytes": "io",
    "encode_image": "io",
    "load_image": "io",
    "pixels_to_tensor": "io",
    "save_image": "io",
    "tensor_to_pixels": "io",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "AttackTarget",
    "ImageLoadError",
    "ImageTooLargeError",
    "ImageWriteError",
    "ImmunizationAssertion",
    "ImmunizationResult",
    "InputError",
    "KeyDir",
    "LoadedImage",
    "ManifestError",
    "ManifestReport",
    "ManifestSigner",
    "ModelRef",
    "OutputExistsError",
    "PhotoimmuneError",
    "Protection",
    "__version__",
    "atomic_write_bytes",
    "build_target",
    "encode_image",
    "immunize",
    "init_keys",
    "load_image",
    "load_target",
    "pixels_to_tensor",
    "read_manifest",
    "save_image",
    "save_target",
    "sign_image",
    "sign_pixels",
    "tensor_to_pixels",
]
