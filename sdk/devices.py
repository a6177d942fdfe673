"""Which device (CPU, a CUDA GPU, Apple's MPS) a model runs on, checked before any work.

``"auto"`` means CUDA when this machine has it, else the CPU. torch is imported only
when a device is named, so settings objects stay cheap to check.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import torch

#: The kinds of device photoimmune runs on (``"auto"`` aside).
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str) -> None:
    """Refuse a device torch does not know or photoimmune does not run on.

    Whether this machine has it is another question (:func:`check_device_available`):
    a Ray job's workers may have GPUs the machine starting the job lacks.

    Example:
        >>> check_device("cuda:0")
        >>> check_device("tpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        photoimmune.sdk.errors.InputError: device='tpu': not a device ...
    """
    if device == "auto":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise InputError(
            f"device={device!r}: not a device photoimmune runs on; use auto (CUDA when "
            "there is one), cpu, cuda, cuda:N or mps"
        )


def check_device_available(device: str) -> None:
    """Refuse a device this machine does not have (``"auto"`` always has one).

    Example:
        >>> check_device_available("cpu")
    """
    check_device(device)
    if device == "auto":
        return
    import torch

    parsed = torch.device(device)
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(
                f"device={device!r}: this machine has no CUDA device PyTorch can use; "
                "use auto or cpu"
            )
        if parsed.index is not None and parsed.index >= count:
            raise InputError(
                f"device={device!r}: this machine has {count} CUDA device(s), "
                f"numbered 0 to {count - 1}"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            f"device={device!r}: this machine has no MPS device PyTorch can use; use auto or cpu"
        )


def resolve_device(device: object) -> torch.device:
    """``device`` as a torch device this machine has (``"auto"``: CUDA when there is one).

    Example:
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    import torch

    if not isinstance(device, str | torch.device):
        raise InputError(f"device={device!r}: name a device, such as 'cpu', 'cuda' or 'cuda:0'")
    check_device_available(str(device))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
