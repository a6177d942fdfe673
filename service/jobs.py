"""Clients' jobs on the durable queue of :mod:`photoimmune.sdk.jobs`.

A job is one upload to immunize against a set of targets at a budget, in a
format. The upload becomes an original of the service's catalog (its bytes a
blob in the database), the work a work item whose key fixes everything that
shapes the result (:func:`work_key`): two clients who send the same photo with
the same settings share one item, and one result. A job row ties the client's
key to the item. Submitting is one transaction: the blob, the original, the
item and the job row commit together or not at all, so a worker never sees an
item without its job, and a restart loses nothing that was answered 202.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from photoimmune.sdk.database import utc_now
from photoimmune.sdk.jobs.catalog import ImmunizedCopy, Original
from photoimmune.sdk.jobs.queue import WorkItem, WorkQueue

from .apikeys import KeyRecord
from .errors import JobNotFoundError, JobNotReadyError
from .store import ServiceJob, ServiceStore

#: Media types of the formats the service writes.
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_STATES = {"pending": "queued", "leased": "running", "done": "done", "failed": "failed"}


class JobSpec(BaseModel):
    """What a job makes: the targets (ref and digest), the budget, the file format."""

    model_config = ConfigDict(frozen=True)

    targets: tuple[tuple[str, str], ...]
    eps: str
    steps: int | None
    format: Literal["png", "jpeg", "webp"]


class JobStatus(BaseModel):
    """``GET /v1/jobs/{id}``: where a job is, and where its result will be."""

    id: str
    state: Literal["queued", "running", "done", "failed"]
    queued_ahead: int  # items before it in the queue (queued only)
    attempts: int
    error: str | None
    targets: list[str]
    eps: str
    format: str
    created_at: datetime
    result_url: str | None


def work_key(spec: JobSpec) -> str:
    """The queue key of ``spec``: sha256 of its canonical JSON.

    Example:
        >>> len(work_key(JobSpec(targets=(("a/b@1", "00"),), eps="8/255", steps=None,
        ...                      format="png")))
        64
    """
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def submit(store: ServiceStore, key: KeyRecord, data: bytes, spec: JobSpec, size) -> str:
    """Queue ``data`` (an image of ``size`` (w, h), already decoded once) as a job; its id."""
    sha = hashlib.sha256(data).hexdigest()
    location = f"upload:{sha}"
    queue = WorkQueue(store.catalog)
    job_id = uuid.uuid4().hex
    with store.write() as session:
        store.put_blob(session, data)
        original = session.scalar(select(Original).where(Original.location == location))
        if original is None:
            original = Original(
                location=location,
                sha256=sha,
                size=len(data),
                width=size[0],
                height=size[1],
                readable=True,
                added_at=utc_now(),
            )
            session.add(original)
            session.flush()
        key_text = work_key(spec)
        targets = [{"ref": ref, "digest": digest} for ref, digest in spec.targets]
        queue.enqueue_in(session, [original.id], key_text, targets, retry=True)
        item_id = session.scalar(
            select(WorkItem.id).where(
                WorkItem.original_id == original.id, WorkItem.targets_key == key_text
            )
        )
        session.add(
            ServiceJob(
                id=job_id,
                key_id=key.id,
                item_id=item_id,
                spec=spec.model_dump(mode="json"),
                created_at=utc_now(),
            )
        )
    return job_id


def job_spec(store: ServiceStore, item_id: int) -> JobSpec | None:
    """The spec of the jobs that wait for ``item_id`` (all share it: it is the item's key)."""
    with store.read() as session:
        spec = session.scalar(select(ServiceJob.spec).where(ServiceJob.item_id == item_id))
    return None if spec is None else JobSpec.model_validate(spec)


def _owned(session: Any, key: KeyRecord, job_id: str) -> tuple[ServiceJob, WorkItem]:
    job = session.get(ServiceJob, job_id) if len(job_id) <= 32 else None
    if job is None or job.key_id != key.id:
        raise JobNotFoundError(f"no job {job_id!r} for this API key; check the id you were given")
    return job, session.get(WorkItem, job.item_id)


def status(store: ServiceStore, key: KeyRecord, job_id: str) -> JobStatus:
    """Where job ``job_id`` of ``key`` is."""
    with store.read() as session:
        job, item = _owned(session, key, job_id)
        state = _STATES[item.state]
        ahead: int | None = 0
        if state == "queued":
            ahead = session.scalar(
                select(func.count()).where(WorkItem.state == "pending", WorkItem.id < item.id)
            )
        spec = JobSpec.model_validate(job.spec)
        return JobStatus(
            id=job.id,
            state=state,  # type: ignore[arg-type]
            queued_ahead=int(ahead or 0),
            attempts=item.attempts,
            error=item.error if state == "failed" else None,
            targets=[ref for ref, _ in spec.targets],
            eps=spec.eps,
            format=spec.format,
            created_at=job.created_at,
            result_url=f"/v1/jobs/{job.id}/result" if state == "done" else None,
        )


def result(store: ServiceStore, key: KeyRecord, job_id: str) -> tuple[bytes, str]:
    """The signed file of a finished job, and its media type."""
    with store.read() as session:
        job, item = _owned(session, key, job_id)
        if item.state != "done" or item.copy_id is None:
            raise JobNotReadyError(
                f"job {job_id} is {_STATES[item.state]}, not done; poll GET /v1/jobs/{job_id} "
                "until its state is done"
                + (f" (it failed: {item.error})" if item.state == "failed" else "")
            )
        copy = session.get(ImmunizedCopy, item.copy_id)
        spec = JobSpec.model_validate(job.spec)
    data = None if copy is None else store.blob(copy.sha256)
    assert data is not None  # stored in the transaction that recorded the copy
    return data, MEDIA_TYPES[spec.format]
