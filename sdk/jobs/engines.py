"""Where a job's images are immunized: in this process, or on Ray actors.

An engine takes :class:`WorkOrder` s and hands back :class:`WorkOutput` s, at
most ``slots`` in flight at a time; the job decides what to claim and records
what comes back.

* ``LocalEngine`` (default) runs one :class:`Immunizer` in this process.
* ``RayEngine`` starts ``workers`` actors, each with its own Immunizer (models
  loaded once per actor), requesting GPUs as Ray resources; a crashed actor is
  restarted and its task retried by Ray, and an order whose retries are spent
  comes back as a failure the job may retry later. ``pip install
  photoimmune[ray]``; it joins a running cluster (``address``) or starts a
  local Ray instance.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from ..errors import PhotoimmuneError
from .worker import Immunizer, JobSettings, WorkOrder, WorkOutput


class Engine(Protocol):
    slots: int

    def submit(self, order: WorkOrder) -> None: ...

    def next_done(self) -> WorkOutput: ...

    def close(self) -> None: ...


class EngineError(PhotoimmuneError):
    """An engine cannot start or lost all its workers (Ray missing or unreachable,
    more workers than the cluster can place)."""


class LocalEngine:
    """One image at a time, in this process.

    Example:
        >>> engine = LocalEngine(targets, JobSettings())  # doctest: +SKIP
    """

    slots = 1

    def __init__(self, targets: Sequence, settings: JobSettings) -> None:
        import torch

        self._threads = torch.get_num_threads()
        self._immunizer = Immunizer(targets, settings)
        self._queue: deque[WorkOrder] = deque()

    def submit(self, order: WorkOrder) -> None:
        self._queue.append(order)

    def next_done(self) -> WorkOutput:
        return self._immunizer(self._queue.popleft())

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._threads)  # settings.threads changed this process's


class _RayWorker:
    """The actor: an Immunizer named after its node and the GPUs Ray gave it."""

    def __init__(self, targets: Sequence, settings: JobSettings) -> None:
        import ray

        context = ray.get_runtime_context()
        gpus = ",".join(map(str, ray.get_gpu_ids())) or "-"
        # Actor ids end with the job's id; their head tells actors apart.
        name = f"ray:{context.get_node_id()[:8]}:{context.get_actor_id()[:8]}:gpu={gpus}"
        self._immunizer = Immunizer(targets, settings, name=name)

    def immunize(self, order: WorkOrder) -> WorkOutput:
        return self._immunizer(order)


class RayEngine:
    """``workers`` Ray actors, each holding its own copy of the models.

    Args:
        gpus_per_worker: GPUs each actor asks Ray for (default: 1 when the cluster
            has GPUs, else 0); fractions share a GPU between actors.
        cpus_per_worker: CPUs each actor asks for; ``settings.threads`` defaults to it.
        address: a running cluster (``"auto"``, ``"ray://host:10001"``); None starts
            a local instance (and stops it on :meth:`close`).

    Example:
        >>> engine = RayEngine(targets, JobSettings(), workers=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        targets: Sequence,
        settings: JobSettings,
        *,
        workers: int = 2,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1,
        address: str | None = None,
        max_retries: int = 2,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise EngineError(
                "the Ray engine needs Ray: `pip install photoimmune[ray]`, or use --engine local"
            ) from None
        if workers < 1:
            raise EngineError(f"workers must be at least 1, not {workers}")
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    # Ray's own variable, so an application can quiet it (the CLI does).
                    logging_level=os.environ.get("RAY_LOGGER_LEVEL", "warning"),
                    log_to_driver=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise EngineError(
                    f"cannot start or join Ray at {address or 'a new local instance'} ({err}); "
                    "check --ray-address and that the cluster runs, or use --engine local"
                ) from None
        cluster = ray.cluster_resources()
        if gpus_per_worker is None:
            gpus_per_worker = 1 if cluster.get("GPU", 0) >= 1 else 0
        # Actors the cluster cannot place would wait forever, holding their images' leases.
        for name, each in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)):
            if workers * each > cluster.get(name, 0):
                self.close()
                raise EngineError(
                    f"{workers} workers x {each:g} {name} each exceed the cluster's "
                    f"{cluster.get(name, 0):g} {name}s; use fewer --workers or a smaller "
                    f"--{name.lower()}s-per-worker (fractions share a {name})"
                )
        if settings.threads is None:
            settings = settings.model_copy(update={"threads": max(1, int(cpus_per_worker))})
        actor = ray.remote(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=max_retries,
            max_task_retries=max_retries,
        )(_RayWorker)
        # Passed by value: a restarted actor must not depend on an object-store copy.
        self._actors = [actor.remote(list(targets), settings) for _ in range(workers)]
        self._idle = deque(self._actors)
        self._running: dict = {}  # object ref -> (actor, order)
        self.slots = workers

    def submit(self, order: WorkOrder) -> None:
        actor = self._idle.popleft()
        self._running[actor.immunize.remote(order)] = (actor, order)

    def next_done(self) -> WorkOutput:
        ray = self._ray
        (ready,), _ = ray.wait(list(self._running), num_returns=1)
        actor, order = self._running.pop(ready)
        try:
            output = ray.get(ready)
        except ray.exceptions.RayActorError as err:  # died, and Ray's restarts ran out
            self.slots -= 1  # never hand it another order
            if self.slots == 0:
                raise EngineError(f"every Ray worker died; the last one: {err}") from None
            return WorkOutput(item_id=order.item_id, error=f"Ray worker died: {err}")
        except ray.exceptions.RayError as err:
            output = WorkOutput(item_id=order.item_id, error=f"Ray task failed: {err}")
        self._idle.append(actor)
        return output

    def close(self) -> None:
        for actor in getattr(self, "_actors", []):
            self._ray.kill(actor)
        if self._started:
            self._ray.shutdown()


def make_engine(
    name: str,
    targets: Sequence,
    settings: JobSettings,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1,
) -> Engine:
    """The engine called ``name`` (``"local"`` or ``"ray"``)."""
    if name == "local":
        return LocalEngine(targets, settings)
    if name == "ray":
        return RayEngine(
            targets,
            settings,
            workers=workers,
            address=ray_address,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
        )
    raise EngineError(f"unknown engine {name!r}; use local or ray")
