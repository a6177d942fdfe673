"""``photoimmune.sdk.evaluate``: how well immunization works, the way the paper reports it.

Submodules load on first use (they need torch and piq), so the CLI stays fast.

Example:
    >>> from photoimmune.sdk.evaluate import EvalSettings, evaluate
    >>> report = evaluate(["photo.png"], EvalSettings(eps="8/255"))  # doctest: +SKIP
    >>> row = report.rows[0]  # doctest: +SKIP
    >>> row.method, row.processing, round(row.metrics["ssim"].mean, 3)  # doctest: +SKIP
    ('noise', 'none', 0.97)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

if TYPE_CHECKING:
    from .harness import (
        DEFAULT_METHODS,
        EvalMethod,
        EvalReport,
        EvalRow,
        EvalSettings,
        KeptRow,
        Stat,
        evaluate,
        same_eps_noise,
        treat,
    )
    from .metrics import (
        PAIR_METRICS,
        SET_METRICS,
        ClipScorer,
        FeatureExtractor,
        edit_similarity,
        pair_metrics,
    )
    from .processing import PROCESSING, PROCESSING_NAMES, processing_steps

_LAZY = {
    "DEFAULT_METHODS": "harness",
    "EvalMethod": "harness",
    "EvalReport": "harness",
    "EvalRow": "harness",
    "EvalSettings": "harness",
    "KeptRow": "harness",
    "Stat": "harness",
    "evaluate": "harness",
    "treat": "harness",
    "same_eps_noise": "harness",
    "PAIR_METRICS": "metrics",
    "SET_METRICS": "metrics",
    "ClipScorer": "metrics",
    "FeatureExtractor": "metrics",
    "edit_similarity": "metrics",
    "pair_metrics": "metrics",
    "PROCESSING": "processing",
    "PROCESSING_NAMES": "processing",
    "processing_steps": "processing",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "DEFAULT_METHODS",
    "PAIR_METRICS",
    "PROCESSING",
    "PROCESSING_NAMES",
    "SET_METRICS",
    "ClipScorer",
    "EvalMethod",
    "EvalReport",
    "EvalRow",
    "EvalSettings",
    "FeatureExtractor",
    "KeptRow",
    "Stat",
    "edit_similarity",
    "evaluate",
    "pair_metrics",
    "processing_steps",
    "same_eps_noise",
    "treat",
]
