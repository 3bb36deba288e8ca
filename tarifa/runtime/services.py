"""Writes of the background runtime: enqueue, claim, finish, retry and reap jobs.

Delivery is at-least-once: a job's effects and its completion are separate commits, so a
worker killed between the two runs the job again. Handlers are idempotent (see
`apply_once`), which makes the combination exactly-once in effect.
"""

from __future__ import annotations

import math
import random
import threading
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from tarifa.runtime import registry
from tarifa.runtime.models import IdempotencyReceipt, Job
from tarifa.runtime.transports import get_transport

Status = Job.Status
MAX_WAKES_PER_COMMIT = 8


class UnknownJobType(ValueError):
    pass


@dataclass
class ClaimedJob:
    id: int
    type: str
    queue: str
    payload: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    created_at: datetime
    run_at: datetime


# --- enqueueing ------------------------------------------------------------------

_pending = threading.local()


def _wake_after_commit(queue: str, priority: int, count: int) -> None:
    wakes = getattr(_pending, "wakes", None)
    if wakes is None:
        wakes = _pending.wakes = {}
    wakes[(queue, priority)] = wakes.get((queue, priority), 0) + count
    # One callback per enqueue; the first to run drains the set and the rest find it empty.
    transaction.on_commit(_flush_wakes)


def _flush_wakes() -> None:
    wakes = getattr(_pending, "wakes", None)
    if not wakes:
        return
    _pending.wakes = {}
    batch = max(1, settings.TARIFA_WORKER_BATCH_SIZE)
    get_transport().notify(
        {key: min(MAX_WAKES_PER_COMMIT, math.ceil(count / batch)) for key, count in wakes.items()}
    )


def _build_job(
    job_type: str, *, payload: dict | None, queue: str | None, priority: int | None,
    run_at: datetime | None, unique_key: str | None, max_attempts: int | None, now: datetime,
) -> Job:
    spec = registry.job_type(job_type)
    if spec is None:
        raise UnknownJobType(f"No handler is registered for job type '{job_type}'.")
    return Job(
        type=job_type, payload=payload or {}, queue=queue or spec.queue,
        priority=spec.priority if priority is None else priority, run_at=run_at or now,
        max_attempts=max_attempts or spec.max_attempts, unique_key=unique_key, created_at=now,
    )


def enqueue(
    job_type: str, *, payload: dict | None = None, queue: str | None = None, priority: int | None = None,
    run_at: datetime | None = None, unique_key: str | None = None, max_attempts: int | None = None,
) -> Job | None:
    """Add a job inside the caller's transaction; workers are woken only after it commits.

    With `unique_key`, a second enqueue of the same key is a no-op and returns None.
    """
    now = timezone.now()
    job = _build_job(
        job_type, payload=payload, queue=queue, priority=priority, run_at=run_at,
        unique_key=unique_key, max_attempts=max_attempts, now=now,
    )
    if unique_key:
        try:
            with transaction.atomic():
                job.save(force_insert=True)
        except IntegrityError:
            return None
    else:
        job.save(force_insert=True)
    if job.run_at <= now:
        _wake_after_commit(job.queue, job.priority, 1)
    return job


def enqueue_many(
    job_type: str, payloads: Iterable[dict], *, queue: str | None = None, priority: int | None = None,
    run_at: datetime | None = None,
) -> int:
    now = timezone.now()
    jobs = [
        _build_job(job_type, payload=p, queue=queue, priority=priority, run_at=run_at, unique_key=None,
                   max_attempts=None, now=now)
        for p in payloads
    ]
    if not jobs and not registry.job_type(job_type):
        raise UnknownJobType(f"No handler is registered for job type '{job_type}'.")
    if not jobs:
        return 0
    Job.objects.bulk_create(jobs, batch_size=1000)
    if jobs[0].run_at <= now:
        _wake_after_commit(jobs[0].queue, jobs[0].priority, len(jobs))
    return len(jobs)


# --- claiming and finishing ---------------------------------------------------------


def claim_due_jobs(
    *, worker_id: str, queues: list[str], limit: int, lease_seconds: float, now: datetime | None = None
) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs, highest priority first, then oldest due time, and at most one
    of the long-running (`one_at_a_time`) types: the rest of those stay queued for other workers.

    PostgreSQL: SELECT … FOR UPDATE SKIP LOCKED, so concurrent workers take disjoint rows without
    waiting. SQLite: the transaction is BEGIN IMMEDIATE (see settings), which serialises claimers.
    """
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(status=Status.QUEUED, queue__in=queues, run_at__lte=now)
            .order_by("-priority", "run_at", "id")
            .only("id", "type", "queue", "payload", "priority", "attempts", "max_attempts", "created_at", "run_at")
            [:limit]
        )
        rows = _one_long_job_at_most(rows)
        if not rows:
            return []
        Job.objects.filter(id__in=[row.id for row in rows]).update(
            status=Status.LEASED, leased_by=worker_id, leased_until=now + timedelta(seconds=lease_seconds),
            attempts=F("attempts") + 1, started_at=now,
        )
    return [
        ClaimedJob(
            id=row.id, type=row.type, queue=row.queue, payload=row.payload, priority=row.priority,
            attempts=row.attempts + 1, max_attempts=row.max_attempts, created_at=row.created_at, run_at=row.run_at,
        )
        for row in rows
    ]


def _one_long_job_at_most(rows: list[Job]) -> list[Job]:
    """The rows without the long-running jobs after the first (left unleased, they unlock at commit)."""
    kept, long_taken = [], False
    for row in rows:
        if registry.runs_one_at_a_time(row.type):
            if long_taken:
                continue
            long_taken = True
        kept.append(row)
    return kept


def complete_jobs(*, worker_id: str, job_ids: list[int]) -> int:
    """Mark jobs done. A job whose lease this worker lost is left to its new owner."""
    if not job_ids:
        return 0
    return Job.objects.filter(id__in=job_ids, leased_by=worker_id, status=Status.LEASED).update(
        status=Status.SUCCEEDED, finished_at=timezone.now(), leased_until=None, last_error=""
    )


def backoff_delay(*, attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (uniform between 0 and the capped exponential)."""
    return random.uniform(0, min(cap, base * (2 ** max(0, attempts - 1))))


