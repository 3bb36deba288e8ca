"""Periodic jobs from cron expressions, evaluated in each schedule's own time zone.

Several scheduler processes may run at once (for availability): a tick fires only for the one
whose compare-and-set moves `next_run_at` forward, and the job's unique key is a second guard.
Ticks missed while no scheduler ran are coalesced into one firing.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import zoneinfo
from datetime import datetime

from croniter import croniter
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from tarifa.ops.logging import get_logger
from tarifa.runtime import registry
from tarifa.runtime.models import PeriodicSchedule, WorkerHeartbeat
from tarifa.runtime.services import enqueue
from tarifa.runtime.worker import new_worker_id

log = get_logger(__name__)


def next_fire_time(*, cron: str, timezone_name: str, after: datetime) -> datetime:
    """The first tick strictly after `after`, computed on the zone's wall clock (DST-aware)."""
    local = after.astimezone(zoneinfo.ZoneInfo(timezone_name))
    return croniter(cron, local).get_next(datetime).astimezone(zoneinfo.ZoneInfo("UTC"))


def sync_periodic_schedules(*, now: datetime | None = None) -> int:
    """Store the schedules declared in code; a changed cron or zone restarts that schedule's clock."""
    now = now or timezone.now()
    for spec in registry.periodics().values():
        if not croniter.is_valid(spec.cron):
            raise ValueError(f"Periodic '{spec.name}' has an invalid cron expression '{spec.cron}'.")
        with transaction.atomic():
            schedule = PeriodicSchedule.objects.select_for_update().filter(name=spec.name).first()
            first = next_fire_time(cron=spec.cron, timezone_name=spec.timezone, after=now)
            if schedule is None:
                PeriodicSchedule.objects.create(
                    name=spec.name, cron=spec.cron, timezone=spec.timezone, job_type=spec.job_type,
                    queue=spec.queue, payload=spec.payload, next_run_at=first,
                )
                continue
            clock_changed = (schedule.cron, schedule.timezone) != (spec.cron, spec.timezone)
            schedule.cron, schedule.timezone = spec.cron, spec.timezone
            schedule.job_type, schedule.queue, schedule.payload = spec.job_type, spec.queue, spec.payload
            if clock_changed:
                schedule.next_run_at = first
            schedule.save()
    return len(registry.periodics())


def fire_due_schedules(*, now: datetime | None = None) -> list[str]:
    """Enqueue one job for every schedule whose tick has come; returns the names fired here."""
    now = now or timezone.now()
    fired: list[str] = []
    for schedule in PeriodicSchedule.objects.filter(enabled=True, next_run_at__lte=now):
        due = schedule.next_run_at
        following = next_fire_time(cron=schedule.cron, timezone_name=schedule.timezone, after=max(now, due))
        with transaction.atomic():
            won = PeriodicSchedule.objects.filter(pk=schedule.pk, next_run_at=due).update(
                next_run_at=following, last_run_at=due
            )
            if not won:
                continue  # another scheduler took this tick
            enqueue(
                schedule.job_type, payload={**schedule.payload, "scheduled_for": due.isoformat()},
                queue=schedule.queue or None, unique_key=f"periodic:{schedule.name}:{due.isoformat()}",
            )
        fired.append(schedule.name)
        log.info("scheduler.fired", schedule=schedule.name, due=due.isoformat(), next=following.isoformat())
    return fired


class Scheduler:
    def __init__(self, *, tick_seconds: float = 1.0, heartbeat_seconds: float = 5.0) -> None:
        self.tick_seconds = tick_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.scheduler_id = new_worker_id("scheduler")
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, install_signals: bool = True) -> None:
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        sync_periodic_schedules()
        WorkerHeartbeat.objects.update_or_create(
            worker_id=self.scheduler_id,
            defaults=dict(kind="scheduler", hostname=socket.gethostname(), pid=os.getpid(),
                          status=WorkerHeartbeat.Status.RUNNING, last_beat_at=timezone.now()),
        )
        log.info("scheduler.started", scheduler_id=self.scheduler_id, schedules=len(registry.periodics()))
        last_beat = timezone.now()
        try:
            while not self._stop.wait(self.tick_seconds):
                try:
                    fire_due_schedules()
                    if (timezone.now() - last_beat).total_seconds() >= self.heartbeat_seconds:
                        last_beat = timezone.now()
                        WorkerHeartbeat.objects.filter(worker_id=self.scheduler_id).update(last_beat_at=last_beat)
                except Exception as exc:
                    log.error("scheduler.tick_error", error=repr(exc))
                    close_old_connections()
        finally:
            WorkerHeartbeat.objects.filter(worker_id=self.scheduler_id).update(
                status=WorkerHeartbeat.Status.STOPPED, last_beat_at=timezone.now()
            )
            connection.close()
            log.info("scheduler.stopped", scheduler_id=self.scheduler_id)
