from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Priority(models.IntegerChoices):
    LOW = 1
    NORMAL = 5
    HIGH = 10


class Job(models.Model):
    """One unit of background work. The database row is the truth; the broker only wakes workers."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        LEASED = "leased"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    queue = models.CharField(max_length=64, default="default")
    type = models.CharField(max_length=128)
    payload = models.JSONField(default=dict, blank=True)
    priority = models.SmallIntegerField(default=Priority.NORMAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    run_at = models.DateTimeField(default=timezone.now, help_text="Due time: not claimed before it.")
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=10)
    last_error = models.TextField(blank=True, default="")
    leased_until = models.DateTimeField(null=True, blank=True)
    leased_by = models.CharField(max_length=128, blank=True, default="")
    unique_key = models.CharField(
        max_length=255, null=True, blank=True, unique=True,
        help_text="Deduplication key: a second job with the same key is never enqueued.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The claim query walks only due, queued rows in priority order: its cost follows the
            # backlog, not the table (finished rows are outside the partial index).
            models.Index(
                fields=["queue", "-priority", "run_at"], name="job_claim_idx", condition=Q(status="queued")
            ),
            models.Index(fields=["leased_until"], name="job_lease_idx", condition=Q(status="leased")),
            models.Index(fields=["status", "type"], name="job_status_type_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type} [{self.status}]"


class PeriodicSchedule(models.Model):
    """A cron schedule. `next_run_at` is advanced by compare-and-set, so one tick fires once."""

    name = models.CharField(max_length=128, unique=True)
    cron = models.CharField(max_length=64)
    timezone = models.CharField(max_length=64, default="UTC")
    job_type = models.CharField(max_length=128)
    queue = models.CharField(max_length=64, blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.cron} {self.timezone})"


class WorkerHeartbeat(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        STOPPING = "stopping"
        STOPPED = "stopped"

    worker_id = models.CharField(max_length=128, unique=True)
    kind = models.CharField(max_length=16, default="worker")  # worker | scheduler
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(default=list)
    concurrency = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    last_beat_at = models.DateTimeField(default=timezone.now)
    current_job_id = models.BigIntegerField(null=True, blank=True)
    current_job_type = models.CharField(max_length=128, blank=True, default="")
    jobs_done = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return self.worker_id


class IdempotencyReceipt(models.Model):
    """Proof that an effect keyed by `key` was applied; handlers record it in the effect's transaction."""

    key = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(default=timezone.now)


class SampleTally(models.Model):
    """Counter moved by the `runtime.sample_tally` job that `tarifa jobs smoke` uses to prove a deployment."""

    name = models.CharField(max_length=64, unique=True)
    total = models.BigIntegerField(default=0)
