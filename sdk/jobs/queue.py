"""The work queue re-immunization jobs share: one row per (original, target set), with leases.

Crash safety rests on three rules:

* an item is worked on only by the job holding its lease; a job renews its
  leases while it runs (a heartbeat thread), so a lease lapses
  ``lease_seconds`` after its job stopped (killed, crashed, host lost);
* a lapsed lease, or one held by a process that no longer exists on this host
  and in this PID namespace (``kill -9``), is taken over by the next job that
  claims work;
* an item whose jobs died ``max_attempts`` times is failed instead of claimed
  again, so one image that kills its worker cannot stall the catalog;
* finishing an item (recording its copy, marking it done) is one transaction
  that succeeds only while the job still holds the lease.

Claims are ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent
jobs take different items without waiting; SQLite serialises writers instead
(each claim is a short ``BEGIN IMMEDIATE`` transaction).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..database import utc_now
from .catalog import Base, Catalog, ImmunizedCopy, OfAnOriginal, Original

#: Seconds a lease lasts without renewal; a job renews at a third of it.
DEFAULT_LEASE_SECONDS = 120
logger = logging.getLogger(__name__)


class WorkItem(OfAnOriginal, Base):
    __tablename__ = "work_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    targets: Mapped[list] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    copy_id: Mapped[int | None] = mapped_column(ForeignKey("immunized_copies.id"))
    finished_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Claim(BaseModel):
    """A leased item: what to make, from which original."""

    model_config = ConfigDict(frozen=True)

    item_id: int
    original_id: int
    location: str
    original_sha256: str
    targets_key: str
    targets: list[dict]  # [{"ref": ..., "digest": ...}]
    attempts: int


class NewCopy(BaseModel):
    """What a finished item produced, to record in the catalog."""

    path: str
    sha256: str
    protections: list[dict]


def _local_prefix() -> str:
    """``host:pid-namespace:``: processes that can see each other's PIDs share it."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # no procfs: PIDs are only comparable with the host name
        namespace = "-"
    return f"{socket.gethostname()}:{namespace}:"


def job_owner() -> str:
    """This process's identity in leases: ``host:pid-namespace:pid:random``."""
    return f"{_local_prefix()}{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_gone(owner: str | None) -> bool:
    """Whether ``owner`` was a process here (same host, same PID namespace) that has exited."""
    prefix = _local_prefix()
    if owner is None or not owner.startswith(prefix):
        return False
    pid = owner[len(prefix) :].partition(":")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


