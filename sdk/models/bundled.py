"""Names of the bundled models and where their diffusers folders live.

A model is named ``tiny-ldm@1``, ``photoimmune/tiny-ldm@1`` (the registry's
``vendor/model@version`` form) or ``tiny-ldm`` (the latest bundled version), or
given as a path to any local diffusers folder (one with ``model_index.json``),
such as a Stable Diffusion checkpoint you downloaded yourself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnknownModelError

BUNDLED_ROOT = Path(__file__).parent / "bundled"
VENDOR = "photoimmune"
FAMILY = "tiny-ldm"


@dataclass(frozen=True)
class BundledModel:
    """One bundled model version."""

    name: str  # "tiny-ldm@1"
    version: int
    path: Path

    @property
    def ref(self) -> str:
        """The registry form, ``photoimmune/tiny-ldm@1``."""
        return f"{VENDOR}/{self.name}"


def bundled_models() -> list[BundledModel]:
    """The bundled versions, oldest first.

    Example:
        >>> [m.name for m in bundled_models()]
        ['tiny-ldm@1', 'tiny-ldm@2', 'tiny-ldm@3', 'tiny-ldm@4', 'tiny-ldm@6']
    """
    found = []
    for folder in sorted(BUNDLED_ROOT.glob(f"{FAMILY}-*")):
        version = folder.name.removeprefix(f"{FAMILY}-")
        if version.isdigit() and (folder / "model_index.json").is_file():
            found.append(BundledModel(f"{FAMILY}@{version}", int(version), folder))
    return sorted(found, key=lambda m: m.version)


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """Turn a bundled name or a local diffusers folder into that folder's path.

    Never touches the network: a name that is neither bundled nor an existing
    folder is an error, not a hub id.

    Example:
        >>> resolve_model("tiny-ldm@1").name
        'tiny-ldm-1'
    """
    text = os.fspath(model)
    name = text.removeprefix(f"{VENDOR}/")
    bundled = bundled_models()
    if name == FAMILY and bundled:
        return bundled[-1].path
    for entry in bundled:
        if name == entry.name:
            return entry.path
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UnknownModelError(
                f"{path}: not a diffusers model folder (no model_index.json); "
                "pass the folder that save_pretrained() wrote"
            )
        return path
    if name.startswith(FAMILY) and not bundled:
        raise UnknownModelError(
            f"{text!r}: this build carries no bundled weights yet; train them with "
            "`photoimmune model train-tiny --version 1 --out DIR` and pass DIR as the model"
        )
    names = ", ".join(m.name for m in bundled) or "none bundled"
    raise UnknownModelError(
        f"unknown model {text!r}: not a bundled model ({names}) and not a local folder; "
        "photoimmune never downloads weights, so download a checkpoint yourself and pass its path"
    )


def model_index(path: Path) -> dict:
    """The parsed ``model_index.json`` of a diffusers folder.

    Example:
        >>> model_index(resolve_model("tiny-ldm@1"))["_class_name"]
        'StableDiffusionPipeline'
    """
    return json.loads((path / "model_index.json").read_text())
