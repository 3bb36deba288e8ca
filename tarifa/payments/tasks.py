"""Background entry points of payments: run due checks, resolve webhook notifications, close the month."""

from __future__ import annotations

from django.conf import settings

from tarifa.payments.services.checking import resolve_notification as resolve_notification_service
from tarifa.payments.services.checking import run_checks_pipelined
from tarifa.payments.services.invoices import close_month
from tarifa.runtime.registry import job, periodic
from tarifa.runtime.services import enqueue

BATCHES_PER_JOB = 50


@job("payments.check_due", queue="default", max_attempts=5)
def check_due(ctx, scheduled_for: str | None = None, **_payload) -> None:
    """Check due invoices batch after batch; if all of them were full, hand over to a fresh job."""
    run = run_checks_pipelined(worker_id=ctx.worker_id, max_batches=BATCHES_PER_JOB)
    if run.checked >= BATCHES_PER_JOB * settings.TARIFA_PAYMENT_CHECK_BATCH:
        enqueue("payments.check_due")


@job("payments.resolve_notification", queue="default", max_attempts=12, backoff_base=5.0, backoff_cap=1800.0)
def resolve_notification(ctx, *, notification_id: int) -> None:
    resolve_notification_service(notification_id=notification_id)


@job("payments.monthly_close", queue="default", max_attempts=5)
def monthly_close(ctx, scheduled_for: str | None = None) -> None:
    close_month()


periodic("payments.check_due", cron=settings.TARIFA_PAYMENT_CHECK_CRON, job_type="payments.check_due")
periodic("payments.monthly_close", cron=settings.TARIFA_GRANT_CRON, job_type="payments.monthly_close")
