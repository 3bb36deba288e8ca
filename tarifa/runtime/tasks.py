"""Background entry points of the runtime itself."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F

from tarifa.runtime import services
from tarifa.runtime.models import Priority, SampleTally
from tarifa.runtime.registry import job, periodic


@job("runtime.noop", priority=Priority.NORMAL)
def noop(ctx, **_payload) -> None:
    """Does nothing; used by the runtime benchmark."""


@job("runtime.sample_tally", max_attempts=5)
def sample_tally(ctx, *, counter: str, amount: int = 1) -> None:
    """Add `amount` to a tally exactly once per job, however often the job is delivered."""
    with transaction.atomic():
        if not services.apply_once(ctx.idempotency_key):
            return
        SampleTally.objects.get_or_create(name=counter)
        SampleTally.objects.filter(name=counter).update(total=F("total") + amount)


@job("runtime.purge_finished_jobs", priority=Priority.LOW)
def purge_finished_jobs(ctx, scheduled_for: str | None = None) -> None:
    services.purge_finished_jobs(older_than=timedelta(days=settings.TARIFA_JOB_RETENTION_DAYS))


periodic("runtime.purge_finished_jobs", cron="17 3 * * *", job_type="runtime.purge_finished_jobs")
