"""Charging usage now, on demand (API, CLI, external cron), instead of waiting for the workers.

Processing is the fold itself (and so the prepaid debit), limited to a scope; records that had
failed for lack of credit are tried again. Records a worker is folding at that moment are left
to it (SKIP LOCKED) and counted by it, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from tarifa.metering.models import PendingSummary, UsageRecord
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.ingestion import mark_pending
from tarifa.runtime.services import enqueue
from tarifa.tenants.models import Customer, Tenant

SUMMARIES_PER_PASS = 10  # below the fold's claim size, so each pass claims its whole chunk


@dataclass(frozen=True)
class ProcessResult:
    charged: int = 0
    failed: int = 0
    amount: Decimal = Decimal(0)

    @property
    def processed(self) -> int:
        return self.charged + self.failed

    def __add__(self, other: ProcessResult) -> ProcessResult:
        return ProcessResult(self.charged + other.charged, self.failed + other.failed, self.amount + other.amount)

    def as_dict(self) -> dict:
        return {"processed": self.processed, "charged": self.charged, "failed": self.failed,
                "amount_charged": str(self.amount)}


def retry_failed_usage(*, tenant: Tenant | None = None, customer_id: int | None = None,
                       record_ids: list[int] | None = None, queue_fold: bool = True) -> int:
    """Put failed prepaid records back in line for the fold (after a top-up, or on request);
    `queue_fold=False` when the caller folds them itself."""
    failed = UsageRecord.objects.filter(status=UsageRecord.Status.FAILED)
    if tenant is not None:
        failed = failed.filter(tenant=tenant)
    if customer_id is not None:
        failed = failed.filter(customer_id=customer_id)
    if record_ids is not None:
        failed = failed.filter(id__in=record_ids)
    with transaction.atomic():
        summary_ids = set(failed.values_list("summary_id", flat=True).distinct())
        count = failed.update(status=UsageRecord.Status.RATED, failure_code="")
        mark_pending(summary_ids)
        if count and queue_fold:
            enqueue("metering.fold")
    return count


def process_usage(*, tenant: Tenant, customer: Customer | None = None,
                  usage_ids: list[str] | None = None) -> ProcessResult:
    """Fold (and for prepaid customers debit) the scope's waiting and failed records now."""
    scope = UsageRecord.objects.filter(tenant=tenant)
    if customer is not None:
        scope = scope.filter(customer=customer)
    record_ids = None
    if usage_ids is not None:
        record_ids = list(scope.filter(external_id__in=usage_ids).values_list("id", flat=True))
        scope = scope.filter(id__in=record_ids)
    retry_failed_usage(tenant=tenant, customer_id=customer.id if customer else None, record_ids=record_ids,
                       queue_fold=False)
    if usage_ids is None and customer is None:
        summary_ids = sorted(PendingSummary.objects.filter(summary__tenant=tenant).values_list("summary_id", flat=True))
    else:
        summary_ids = sorted(set(scope.filter(status=UsageRecord.Status.RATED)
                                 .values_list("summary_id", flat=True).distinct()))
    total = ProcessResult()
    for start in range(0, len(summary_ids), SUMMARIES_PER_PASS):
        result = fold_all_pending(batch_size=settings.TARIFA_FOLD_BATCH_SIZE, folded_by="process",
                                  summary_ids=summary_ids[start:start + SUMMARIES_PER_PASS], record_ids=record_ids)
        total += ProcessResult(charged=result.records, failed=result.failed, amount=result.charged)
    return total


def queue_processing(*, tenant: Tenant, customer: Customer | None = None, usage_ids: list[str] | None = None) -> int:
    """The same, as a background job; returns its id."""
    job = enqueue("billing.process", payload={"tenant_id": tenant.id, "customer_id": customer.id if customer else None,
                                              "usage_ids": usage_ids})
    return job.id


def process_all_tenants() -> "ProcessedTenants":
    """Process every tenant's waiting usage (the external-cron entry point); counts are summed."""
    tenant_ids = set(PendingSummary.objects.values_list("summary__tenant_id", flat=True).distinct())
    tenant_ids |= set(UsageRecord.objects.filter(status=UsageRecord.Status.FAILED)
                      .values_list("tenant_id", flat=True).distinct())
    total = ProcessResult()
    for tenant in Tenant.objects.filter(id__in=tenant_ids).order_by("id"):
        total += process_usage(tenant=tenant)
    return ProcessedTenants(len(tenant_ids), total)


@dataclass(frozen=True)
class ProcessedTenants:
    tenants: int
    result: ProcessResult

    def as_dict(self) -> dict:
        return {"tenants": self.tenants, **self.result.as_dict()}
