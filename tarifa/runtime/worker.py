"""The worker: claims due jobs in batches, runs their handlers, and keeps its leases alive.

Each of `concurrency` slots is a thread with its own database connection claiming its own
batches. A heartbeat thread records liveness, extends the leases of held jobs and returns
expired leases of dead workers to the pool.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from tarifa.ops import metrics
from tarifa.ops.logging import get_logger
from tarifa.runtime import registry, services
from tarifa.runtime.models import WorkerHeartbeat
from tarifa.runtime.transports import get_transport

log = get_logger(__name__)


@dataclass(frozen=True)
class JobContext:
    job_id: int
    type: str
    attempt: int
    max_attempts: int
    worker_id: str

    @property
    def idempotency_key(self) -> str:
        return f"job:{self.job_id}"


def new_worker_id(kind: str = "worker") -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self, *, queues: list[str] | None = None, concurrency: int = 1, batch_size: int | None = None,
        lease_seconds: float | None = None, poll_seconds: float | None = None,
        heartbeat_seconds: float | None = None, worker_id: str | None = None,
    ) -> None:
        self.queues = list(queues or ["default"])
        self.concurrency = max(1, concurrency)
        self.batch_size = batch_size or settings.TARIFA_WORKER_BATCH_SIZE
        self.lease_seconds = lease_seconds or settings.TARIFA_JOB_LEASE_SECONDS
        self.poll_seconds = poll_seconds or settings.TARIFA_WORKER_POLL_SECONDS
        self.heartbeat_seconds = heartbeat_seconds or settings.TARIFA_HEARTBEAT_SECONDS
        self.worker_id = worker_id or new_worker_id()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._held: set[int] = set()
        self._current: dict[int, tuple[int, str]] = {}
        self._done = 0

    # -- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, install_signals: bool = True) -> None:
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self._beat(status=WorkerHeartbeat.Status.RUNNING, create=True)
        log.info("worker.started", worker_id=self.worker_id, queues=self.queues, concurrency=self.concurrency)
        threads = [threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)]
        threads += [
            threading.Thread(target=self._slot_loop, args=(slot,), name=f"slot-{slot}", daemon=True)
            for slot in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            while not self._stop.wait(0.2):
                pass
        finally:
            for thread in threads[1:]:
                thread.join()
            self._stop.set()
            threads[0].join(timeout=self.heartbeat_seconds + 5)
            self._beat(status=WorkerHeartbeat.Status.STOPPED)
            connection.close()
            log.info("worker.stopped", worker_id=self.worker_id, jobs_done=self._done)

    def _slot_loop(self, slot: int) -> None:
        transport = get_transport()
        try:
            while not self._stop.is_set():
                try:
                    claimed = self.run_once(slot=slot)
                except Exception as exc:  # database away, etc.: back off, reconnect, go on
                    log.error("worker.loop_error", error=repr(exc))
                    close_old_connections()
                    self._stop.wait(self.poll_seconds)
                    continue
                if claimed < self.batch_size and not self._stop.is_set():
                    transport.wait(queues=self.queues, timeout=self.poll_seconds)
        finally:
            connection.close()

    # -- one batch --------------------------------------------------------------------

    def run_once(self, *, slot: int = 0) -> int:
        """Claim one batch and run it; returns how many jobs were claimed (the batch size after a
        long-running job, so the slot looks for more without waiting)."""
        jobs = services.claim_due_jobs(
            worker_id=self.worker_id, queues=self.queues, limit=self.batch_size, lease_seconds=self.lease_seconds
        )
        if not jobs:
            return 0
        long_job = any(registry.runs_one_at_a_time(job.type) for job in jobs)
        with self._lock:
            self._held.update(job.id for job in jobs)
        done: list[int] = []
        try:
            for index, job in enumerate(jobs):
                if self._stop.is_set():
                    services.release_jobs(worker_id=self.worker_id, job_ids=[j.id for j in jobs[index:]])
                    break
                if self._execute(job, slot=slot):
                    done.append(job.id)
        finally:
            services.complete_jobs(worker_id=self.worker_id, job_ids=done)
            with self._lock:
                self._held.difference_update(job.id for job in jobs)
                self._current.pop(slot, None)
                self._done += len(done)
        # After a long job, claim again at once: the claim may have left others of its kind due.
        return self.batch_size if long_job else len(jobs)

    def _execute(self, job: services.ClaimedJob, *, slot: int) -> bool:
        spec = registry.job_type(job.type)
        with self._lock:
            self._current[slot] = (job.id, job.type)
        started = time.monotonic()
        metrics.JOB_START_LATENCY.labels(job.type).observe(
            max(0.0, (timezone.now() - max(job.run_at, job.created_at)).total_seconds())
        )
        structlog.contextvars.bind_contextvars(job_id=job.id, job_type=job.type, attempt=job.attempts)
        try:
            if spec is None:
                raise services.UnknownJobType(f"No handler is registered for job type '{job.type}'.")
            context = JobContext(
                job_id=job.id, type=job.type, attempt=job.attempts, max_attempts=job.max_attempts,
                worker_id=self.worker_id,
            )
            spec.handler(context, **job.payload)
        except Exception as exc:
            if connection.connection is not None and connection.get_autocommit() and not connection.is_usable():
                connection.close()  # the handler broke the connection; the next query reconnects
            outcome = services.fail_job(worker_id=self.worker_id, job=job, error=exc)
            metrics.JOBS_TOTAL.labels(job.type, "failed" if outcome == "failed" else "retry").inc()
            log.warning("job.failed", outcome=outcome, error=repr(exc))
            return False
        else:
            metrics.JOBS_TOTAL.labels(job.type, "succeeded").inc()
            return True
        finally:
            metrics.JOB_DURATION.labels(job.type).observe(time.monotonic() - started)
            structlog.contextvars.unbind_contextvars("job_id", "job_type", "attempt")

    # -- heartbeat --------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        try:
            while not self._stop.wait(self.heartbeat_seconds):
                try:
                    with self._lock:
                        held = list(self._held)
                    services.extend_leases(worker_id=self.worker_id, job_ids=held, lease_seconds=self.lease_seconds)
                    reaped = services.reap_expired_leases()
                    if reaped:
                        log.warning("worker.reaped_expired_leases", count=reaped)
                    self._beat(status=WorkerHeartbeat.Status.RUNNING)
                except Exception as exc:
                    log.error("worker.heartbeat_error", error=repr(exc))
                    close_old_connections()
        finally:
            connection.close()

    def _beat(self, *, status: str, create: bool = False) -> None:
        with self._lock:
            current = next(iter(self._current.values()), (None, ""))
            done = self._done
        fields = dict(
            status=status, last_beat_at=timezone.now(), current_job_id=current[0], current_job_type=current[1],
            jobs_done=done,
        )
        if create:
            WorkerHeartbeat.objects.update_or_create(
                worker_id=self.worker_id,
                defaults=dict(
                    fields, kind="worker", hostname=socket.gethostname(), pid=os.getpid(), queues=self.queues,
                    concurrency=self.concurrency, started_at=timezone.now(),
                ),
            )
        else:
            WorkerHeartbeat.objects.filter(worker_id=self.worker_id).update(**fields)