def _chunks(ids: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    """Bounded IN (...) lists: databases cap the parameters of one statement."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns.
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


class WorkQueue:
    """Leases on a catalog's work items for one job (``owner``).

    Example:
        >>> queue = WorkQueue(Catalog("photos.db"))  # doctest: +SKIP
        >>> claims = queue.claim(2, targets_key)  # doctest: +SKIP
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_attempts: int = 3,
    ) -> None:
        self.catalog = catalog
        self.owner = owner or job_owner()
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts

    def enqueue(
        self, original_ids: Sequence[int], targets_key: str, targets: list[dict], *, retry=False
    ) -> int:
        """Make sure each original has an item for this target set; returns how many are new.

        ``retry`` puts failed items back in the queue. Items of other keys are left
        alone: another job may be working on them.
        """
        with self.catalog.write() as session:
            return self.enqueue_in(session, original_ids, targets_key, targets, retry=retry)

    def enqueue_in(
        self,
        session: Session,
        original_ids: Sequence[int],
        targets_key: str,
        targets: list[dict],
        *,
        retry=False,
    ) -> int:
        """:meth:`enqueue` inside the caller's write transaction, so that rows the caller
        adds (a service's job naming the item) commit together with the items."""
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            # Two jobs planning at once would both insert the same new items.
            session.execute(text("SELECT pg_advisory_xact_lock(74689)"))
        created = 0
        for chunk in _chunks(original_ids):
            created += self._enqueue_chunk(session, chunk, targets_key, targets, retry)
        session.flush()
        return created

    @staticmethod
    def _enqueue_chunk(session, ids: Sequence[int], key: str, targets: list[dict], retry) -> int:
        originals = dict(
            session.execute(select(Original.id, Original.sha256).where(Original.id.in_(ids))).all()
        )
        existing = {
            (w.original_id, w.original_sha256): w
            for w in session.scalars(
                select(WorkItem).where(WorkItem.original_id.in_(ids), WorkItem.targets_key == key)
            )
        }
        created = 0
        for original_id in ids:
            sha = originals[original_id]
            item = existing.get((original_id, sha))
            if item is None:
                session.add(
                    WorkItem(
                        original_id=original_id,
                        original_sha256=sha,
                        targets_key=key,
                        targets=targets,
                        state="pending",
                        attempts=0,
                        updated_at=utc_now(),
                    )
                )
                created += 1
            elif retry and item.state == "failed":
                item.state, item.attempts, item.error = "pending", 0, None
        return created

    def claim(self, n: int, targets_key: str | None) -> list[Claim]:
        """Lease up to ``n`` items of this target set (None: of any), pending ones first,
        then ones whose job is gone."""
        now = utc_now()
        mine = WorkItem.targets_key == targets_key if targets_key is not None else true()
        with self.catalog.write() as session:
            pending = (
                select(WorkItem)
                .where(mine, WorkItem.state == "pending")
                .order_by(WorkItem.id)
                .limit(n)
                .with_for_update(skip_locked=True)
            )
            items = list(session.scalars(pending))
            if len(items) < n:
                # Lapsed leases, and leases of this host's processes (they may have exited).
                leased = (
                    select(WorkItem)
                    .where(
                        mine,
                        WorkItem.state == "leased",
                        or_(
                            WorkItem.lease_expires <= now,
                            WorkItem.owner.startswith(_local_prefix()),
                        ),
                    )
                    .order_by(WorkItem.id)
                    .limit(max(4 * n, 64))
                    .with_for_update(skip_locked=True)
                )
                for item in session.scalars(leased):
                    if len(items) == n or not self._lapsed(item, now):
                        continue
                    if item.attempts >= self.max_attempts:
                        item.state, item.owner, item.lease_expires = "failed", None, None
                        # Only the cause: the service shows this to HTTP clients, who have
                        # no --retry-failed; the CLI prints its own advice beside it.
                        item.error = (
                            f"a job stopped {item.attempts} times while immunizing this image "
                            "(killed, or crashed: out of memory?)"
                        )
                        item.updated_at = now
                        continue
                    items.append(item)
            locations = dict(
                session.execute(
                    select(Original.id, Original.location).where(
                        Original.id.in_([i.original_id for i in items])
                    )
                ).all()
            )
            for item in items:
                item.state, item.owner = "leased", self.owner
                item.lease_expires = now + self.lease
                item.attempts += 1
                item.updated_at = now
            return [
                Claim(
                    item_id=item.id,
                    original_id=item.original_id,
                    location=locations[item.original_id],
                    original_sha256=item.original_sha256,
                    targets_key=item.targets_key,
                    targets=item.targets,
                    attempts=item.attempts,
                )
                for item in items
            ]

    @staticmethod
    def _lapsed(item: WorkItem, now: datetime) -> bool:
        expires = _aware(item.lease_expires)
        return expires is None or expires <= now or _owner_is_gone(item.owner)

    def renew(self, item_ids: Sequence[int]) -> None:
        """Extend this job's leases on ``item_ids`` (the heartbeat)."""
        if not item_ids:
            return
        with self.catalog.write() as session:
            session.execute(
                update(WorkItem)
                .where(
                    WorkItem.id.in_(item_ids),
                    WorkItem.owner == self.owner,
                    WorkItem.state == "leased",
                )
                .values(lease_expires=utc_now() + self.lease)
            )

    def complete(
        self, claim: Claim, copy: NewCopy, *, also: Callable[[Session], None] | None = None
    ) -> bool:
        """Record the copy and mark the item done, if this job still holds it.

        ``also(session)`` runs in the same transaction, only when the item is still
        held: what it writes (a service's result file) commits exactly with the copy.
        """
        with self.catalog.write() as session:
            item = self._held(session, claim.item_id)
            if item is None:
                return False
            if also is not None:
                also(session)
            row = ImmunizedCopy(
                original_id=claim.original_id,
                original_sha256=claim.original_sha256,
                path=copy.path,
                sha256=copy.sha256,
                targets_key=claim.targets_key,
                protections=copy.protections,
                created_at=utc_now(),
            )
            session.add(row)
            session.flush()
            item.state, item.copy_id, item.error = "done", row.id, None
            item.owner, item.lease_expires, item.finished_by = None, None, self.owner
            item.updated_at = utc_now()
            return True

    def fail(self, claim: Claim, error: str, *, permanent: bool = False) -> str:
        """Record a failure; the item is retried until ``max_attempts``. Returns its new state."""
        with self.catalog.write() as session:
            item = self._held(session, claim.item_id)
            if item is None:
                return "lost"
            final = permanent or item.attempts >= self.max_attempts
            item.state = "failed" if final else "pending"
            item.error, item.owner, item.lease_expires = error, None, None
            item.updated_at = utc_now()
            return item.state

    def release(self, item_ids: Sequence[int]) -> None:
        """Give leases back untouched (a job stopping early, e.g. on Ctrl-C)."""
        if not item_ids:
            return
        with self.catalog.write() as session:
            session.execute(
                update(WorkItem)
                .where(WorkItem.id.in_(item_ids), WorkItem.owner == self.owner)
                .values(
                    state="pending",
                    owner=None,
                    lease_expires=None,
                    attempts=WorkItem.attempts - 1,  # not tried: the attempt is given back
                    updated_at=utc_now(),
                )
            )

    def _held(self, session, item_id: int) -> WorkItem | None:
        item = session.get(WorkItem, item_id, with_for_update=True)
        if item is None or item.state != "leased" or item.owner != self.owner:
            return None
        return item

    def failures(self, targets_key: str) -> dict[str, str]:
        """Failed items of this key: original location -> why."""
        with self.catalog.session() as session:
            rows = session.execute(
                select(Original.location, WorkItem.error)
                .join(Original, Original.id == WorkItem.original_id)
                .where(WorkItem.targets_key == targets_key, WorkItem.state == "failed")
            ).all()
        return {location: error or "failed" for location, error in rows}

    def unfinished(self, targets_key: str) -> int:
        """Items of this key still pending or leased (by this job or another)."""
        with self.catalog.session() as session:
            count = session.scalar(
                select(func.count()).where(
                    WorkItem.targets_key == targets_key,
                    WorkItem.state.in_(("pending", "leased")),
                )
            )
            return count or 0


class LeaseHeartbeat(threading.Thread):
    """Renews ``queue``'s leases on the items in ``in_flight`` (a dict keyed by item id)
    every third of a lease, until ``halt`` is set.

    Example:
        >>> heartbeat = LeaseHeartbeat(queue, in_flight)  # doctest: +SKIP
        >>> heartbeat.start(); ...; heartbeat.halt.set(); heartbeat.join()  # doctest: +SKIP
    """

    def __init__(self, queue: WorkQueue, in_flight: dict) -> None:
        super().__init__(name="photoimmune-lease-heartbeat", daemon=True)
        self.queue, self.in_flight = queue, in_flight
        self.interval = queue.lease.total_seconds() / 3
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            try:
                self.queue.renew(list(self.in_flight))  # list(): a snapshot of the keys
            except Exception:  # a lapse is recovered by the lease checks; keep beating
                logger.exception("jobs: renewing leases failed")
