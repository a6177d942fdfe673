"""``run()``: re-immunize a catalog against the latest releases of the subscribed models.

One job, start to finish:

1. :func:`~.planning.plan` lists the originals whose current copy lacks a
   subscribed model's latest release; each gets a work item (shared with any
   other job on the same catalog and target set);
2. the job claims items with leases, reads each *original* (checking it is the
   content that was catalogued) and has the engine immunize it against all the
   latest targets at once, so one δ under one ε covers every model;
3. it signs the pixels (the original is the manifest's parent ingredient),
   writes the file atomically under a name fixed by (original, target set),
   and records the copy and marks the item done in one transaction.

A job killed at any point loses nothing: an item whose file was written but
not recorded is *adopted* by the next job (the file is verified: its manifest
is intact, bound to its pixels, lists every target, and its pixels are within
ε of the original), not computed again; a half-written file never exists
(see :func:`~photoimmune.sdk.io.atomic_write_bytes`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from ..attacks.budget import budget_levels, parse_budget
from ..database import redact_error
from ..devices import check_device_available
from ..errors import (
    ImageLoadError,
    InputError,
    OutputExistsError,
    OutputPathError,
    PhotoimmuneError,
)
from ..io import (
    atomic_write_bytes,
    check_output_dir,
    check_output_path,
    load_image,
    max_abs_delta,
    read_image_bytes,
    stale_temp_files,
)
from ..limits import check_count, settings_of
from ..manifest import read_manifest, sign_pixels
from ..protection import Protection
from .catalog import Catalog, CatalogError
from .engines import Engine, make_engine
from .planning import Plan, ReleaseSource, plan
from .queue import DEFAULT_LEASE_SECONDS, Claim, LeaseHeartbeat, NewCopy, WorkQueue
from .worker import JobSettings, WorkOrder, WorkOutput

if TYPE_CHECKING:
    from ..keys import ManifestSigner, TrustFiles

logger = logging.getLogger(__name__)
#: progress(finished, total, location): after each item this job finishes.
JobProgress = Callable[[int, int, str], None]
#: on_copy(path, signed bytes): after each copy is recorded (e.g. into a manifest store).
CopyHook = Callable[[str, bytes], None]
#: Longest output name :func:`output_name` makes, in bytes (NAME_MAX on nearly every system).
_NAME_BYTES = 255


class JobSummary(BaseModel):
    """What one job did (:func:`plan` says what a job would do).

    ``done`` were immunized by this job, ``adopted`` were finished files a
    killed job had written, ``failed`` will not be retried without
    ``retry_failed``; ``remaining`` items are still queued (``limit``, other jobs).
    """

    models: tuple[str, ...]
    targets: tuple[str, ...]
    method: str | None = None  # the attack and budget the job ran with
    eps: str | None = None
    steps: int | None = None
    engine: str
    workers: int
    planned: int
    up_to_date: int
    done: list[str] = Field(default_factory=list)  # output paths
    adopted: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)  # original -> why
    retrying: int = 0
    lost_leases: int = 0
    by_worker: dict[str, int] = Field(default_factory=dict)  # worker -> images it immunized
    remaining: int = 0
    unreadable: dict[str, str] = Field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.done) / self.seconds if self.seconds else 0.0


def output_name(location: str, original_sha256: str, targets_key: str) -> str:
    """The copy's file name: fixed by the original's content and the target set.

    Example:
        >>> output_name("/photos/cat.jpg", "ab" * 32, "cd" * 32)
        'cat-abababababab-cdcdcdcd.png'
    """
    stem = Path(location).stem[:100] or "image"
    suffix = f"-{original_sha256[:12]}-{targets_key[:8]}.png"
    # 100 characters can be 400 bytes; trim until the name fits the usual NAME_MAX
    # (names that always fitted keep their spelling: finished files are found by it).
    while len(os.fsencode(stem + suffix)) > _NAME_BYTES and len(stem) > 1:
        stem = stem[:-1]
    return stem + suffix


def run(
    catalog: Catalog,
    registry: ReleaseSource,
    models: str | Sequence[str],
    *,
    out_dir: str | os.PathLike[str],
    signer: ManifestSigner | None = None,
    trust: TrustFiles | None = None,
    settings: JobSettings | Mapping[str, Any] | None = None,
    engine: str = "local",
    workers: int = 1,
    limit: int | None = None,
    retry_failed: bool = False,
    weights: dict[str, str] | None = None,
    ray_address: str | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    progress: JobProgress | None = None,
    on_copy: CopyHook | None = None,
) -> JobSummary:
    """Re-immunize what ``catalog`` lacks against the latest releases of ``models``.

    Args:
        registry: a :class:`~photoimmune.registry.RegistryClient`.
        models: ``vendor/model`` names (one may be given alone).
        out_dir: where immunized copies are written (never over an existing file).
        signer: a :class:`~photoimmune.sdk.keys.ManifestSigner` (default: the
            development publisher key).
        trust: PEM trust anchors; a finished file a killed job left behind is
            adopted only if its manifest verifies against them, so ``signer``'s
            chain must lead to one (default: the key folder's CA when ``signer``
            is the development key; needed with any other).
        weights: ``{"vendor/model": folder}`` for releases without bundled weights.
        engine, workers, ray_address, gpus_per_worker, cpus_per_worker: where the
            images are immunized (see :mod:`.engines`).
        settings: a :class:`JobSettings`, or a dict of its fields.
        limit: finish at most this many items, then stop (the rest stay queued);
            0 plans and queues only.
        on_copy: called with each copy's path and signed bytes once it is recorded
            (written or adopted), e.g. to record its manifest in a manifest store
            (``photoimmune catalog reimmunize --manifest-store``). A failure there is
            logged and does not fail the copy.

    The steps, numbered as in the code:

    1. Plan: the originals lacking a subscribed model's latest release; queue them
       under the work key (shared with other jobs of the same targets and settings).
    2. Settle how: the signer and trust anchors, each release's target with its
       weights, and what ``settings`` leaves open (method, ε, steps) as the first
       target recommends, as :func:`~photoimmune.sdk.immunization.immunize` does.
    3. Drive the engine: claim, read, immunize, sign, write, record, item by item.
    4. Report what is left in the queue and what failed.

    Example:
        >>> summary = run(Catalog("photos.db"), client, ["photoimmune/tiny-ldm"],
        ...               out_dir="immunized")  # doctest: +SKIP
        >>> len(summary.done), summary.failed  # doctest: +SKIP
        (20, {})
    """
    started = time.perf_counter()
    settings = settings_of(JobSettings, settings)
    if limit is not None:
        check_count(limit, "limit", 0, note="how many items to finish; None: all of them")
    if engine == "local":  # a Ray job's workers may have devices this machine lacks
        check_device_available(settings.device)
    check_output_dir(out_dir, option="out_dir")  # a file in the way fails now, not per image
    anchors = _anchors_for(signer, trust)
    try:
        # 1. Plan, and queue what lacks protection.
        job_plan = plan(catalog, registry, models)
        queue = WorkQueue(catalog, lease_seconds=lease_seconds)
        key = work_key(job_plan, settings)
        queue.enqueue(
            [image.original_id for image in job_plan.images],
            key,
            [t.model_dump() for t in job_plan.targets],
            retry=retry_failed,
        )
        # 2. Settle the signer, the targets and the budget.
        signer, anchors = _signing(signer, anchors)
        targets = _fetch_targets(registry, job_plan, weights or {})
        settings = _settled(settings, targets)
        summary = JobSummary(
            models=job_plan.models,
            targets=tuple(t.ref for t in job_plan.targets),
            method=settings.method,
            eps=settings.eps,
            steps=settings.steps,
            engine=engine,
            workers=workers if engine != "local" else 1,
            planned=len(job_plan.images),
            up_to_date=job_plan.up_to_date,
            unreadable=job_plan.unreadable,
        )
        out = Path(out_dir).expanduser().resolve()
        job = _Job(queue, key, out, signer, anchors, settings, summary, progress)
        job.on_copy = on_copy
        job.total = queue.unfinished(key)
        # 3. Drive the engine until the queue (or ``limit``) is done.
        runner = make_engine(
            engine,
            targets,
            settings,
            workers=workers,
            ray_address=ray_address,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
        )
        try:
            job.drive(runner, limit)
        finally:
            runner.close()
        # 4. Report: what is left, and every failure not yet retried.
        summary.remaining = queue.unfinished(key)
        summary.failed = queue.failures(key)  # this job's, and earlier jobs' not yet retried
    except SQLAlchemyError as err:
        raise CatalogError(
            f"the catalog database failed ({type(err).__name__}: "
            f"{redact_error(str(err).splitlines()[0], catalog.url)}); "
            "check that it is reachable, then run the job again: it resumes where it stopped"
        ) from None
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def work_key(job_plan: Plan, settings: JobSettings) -> str:
    """The work queue's key: the target set and the settings that shape the pixels.

    Jobs with the same key share items and output files; jobs with other
    settings (another ε, more steps) do their own work. A setting left open
    (None) is keyed as such: the target set's digests fix what it becomes.
    """
    shaping_fields = {"method", "eps", "steps", "seed", "eot"}
    if settings.warm_start is not None:  # left open: keyed as before the option existed
        shaping_fields.add("warm_start")
    shaping = settings.model_dump_json(include=shaping_fields)
    joined = f"{job_plan.targets_key}\n{shaping}"
    return hashlib.sha256(joined.encode()).hexdigest()


def _settled(settings: JobSettings, targets: list) -> JobSettings:
    """``settings`` with the method, ε, steps and start it leaves open taken from what
    the targets recommend (see :func:`~photoimmune.sdk.immunization.choose_schedule`):
    targets that carry one-pass immunizers start PGD from them and run its few
    finishing steps."""
    from ..immunization import choose_schedule

    plan = choose_schedule(
        targets, settings.method, settings.eps, settings.steps, warm_start=settings.warm_start
    )
    return settings.model_copy(
        update={
            "method": plan.budget.method,
            "eps": plan.budget.eps,
            "steps": plan.steps or None,  # 0: the pass alone, which immunize() picks itself
            "warm_start": plan.warm_start,
        }
    )


def _anchors_for(signer: ManifestSigner | None, trust: TrustFiles | None) -> list[bytes] | None:
    """The trust anchors a job's finished files verify against, read before any work: a
    caller's own signer must come with them and chain to them. ``None``: the key
    folder's, settled with its signer (:func:`_signing`)."""
    from ..keys import check_chain, read_trust_anchors

    if signer is None:
        return read_trust_anchors(trust)
    if trust is None:
        raise InputError(
            "a job with its own signer needs trust= (--trust): the CA certificate the "
            "signer's chain leads to, so files a killed job left behind can be verified"
        )
    return check_chain(signer, read_trust_anchors(trust) or [])


