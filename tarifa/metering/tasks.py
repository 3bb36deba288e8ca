"""Background entry points of metering: fold waiting usage; sweep up what no full batch triggered."""

from __future__ import annotations

from django.conf import settings

from tarifa.metering.services.folding import emit_stale_summary_events, fold_next_batch
from tarifa.metering.services.ingestion import mark_waiting_summaries, queue_folds
from tarifa.metering.services.processing import process_usage
from tarifa.runtime.registry import job, periodic
from tarifa.runtime.services import enqueue
from tarifa.tenants.models import Customer, Tenant

BATCHES_PER_JOB = 20


@job("metering.fold", queue="default", max_attempts=20, backoff_base=1.0, backoff_cap=300.0,
     one_at_a_time=True)
def fold(ctx, **_payload) -> None:
    """Fold batches of waiting usage (any summaries no other worker holds) until none is left."""
    for _ in range(BATCHES_PER_JOB):
        if not fold_next_batch(batch_size=settings.TARIFA_FOLD_BATCH_SIZE, folded_by=ctx.worker_id).batches:
            return
    # More may be waiting: hand over to a fresh job so other job types get turns. One job even
    # when less than a batch waits (queue_folds counts full batches only): the other workers'
    # jobs may have ended on finding this one's summaries locked, and the rest would then wait
    # for the sweep.
    if not queue_folds():
        enqueue("metering.fold")


@job("metering.sweep", queue="default", max_attempts=3)
def sweep(ctx, scheduled_for: str | None = None) -> None:
    """The periodic flush: fold whatever waits, however few records; emit debounced summary events."""
    if mark_waiting_summaries():
        enqueue("metering.fold", unique_key=f"fold:sweep:{scheduled_for or ctx.job_id}")
    emit_stale_summary_events()


periodic("metering.sweep", cron=settings.TARIFA_FOLD_SWEEP_CRON, job_type="metering.sweep")


@job("billing.process", queue="default", max_attempts=5, one_at_a_time=True)
def process(ctx, *, tenant_id: int, customer_id: int | None = None, usage_ids: list[str] | None = None) -> None:
    """`POST /api/v1/billing/process` with "async": true."""
    tenant = Tenant.objects.get(pk=tenant_id)
    customer = Customer.objects.get(pk=customer_id) if customer_id else None
    process_usage(tenant=tenant, customer=customer, usage_ids=usage_ids)
