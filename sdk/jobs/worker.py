"""What an engine's worker does: immunize one original against a job's target set.

The worker is pure computation. It gets the original's bytes and returns 8-bit
pixels and :class:`Protection` records; reading originals, signing, writing
files and the catalog stay with the job that drives it, so workers need no
signing keys, no database and no shared filesystem.

Outputs are reproducible: the same original, targets, settings and seed give
the same pixels, on any engine, as long as PyTorch runs with the same number of
threads (``JobSettings.threads``): its CPU kernels split sums by thread, so
a different count rounds differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..attacks.budget import BudgetText
from ..descriptor import Method
from ..devices import check_device, resolve_device
from ..errors import PhotoimmuneError
from ..limits import Seed, Steps
from ..protection import Protection


class JobSettings(BaseModel):
    """How a job immunizes: the attack and its budget, and how each worker runs.

    ``method``, ``eps`` and ``steps`` left at None follow what the (first) target
    recommends, as :func:`~photoimmune.sdk.immunization.immunize` does.

    Example:
        >>> JobSettings(eps="16/255", steps=200).eps
        '16/255'
        >>> JobSettings().method is None  # the target's recommendation
        True
    """

    model_config = ConfigDict(frozen=True)

    method: Method | None = None
    eps: BudgetText | None = None
    steps: Steps | None = None
    #: Start PGD from the targets' one-pass immunizers (None: whenever they all carry one).
    warm_start: bool | None = None
    seed: Seed = 0
    eot: bool = False
    threads: int | None = Field(
        default=None, gt=0, description="PyTorch threads per worker (None: its default)"
    )
    device: str = Field(default="auto", description='"auto": CUDA when the worker has one')

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, device: str) -> str:
        check_device(device)
        return device


class WorkOrder(BaseModel):
    """One original to immunize (its bytes travel with it)."""

    model_config = ConfigDict(frozen=True)

    item_id: int
    data: bytes


@dataclass
class WorkOutput:
    """A worker's answer: pixels and protections, or why it failed."""

    item_id: int
    pixels: np.ndarray | None = None
    protections: list[Protection] = field(default_factory=list)
    error: str | None = None
    permanent: bool = False  # retrying will not help (bad input)
    worker: str = ""


class Immunizer:
    """Immunizes originals against one target set; loads each model once.

    Example:
        >>> target = client.get("photoimmune/tiny-ldm@2")  # doctest: +SKIP
        >>> immunizer = Immunizer([target], JobSettings())  # doctest: +SKIP
        >>> out = immunizer(WorkOrder(item_id=1, data=data))  # doctest: +SKIP
        >>> out.protections[0].target_ref  # doctest: +SKIP
        'photoimmune/tiny-ldm@2'
    """

    def __init__(self, targets: Sequence, settings: JobSettings, *, name: str = "local") -> None:
        import torch

        self.targets = list(targets)
        self.settings = settings
        self.name = name
        self.device = str(resolve_device(settings.device))  # not every item's failure, once
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        for target in self.targets:
            target.vae_encoder()  # load now: the first image should not pay for it

    def __call__(self, order: WorkOrder) -> WorkOutput:
        from ..immunization import immunize

        s = self.settings
        try:
            result = immunize(
                order.data,
                self.targets,
                method=s.method,
                eps=s.eps,
                steps=s.steps,
                warm_start=s.warm_start,
                seed=s.seed,
                eot=s.eot,
                device=self.device,
            )
        except PhotoimmuneError as err:
            return self._failed(order, str(err), permanent=True)
        except (RuntimeError, MemoryError) as err:  # out of memory, a device error: retry
            return self._failed(order, f"{type(err).__name__}: {err}", permanent=False)
        return WorkOutput(
            item_id=order.item_id,
            pixels=result.pixels,
            protections=result.protections,
            worker=self.name,
        )

    def _failed(self, order: WorkOrder, error: str, *, permanent: bool) -> WorkOutput:
        return WorkOutput(item_id=order.item_id, error=error, permanent=permanent, worker=self.name)
