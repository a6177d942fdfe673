"""The service's workers: claim queued jobs with leases, immunize, sign, record.

A worker is a loop over the jobs' durable queue (:class:`~photoimmune.sdk.jobs.WorkQueue`):
it leases an item, has an engine immunize the upload (in this process, or on
Ray actors: the jobs' engines), signs the pixels with the vendor key and records
the signed file together with the item's completion, in one transaction that
succeeds only while the worker still holds the lease. So:

* a worker killed at any point leaves a lease that lapses (or whose process is
  gone) and the next worker takes the item over; after ``max_attempts`` deaths
  the item fails instead of killing workers forever;
* an item is finished exactly once: a worker whose lease was taken over cannot
  record its result, and a result is stored only with its completion.

Example:
    >>> worker = ServiceWorker(store, offer, signer, ServiceSettings())  # doctest: +SKIP
    >>> worker.run(stop_event)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

from photoimmune.sdk.errors import PhotoimmuneError
from photoimmune.sdk.jobs.engines import Engine, make_engine
from photoimmune.sdk.jobs.queue import Claim, LeaseHeartbeat, NewCopy, WorkQueue
from photoimmune.sdk.jobs.worker import WorkOrder, WorkOutput
from photoimmune.sdk.keys import ManifestSigner
from photoimmune.sdk.manifest import sign_pixels

from .jobs import JobSpec, job_spec, work_key
from .offer import Offer, immunizer_settings
from .settings import ServiceSettings
from .store import ServiceStore

logger = logging.getLogger(__name__)


def sign_result(
    output: WorkOutput, spec: JobSpec, signer: ManifestSigner, original: bytes
) -> bytes:
    """The signed file of a finished immunization, the upload as its parent ingredient.

    PNG and WebP are lossless, so the file's pixels are exactly the immunized ones;
    JPEG (quality 95) moves them a little, past ε: the docs say to prefer the others.
    """
    assert output.pixels is not None
    return sign_pixels(
        output.pixels,
        output.protections,
        signer,
        fmt=spec.format.upper(),
        quality=100 if spec.format == "webp" else 95,  # WebP at 100 is lossless
        parent=original,
        title=f"immunized.{spec.format}",
    )


class Engines:
    """Engines by job spec, the ``size`` most recently used kept (each holds its models).

    One Ray engine at a time: a Ray engine owns the local Ray instance it starts.
    """

    def __init__(self, offer: Offer, settings: ServiceSettings) -> None:
        self.offer, self.settings = offer, settings
        self.size = 1 if settings.engine == "ray" else 4
        self._engines: OrderedDict[str, Engine] = OrderedDict()

    def get(self, spec: JobSpec, *, engine: str | None = None) -> Engine:
        name = engine or self.settings.engine
        key = f"{name}:{work_key(spec)}"
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        targets = [self.offer.target(ref, digest) for ref, digest in spec.targets]
        while len(self._engines) >= self.size:
            self._engines.popitem(last=False)[1].close()
        self._engines[key] = make_engine(
            name,
            targets,
            immunizer_settings(targets, spec.eps, self.settings),
            workers=max(1, self.settings.workers),
            ray_address=self.settings.ray_address,
        )
        return self._engines[key]

    def close(self) -> None:
        while self._engines:
            self._engines.popitem()[1].close()


class ServiceWorker:
    """One worker: a loop that finishes queued jobs until ``stop`` is set."""

    def __init__(
        self,
        store: ServiceStore,
        offer: Offer,
        signer: ManifestSigner,
        settings: ServiceSettings,
        *,
        owner: str | None = None,
    ) -> None:
        self.store, self.signer = store, signer
        self.queue = WorkQueue(
            store.catalog,
            owner=owner,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
        )
        self.engines = Engines(offer, settings)

    def run(self, stop: threading.Event, idle_s: float = 0.5) -> None:
        """Work until ``stop`` is set, polling the queue every ``idle_s`` when it is empty."""
        try:
            while not stop.is_set():
                if not self.run_once():
                    stop.wait(idle_s)
        finally:
            self.engines.close()

    def run_once(self) -> int:
        """Lease queued items of one spec (as many as the engine runs at once) and finish
        them; how many were leased (0: the queue is empty)."""
        claims = self.queue.claim(1, None)
        if not claims:
            return 0
        spec = job_spec(self.store, claims[0].item_id)
        if spec is None:  # only a hand-edited database has an item no job asks for
            self.queue.fail(claims[0], "no job asks for this item", permanent=True)
            return 1
        try:
            engine = self.engines.get(spec)
        except PhotoimmuneError as err:  # the registry no longer has the release
            self.queue.fail(claims[0], f"{err}; submit the job again", permanent=True)
            return 1
        if engine.slots > 1:
            claims += self.queue.claim(engine.slots - 1, claims[0].targets_key)
        in_flight = {claim.item_id: claim for claim in claims}
        heartbeat = LeaseHeartbeat(self.queue, in_flight)
        heartbeat.start()
        try:
            self._drive(engine, in_flight, spec)
        except BaseException:
            self.queue.release(list(in_flight))  # others may go on now
            raise
        finally:
            heartbeat.halt.set()
            heartbeat.join()
        return len(claims)

    def _drive(self, engine: Engine, in_flight: dict[int, Claim], spec: JobSpec) -> None:
        originals = {}
        for item_id, claim in in_flight.items():
            originals[item_id] = self.store.blob(claim.original_sha256) or b""
            engine.submit(WorkOrder(item_id=item_id, data=originals[item_id]))
        for _ in range(len(originals)):
            output = engine.next_done()
            claim = in_flight[output.item_id]
            self._finish(claim, output, spec, originals[output.item_id])
            del in_flight[output.item_id]

    def _finish(self, claim: Claim, output: WorkOutput, spec: JobSpec, original: bytes) -> None:
        if output.error is not None:
            state = self.queue.fail(claim, output.error, permanent=output.permanent)
            logger.warning("service: item %d: %s (%s)", claim.item_id, output.error, state)
            return
        try:
            signed = sign_result(output, spec, self.signer, original)
        except PhotoimmuneError as err:  # a signing fault: another try may do better
            self.queue.fail(claim, str(err), permanent=False)
            return
        digest = hashlib.sha256(signed).hexdigest()
        copy = NewCopy(
            path=f"blob:{digest}",
            sha256=digest,
            protections=[p.model_dump(mode="json") for p in output.protections],
        )

        def store_result(session: Any) -> None:
            self.store.put_blob(session, signed)

        if not self.queue.complete(claim, copy, also=store_result):
            logger.warning(
                "service: lost the lease on item %d; another worker finishes it", claim.item_id
            )
