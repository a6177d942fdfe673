"""Models: the bundled tiny latent diffusion model and loading any local diffusers folder.

Example:
    >>> from photoimmune.sdk.models import load_pipeline, resolve_model
    >>> resolve_model("tiny-ldm@1").name
    'tiny-ldm-1'
    >>> pipe = load_pipeline("tiny-ldm@2", "inpaint")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
from .bundled import BundledModel, bundled_models, model_index, resolve_model

if TYPE_CHECKING:
    from .pipelines import PipelineKind, load_pipeline
    from .quality import QualityReport, check_model

# Imported on first use: these pull in torch and diffusers.
_LAZY = {
    "PipelineKind": "pipelines",
    "load_pipeline": "pipelines",
    "QualityReport": "quality",
    "check_model": "quality",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "BundledModel",
    "PipelineKind",
    "QualityReport",
    "bundled_models",
    "check_model",
    "load_pipeline",
    "model_index",
    "resolve_model",
]
