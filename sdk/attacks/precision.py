"""Whether this hardware runs bfloat16 natively, and a warning when it would be emulated.

bfloat16 halves the cost of an attack iteration where the hardware has it: GPUs
since Ampere, CPUs with AVX-512-BF16 or AMX (PyTorch's oneDNN kernels). Elsewhere
PyTorch falls back to reference kernels, and bf16 becomes far slower than
float32 (measured: docs/performance.md, "bf16 only where it is native").
"""

from __future__ import annotations

import warnings

import torch


class PrecisionWarning(UserWarning):
    """Reduced precision was asked for where the hardware only emulates it."""


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether bf16 kernels on ``device`` are the fast ones.

    Example:
        >>> isinstance(bf16_is_native("cpu"), bool)
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True  # other backends choose their own kernels


def fast_dtype(device: torch.device | str) -> torch.dtype | None:
    """``torch.bfloat16`` where it runs natively on ``device``, else None (stay in float32).

    Example:
        >>> fast_dtype("cpu") in (torch.bfloat16, None)
        True
    """
    return torch.bfloat16 if bf16_is_native(device) else None


def autocast_to(device: torch.device | str, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``; with None a disabled one (stay in float32).

    Example:
        >>> with autocast_to("cpu", None):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def warn_if_emulated(dtype: torch.dtype | None, device: torch.device | str) -> None:
    """Warn (once per call site) when ``dtype`` is bf16 and ``device`` would emulate it."""
    if dtype == torch.bfloat16 and not bf16_is_native(device):
        warnings.warn(
            f"bfloat16 is emulated on this {torch.device(device).type} (no AVX-512-BF16 or AMX, "
            "so PyTorch uses slow reference kernels, 10-300x slower than float32); "
            "leave autocast/dtype unset, or use photoimmune.sdk.attacks.fast_dtype(device)",
            PrecisionWarning,
            stacklevel=3,
        )
