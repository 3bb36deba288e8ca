"""Background entry points of metering: fold one summary's waiting usage; sweep all of them."""

from __future__ import annotations

from django.conf import settings

from tarifa.metering.selectors import pending_groups
from tarifa.metering.services.folding import fold_pending
from tarifa.runtime.registry import job, periodic
from tarifa.runtime.services import enqueue

BATCHES_PER_JOB = 10


@job("metering.fold", queue="default", max_attempts=20, backoff_base=1.0, backoff_cap=300.0)
def fold(ctx, *, customer_id: int, period: str) -> None:
    """Fold up to BATCHES_PER_JOB batches, then hand the rest to a new job so other customers get turns."""
    batch_size = settings.TARIFA_FOLD_BATCH_SIZE
    fold_pending(customer_id=customer_id, period=period, batch_size=batch_size, max_batches=BATCHES_PER_JOB,
                 folded_by=ctx.worker_id)
    if pending_groups(customer_id=customer_id, period=period):
        enqueue("metering.fold", payload={"customer_id": customer_id, "period": period},
                unique_key=f"fold:{customer_id}:{period}:after:{ctx.job_id}")


@job("metering.sweep", queue="default", max_attempts=3)
def sweep(ctx, scheduled_for: str | None = None) -> None:
    """Queue a fold for every summary with usage waiting, however few records (the periodic flush)."""
    for customer_id, period, _waiting in pending_groups():
        enqueue("metering.fold", payload={"customer_id": customer_id, "period": period},
                unique_key=f"fold:{customer_id}:{period}:sweep:{scheduled_for or ctx.job_id}")


periodic("metering.sweep", cron=settings.TARIFA_FOLD_SWEEP_CRON, job_type="metering.sweep")