def _signing(
    signer: ManifestSigner | None, anchors: list[bytes] | None
) -> tuple[ManifestSigner, list[bytes] | None]:
    """The signer, and the trust anchors its finished files verify against: without a
    signer of the caller's, the key folder's publisher key (created if it has none)."""
    from ..keys import default_trust_anchors, resolve_signer

    if signer is not None:
        return signer, anchors

    def created(keys) -> None:
        logger.warning("jobs: created development signing keys in %s", keys.path)

    signer = resolve_signer(on_created=created)
    return signer, anchors if anchors is not None else default_trust_anchors()


def _fetch_targets(registry: ReleaseSource, job_plan: Plan, weights: dict[str, str]) -> list:
    targets = []
    for key in job_plan.targets:
        target = registry.get(key.ref)
        model = f"{target.ref.vendor}/{target.ref.model}"
        if model in weights:
            target = target.bind_model(weights[model])  # a new, bound target
        if not target.has_weights:
            raise InputError(
                f"{key.ref}: no local weights for this release; pass weights={{{model!r}: FOLDER}} "
                f"(--weights {model}=FOLDER), its diffusers folder, so its encoder can be attacked"
            )
        targets.append(target)
    return targets


class _Job:
    """The driver loop of one :func:`run`: claim, hand to the engine, sign, write, record."""

    def __init__(self, queue, key, out_dir, signer, trust, settings, summary, progress):
        self.queue, self.key, self.out_dir = queue, key, out_dir
        self.signer, self.trust = signer, trust
        self.levels = budget_levels(parse_budget(settings.eps))  # what a saved copy may move
        self.summary, self.progress = summary, progress
        self.in_flight: dict[int, tuple[Claim, bytes]] = {}
        self.on_copy: CopyHook | None = None
        self.finished = 0
        self.total = 0

    def drive(self, engine: Engine, limit: int | None) -> None:
        heartbeat = LeaseHeartbeat(self.queue, self.in_flight)
        heartbeat.start()
        claimed = 0
        try:
            while True:
                while len(self.in_flight) < engine.slots and (limit is None or claimed < limit):
                    claims = self.queue.claim(1, self.key)
                    if not claims:
                        break
                    claimed += 1
                    order = self._guard_item(claims[0], self._prepare, claims[0])
                    if order is not None:
                        engine.submit(order)
                if not self.in_flight:
                    break
                output = engine.next_done()
                self._guard_item(self.in_flight[output.item_id][0], self._finish, output)
        except BaseException:
            # Ctrl-C or a crash in the driver: give the leases back so others go on now.
            self.queue.release(list(self.in_flight))
            raise
        finally:
            heartbeat.halt.set()
            heartbeat.join()

    def _guard_item(self, claim: Claim, step: Callable[[Any], Any], arg: Any) -> Any:
        """``step(arg)``; an unexpected error fails this one item, never the whole job.

        Database errors still stop the job: :func:`run` reports them, and the next
        job resumes.
        """
        try:
            return step(arg)
        except SQLAlchemyError:
            raise
        except Exception as err:
            logger.exception("jobs: %s: unexpected error", claim.location)
            self._fail(claim, f"unexpected {type(err).__name__}: {err}", True)
            return None

    def _prepare(self, claim: Claim) -> WorkOrder | None:
        """The order for ``claim``, or None when it was settled here (adopted or failed)."""
        try:
            data = read_image_bytes(claim.location)  # regular files only, bounded: never hangs
        except ImageLoadError as err:
            self._fail(claim, f"cannot read the original: {err}", True)
            return None
        if hashlib.sha256(data).hexdigest() != claim.original_sha256:
            self._fail(
                claim,
                "the original changed since it was catalogued; run `photoimmune catalog add` "
                "on it again",
                True,
            )
            return None
        path = self._output(claim)
        problem = _output_problem(path)  # before the compute, not after it
        if problem is not None:
            self._fail(claim, problem, True)
            return None
        # A writer killed mid-write leaves its hidden temporary file; we hold the lease now.
        for stale in stale_temp_files(path):
            stale.unlink(missing_ok=True)
        if path.exists():
            self._adopt(claim, path, data)
            return None
        self.in_flight[claim.item_id] = (claim, data)
        return WorkOrder(item_id=claim.item_id, data=data)

    def _output(self, claim: Claim) -> Path:
        name = output_name(claim.location, claim.original_sha256, claim.targets_key)
        return self.out_dir / name

    def _finish(self, output: WorkOutput) -> None:
        claim, original = self.in_flight[output.item_id]
        try:
            if output.error is not None:
                self._fail(claim, output.error, output.permanent)
                return
            assert output.pixels is not None
            path = self._output(claim)
            try:
                data = sign_pixels(
                    output.pixels, output.protections, self.signer, parent=original, title=path.name
                )
                atomic_write_bytes(path, data)
            except OutputExistsError:  # another job wrote it first: take theirs if sound
                self._adopt(claim, path, original)
                return
            except PhotoimmuneError as err:  # disk full, a signing service down: retry later
                self._fail(claim, str(err), False)
                return
            self._record(claim, path, data, output.protections, self.summary.done)
            workers = self.summary.by_worker
            workers[output.worker] = workers.get(output.worker, 0) + 1
        finally:
            self.in_flight.pop(output.item_id, None)

    def _adopt(self, claim: Claim, path: Path, original: bytes) -> None:
        try:
            data = read_image_bytes(path)
        except ImageLoadError as err:  # replaced by a directory or a FIFO meanwhile
            self._fail(claim, f"{err}; move it away and run again", True)
            return
        problem, protections = self._check_copy(claim, data, original)
        if problem is not None:
            self._fail(claim, f"{path} exists and {problem}; move it away and run again", True)
            return
        self._record(claim, path, data, protections, self.summary.adopted)

    def _check_copy(
        self, claim: Claim, data: bytes, original: bytes
    ) -> tuple[str | None, Sequence[Protection]]:
        """Why ``data`` is not a finished copy of ``original`` for this item (None: it is),
        and the protections its manifest lists."""
        try:
            pixels = load_image(data).pixels
            report = read_manifest(data, trust=self.trust, pixels=pixels)
        except ImageLoadError as err:
            return f"is not a readable image ({err})", []
        if report.verdict != "trusted" or report.assertion is None:
            return f"its manifest does not verify ({report.verdict})", []
        protections = report.assertion.protections
        digests = {t["digest"] for t in claim.targets}
        if not digests <= {p.target_digest for p in protections}:
            return "its manifest does not list every target of this job", protections
        before = load_image(original).pixels
        if before.shape != pixels.shape:
            return "is not the same size as the original", protections
        if max_abs_delta(pixels, before) > self.levels:
            return "differs from the original by more than ε", protections
        return None, protections

    def _record(
        self, claim: Claim, path: Path, data: bytes, protections: Sequence[Protection], bucket: list
    ) -> None:
        copy = NewCopy(
            path=str(path),
            sha256=hashlib.sha256(data).hexdigest(),
            protections=[p.model_dump(mode="json") for p in protections],
        )
        if self.queue.complete(claim, copy):
            bucket.append(str(path))
            self._announce(path, data)
        else:  # our lease lapsed and another job took the item; it will adopt the file
            self.summary.lost_leases += 1
            logger.warning("jobs: lost the lease on %s; another job finishes it", claim.location)
        self._advance(claim)

    def _announce(self, path: Path, data: bytes) -> None:
        if self.on_copy is None:
            return
        try:
            self.on_copy(str(path), data)
        except PhotoimmuneError as err:  # the copy is done and recorded in the catalog
            logger.warning("jobs: %s: recording its manifest failed: %s", path, err)

    def _fail(self, claim: Claim, error: str, permanent: bool) -> None:
        state = self.queue.fail(claim, error, permanent=permanent)
        if state == "failed":
            self.summary.failed[claim.location] = error
        elif state == "pending":
            self.summary.retrying += 1
        logger.warning("jobs: %s: %s (%s)", claim.location, error, state)
        self.in_flight.pop(claim.item_id, None)
        self._advance(claim)

    def _advance(self, claim: Claim) -> None:
        self.finished += 1
        if self.progress is not None:
            self.progress(self.finished, max(self.total, self.finished), claim.location)


def _output_problem(path: Path) -> str | None:
    """Why nothing can be written at ``path`` (None: it is free, or a file to adopt)."""
    try:
        check_output_path(path)  # a name too long for the file system
    except OutputPathError as err:
        return str(err)
    except OutputExistsError:
        pass  # a directory: said below, with what to do
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"{path}: cannot check the output path ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _IN_THE_WAY if test(mode)), "a special file")
    return f"{path} exists and is {kind}, not a copy a job wrote; move it away and run again"


_IN_THE_WAY = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
)
