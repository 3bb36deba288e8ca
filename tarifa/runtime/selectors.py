from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from tarifa.runtime.models import Job, WorkerHeartbeat


def job_stats() -> list[dict]:
    """Counts per (type, queue) and status: queued (and how many of those are due now), leased, failed."""
    now = timezone.now()
    rows: dict[tuple[str, str], dict] = {}
    counts = (
        Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.LEASED, Job.Status.FAILED])
        .values("type", "queue", "status").annotate(n=Count("id"), oldest=Min("run_at"))
    )
    for row in counts:
        entry = rows.setdefault(
            (row["type"], row["queue"]),
            {"type": row["type"], "queue": row["queue"], "queued": 0, "due": 0, "leased": 0, "failed": 0},
        )
        entry[row["status"]] = row["n"]
    due = (
        Job.objects.filter(status=Job.Status.QUEUED, run_at__lte=now)
        .values("type", "queue").annotate(n=Count("id"))
    )
    for row in due:
        rows[(row["type"], row["queue"])]["due"] = row["n"]
    return sorted(rows.values(), key=lambda r: (r["queue"], r["type"]))


def failed_jobs(*, job_type: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.filter(status=Job.Status.FAILED).order_by("-finished_at")
    return jobs.filter(type=job_type) if job_type else jobs


def live_workers(*, kind: str = "worker") -> QuerySet[WorkerHeartbeat]:
    cutoff = timezone.now() - timedelta(seconds=settings.TARIFA_WORKER_STALE_SECONDS)
    return WorkerHeartbeat.objects.filter(kind=kind, status=WorkerHeartbeat.Status.RUNNING, last_beat_at__gte=cutoff)


def queued_jobs(*, job_type: str) -> int:
    return Job.objects.filter(type=job_type, status=Job.Status.QUEUED).count()