def fail_job(*, worker_id: str, job: ClaimedJob, error: BaseException | str) -> str:
    """Record a failed attempt: retry later with backoff, or stop in `failed` after the last attempt."""
    spec = registry.job_type(job.type)
    message = error if isinstance(error, str) else "".join(traceback.format_exception(error))[-4000:]
    now = timezone.now()
    jobs = Job.objects.filter(id=job.id, leased_by=worker_id, status=Status.LEASED)
    if spec is None or job.attempts >= job.max_attempts:
        jobs.update(status=Status.FAILED, finished_at=now, leased_until=None, last_error=message)
        return Status.FAILED
    delay = backoff_delay(attempts=job.attempts, base=spec.backoff_base, cap=spec.backoff_cap)
    jobs.update(
        status=Status.QUEUED, run_at=now + timedelta(seconds=delay), leased_by="", leased_until=None,
        last_error=message,
    )
    return Status.QUEUED


def release_jobs(*, worker_id: str, job_ids: list[int]) -> int:
    """Give back leased jobs this worker will not run (shutdown); the attempt is not counted."""
    if not job_ids:
        return 0
    count = Job.objects.filter(id__in=job_ids, leased_by=worker_id, status=Status.LEASED).update(
        status=Status.QUEUED, leased_by="", leased_until=None, run_at=timezone.now(), attempts=F("attempts") - 1
    )
    return count


def extend_leases(*, worker_id: str, job_ids: list[int], lease_seconds: float) -> int:
    if not job_ids:
        return 0
    return Job.objects.filter(id__in=job_ids, leased_by=worker_id, status=Status.LEASED).update(
        leased_until=timezone.now() + timedelta(seconds=lease_seconds)
    )


def reap_expired_leases(*, now: datetime | None = None) -> int:
    """Return the jobs of dead workers to the pool (or fail those that used their last attempt)."""
    now = now or timezone.now()
    expired = Job.objects.filter(status=Status.LEASED, leased_until__lt=now)
    with transaction.atomic():
        exhausted = expired.filter(attempts__gte=F("max_attempts")).update(
            status=Status.FAILED, finished_at=now, leased_until=None,
            last_error="lease expired on the last attempt (worker died or hung)",
        )
        returned = expired.update(
            status=Status.QUEUED, leased_by="", leased_until=None, run_at=F("leased_until"),
            last_error="lease expired (worker died or hung); returned to the queue",
        )
    return exhausted + returned


def retry_failed_jobs(*, job_type: str | None = None) -> int:
    jobs = Job.objects.filter(status=Status.FAILED)
    if job_type:
        jobs = jobs.filter(type=job_type)
    with transaction.atomic():
        queues = list(jobs.values_list("queue", "priority").distinct())
        count = jobs.update(status=Status.QUEUED, attempts=0, run_at=timezone.now(), finished_at=None, leased_by="")
        for queue, priority in queues:
            _wake_after_commit(queue, priority, count)
    return count


def cancel_jobs(*, job_type: str, unique_key_prefix: str | None = None) -> int:
    jobs = Job.objects.filter(type=job_type, status=Status.QUEUED)
    if unique_key_prefix:
        jobs = jobs.filter(unique_key__startswith=unique_key_prefix)
    return jobs.update(status=Status.CANCELLED, finished_at=timezone.now())


def purge_finished_jobs(*, older_than: timedelta) -> int:
    cutoff = timezone.now() - older_than
    deleted, _ = Job.objects.filter(
        status__in=[Status.SUCCEEDED, Status.CANCELLED], finished_at__lt=cutoff
    ).delete()
    return deleted


# --- idempotent effects ---------------------------------------------------------------


def apply_once(key: str) -> bool:
    """Record `key` as applied inside the current transaction; False when it already was.

    Call it first in the transaction that applies an effect: if the transaction commits, the
    receipt and the effect exist together; if it rolls back, neither does.
    """
    try:
        with transaction.atomic():
            IdempotencyReceipt.objects.create(key=key)
        return True
    except IntegrityError:
        return False
