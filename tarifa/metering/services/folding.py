"""Folding rated usage into monthly summaries, one batch per transaction.

A batch takes the oldest waiting records of one customer and period (chronological processing
order), applies the allowances and graduated tiers in that order, updates the summary, its
lines and allowance usage, and marks each record billed with the batch id — all in one
transaction holding the summary's row lock. Two folds of the same summary therefore run one
after the other, and a crash leaves either the whole batch applied or none of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from tarifa.events.services import emit_event
from tarifa.metering.models import Allowance, AllowanceUsage, FoldBatch, Summary, SummaryLine, UsageRecord
from tarifa.metering.pricing import terms_of
from tarifa.metering.rating import charge
from tarifa.tenants.models import Customer

ZERO = Decimal(0)
BILLING_FIELDS = ["status", "batch_id", "allowance_used", "charged_amount", "billed_at", "unrated_reason"]


@dataclass(frozen=True)
class FoldResult:
    records: int
    charged: Decimal
    batch_id: int | None = None


def lock_summary(*, customer: Customer, period: str, currency: str) -> Summary:
    """The summary row of (customer, period), created if needed, locked until the transaction ends."""
    try:
        with transaction.atomic():
            Summary.objects.get_or_create(
                customer=customer, period=period, defaults={"tenant_id": customer.tenant_id, "currency": currency}
            )
    except IntegrityError:  # created concurrently by another fold
        pass
    return Summary.objects.select_for_update().get(customer=customer, period=period)


def fold_batch(*, customer_id: int, period: str, batch_size: int, folded_by: str = "") -> FoldResult:
    """Fold the next batch of waiting records of one customer and period."""
    with transaction.atomic():
        first = (UsageRecord.objects.filter(customer_id=customer_id, period=period, status=UsageRecord.Status.RATED)
                 .order_by("occurred_at", "id").only("rate_snapshot").first())
        if first is None:
            return FoldResult(0, ZERO)
        customer = Customer.objects.get(pk=customer_id)
        summary = lock_summary(customer=customer, period=period, currency=first.rate_snapshot["currency"])
        records = list(
            UsageRecord.objects.filter(customer_id=customer_id, period=period, status=UsageRecord.Status.RATED)
            .order_by("occurred_at", "id")[:batch_size]
        )
        if not records:  # another fold took them while we waited for the lock
            return FoldResult(0, ZERO)
        charged = apply_records(summary=summary, records=records)
        batch = FoldBatch.objects.create(
            tenant_id=summary.tenant_id, customer_id=customer_id, period=period,
            record_count=sum(1 for r in records if r.status == UsageRecord.Status.BILLED),
            charged_amount=charged, folded_by=folded_by,
        )
        for record in records:
            if record.status == UsageRecord.Status.BILLED:
                record.batch_id = batch.id
        UsageRecord.objects.bulk_update(records, BILLING_FIELDS, batch_size=1000)
        emit_event(tenant=customer.tenant, type="summary.updated", payload={
            "customer": customer.external_id, "period": period, "summary_id": summary.id,
            "total_amount": str(summary.total_amount), "currency": summary.currency,
            "records_folded": batch.record_count, "batch_id": batch.id,
        })
    return FoldResult(batch.record_count, charged, batch.id)


def apply_records(*, summary: Summary, records: list[UsageRecord]) -> Decimal:
    """Charge `records` in order against the locked summary: allowances first, then tiers.

    Mutates the records (billing fields) and writes the summary, its lines and allowance usage;
    the caller saves the records.
    """
    lines = {line.kind: line for line in summary.lines.all()}
    usage = {u.allowance_id: u for u in summary.allowance_usage.all()}
    allowances_by_plan: dict[int, list[Allowance]] = {}
    now = timezone.now()
    charged_total = ZERO
    for record in records:
        snapshot = record.rate_snapshot
        if snapshot.get("currency") != summary.currency:
            record.status, record.unrated_reason = UsageRecord.Status.UNRATED, "currency_mismatch"
            continue
        kind = record.rated_kind
        if record.plan_id not in allowances_by_plan:
            allowances_by_plan[record.plan_id] = list(Allowance.objects.filter(plan_id=record.plan_id).order_by("code"))
        allowance = next((a for a in allowances_by_plan[record.plan_id] if a.covers(kind)), None)
        billable = record.billable_quantity
        covered = ZERO
        if allowance is not None:
            used = usage.get(allowance.id)
            if used is None:
                used = usage[allowance.id] = AllowanceUsage(summary=summary, allowance=allowance,
                                                            included=allowance.quantity, used=ZERO)
            covered = max(ZERO, min(billable, used.included - used.used))
            used.used += covered
        line = lines.get(kind)
        if line is None:
            line = lines[kind] = SummaryLine(summary=summary, kind=kind, unit=snapshot["unit"])
        chargeable = billable - covered
        amount = charge(chargeable, already=line.chargeable_quantity, terms=terms_of(snapshot))
        line.record_count += 1
        line.quantity += record.quantity
        line.billable_quantity += billable
        line.allowance_used += covered
        line.chargeable_quantity += chargeable
        line.charged_amount += amount
        summary.record_count += 1
        summary.total_amount += amount
        charged_total += amount
        record.status, record.allowance_used, record.charged_amount, record.billed_at = (
            UsageRecord.Status.BILLED, covered, amount, now)
    for line in lines.values():
        line.save()
    for used in usage.values():
        used.save()
    summary.save()
    return charged_total


def fold_pending(*, customer_id: int, period: str, batch_size: int, max_batches: int | None = None,
                 folded_by: str = "") -> FoldResult:
    """Fold batch after batch until nothing waits (or `max_batches` were folded)."""
    records, charged, batches = 0, ZERO, 0
    while max_batches is None or batches < max_batches:
        result = fold_batch(customer_id=customer_id, period=period, batch_size=batch_size, folded_by=folded_by)
        if not result.records and result.batch_id is None:
            break
        records, charged, batches = records + result.records, charged + result.charged, batches + 1
    return FoldResult(records, charged)

