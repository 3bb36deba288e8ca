"""Proving summaries equal their records, rebuilding them when they do not, and re-rating a period."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, Sum

from tarifa.events.services import emit_event
from tarifa.metering.models import Allowance, AllowanceUsage, FoldBatch, Summary, SummaryLine, UsageRecord
from tarifa.metering.pricing import Rater
from tarifa.metering.services.folding import BILLING_FIELDS, apply_records, lock_summary
from tarifa.metering.services.ingestion import RATING_FIELDS, apply_rating
from tarifa.tenants.models import Customer, Tenant

ZERO = Decimal(0)
LINE_FIELDS = ("record_count", "quantity", "billable_quantity", "allowance_used", "charged_amount")


@dataclass(frozen=True)
class Difference:
    customer: str
    period: str
    kind: str
    field: str
    summary_value: Decimal
    records_value: Decimal


def _expected_lines(records) -> dict[tuple[int, str, str], dict]:
    rows = records.filter(status=UsageRecord.Status.BILLED).values("customer_id", "period", "rated_kind").annotate(
        record_count=Count("id"), quantity=Sum("quantity"), billable_quantity=Sum("billable_quantity"),
        allowance_used=Sum("allowance_used"), charged_amount=Sum("charged_amount"),
    )
    return {(r["customer_id"], r["period"], r["rated_kind"]): r for r in rows}


def find_differences(*, tenant: Tenant | None = None, customer: Customer | None = None,
                     period: str | None = None) -> list[Difference]:
    records, lines, summaries = UsageRecord.objects.all(), SummaryLine.objects.all(), Summary.objects.all()
    if tenant:
        records, lines, summaries = (records.filter(tenant=tenant), lines.filter(summary__tenant=tenant),
                                     summaries.filter(tenant=tenant))
    if customer:
        records, lines, summaries = (records.filter(customer=customer), lines.filter(summary__customer=customer),
                                     summaries.filter(customer=customer))
    if period:
        records, lines, summaries = (records.filter(period=period), lines.filter(summary__period=period),
                                     summaries.filter(period=period))
    expected = _expected_lines(records)
    actual = {(l.summary.customer_id, l.summary.period, l.kind): l for l in lines.select_related("summary")}
    names = dict(Customer.objects.filter(
        id__in={k[0] for k in expected} | {k[0] for k in actual}).values_list("id", "external_id"))
    differences = []
    for key in sorted(set(expected) | set(actual)):
        want, have = expected.get(key, {}), actual.get(key)
        for field in LINE_FIELDS:
            records_value = want.get(field) or ZERO
            summary_value = getattr(have, field) if have else ZERO
            if records_value != summary_value:
                differences.append(Difference(names.get(key[0], str(key[0])), key[1], key[2], field,
                                              Decimal(summary_value), Decimal(records_value)))
    for summary in summaries.prefetch_related("lines").select_related("customer"):
        line_total = sum((l.charged_amount for l in summary.lines.all()), ZERO)
        line_count = sum(l.record_count for l in summary.lines.all())
        if summary.total_amount != line_total:
            differences.append(Difference(summary.customer.external_id, summary.period, "*", "total_amount",
                                          summary.total_amount, line_total))
        if summary.record_count != line_count:
            differences.append(Difference(summary.customer.external_id, summary.period, "*", "record_count",
                                          Decimal(summary.record_count), Decimal(line_count)))
    return differences


def rebuild_summary(*, customer: Customer, period: str) -> Summary | None:
    """Recompute a summary, its lines and allowance usage from its billed records."""
    with transaction.atomic():
        billed = list(UsageRecord.objects.filter(customer=customer, period=period, status=UsageRecord.Status.BILLED))
        if not billed and not Summary.objects.filter(customer=customer, period=period).exists():
            return None
        summary = lock_summary(customer=customer, period=period,
                               currency=billed[0].rate_snapshot["currency"] if billed else "BRL")
        summary.lines.all().delete()
        lines: dict[str, SummaryLine] = {}
        used: dict[int, Decimal] = defaultdict(lambda: ZERO)
        allowances = {}
        for record in billed:
            line = lines.setdefault(record.rated_kind, SummaryLine(summary=summary, kind=record.rated_kind,
                                                                   unit=record.rate_snapshot["unit"]))
            line.record_count += 1
            line.quantity += record.quantity
            line.billable_quantity += record.billable_quantity
            line.allowance_used += record.allowance_used
            line.chargeable_quantity += record.billable_quantity - record.allowance_used
            line.charged_amount += record.charged_amount
            if record.plan_id not in allowances:
                allowances[record.plan_id] = list(Allowance.objects.filter(plan_id=record.plan_id).order_by("code"))
            allowance = next((a for a in allowances[record.plan_id] if a.covers(record.rated_kind)), None)
            if allowance is not None:
                used[allowance.id] += record.allowance_used
        SummaryLine.objects.bulk_create(lines.values())
        for usage in summary.allowance_usage.all():
            usage.used = used.pop(usage.allowance_id, ZERO)
            usage.save(update_fields=["used"])
        for allowance_id, amount in used.items():
            allowance = Allowance.objects.get(pk=allowance_id)
            AllowanceUsage.objects.create(summary=summary, allowance=allowance, included=allowance.quantity, used=amount)
        summary.record_count = sum(l.record_count for l in lines.values())
        summary.total_amount = sum((l.charged_amount for l in lines.values()), ZERO)
        summary.save()
    return summary


def rerate_period(*, tenant: Tenant, period: str, customer: Customer | None = None) -> dict[str, int]:
    """Re-rate and re-fold a whole period from scratch, chronologically, after a tariff correction.

    Per customer, in one transaction: the summary is emptied, every record of the period is rated
    again against the current plans and folded again in occurred_at order.
    """
    counts = {"customers": 0, "records": 0, "billed": 0, "unrated": 0}
    # Records whose customer was unknown may now belong to one.
    unknown = UsageRecord.objects.filter(tenant=tenant, period=period, customer__isnull=True,
                                         status=UsageRecord.Status.UNRATED)
    if customer is not None:
        unknown = unknown.filter(customer_ref=customer.external_id)
    with transaction.atomic():
        rater = Rater(tenant)
        batch = list(unknown.select_for_update())
        rater.preload_customers({r.customer_ref for r in batch})
        for record in batch:
            apply_rating(record, rater.rate(customer_ref=record.customer_ref, kind=record.kind,
                                            quantity=record.quantity, occurred_at=record.occurred_at,
                                            destination=record.destination))
        UsageRecord.objects.bulk_update(batch, RATING_FIELDS, batch_size=500)
    customers = Customer.objects.filter(tenant=tenant)
    if customer is not None:
        customers = customers.filter(pk=customer.pk)
    customer_ids = set(UsageRecord.objects.filter(tenant=tenant, period=period, customer__in=customers)
                       .values_list("customer_id", flat=True).distinct())
    for current in Customer.objects.filter(pk__in=customer_ids).order_by("id"):
        result = _rerate_customer_period(tenant=tenant, customer=current, period=period)
        counts["customers"] += 1
        for key in ("records", "billed", "unrated"):
            counts[key] += result[key]
    return counts


def _rerate_customer_period(*, tenant: Tenant, customer: Customer, period: str) -> dict[str, int]:
    with transaction.atomic():
        records = list(
            UsageRecord.objects.select_for_update().filter(customer=customer, period=period).exclude(
                status=UsageRecord.Status.REVERSED).order_by("occurred_at", "id")
        )
        rater = Rater(tenant)
        for record in records:
            apply_rating(record, rater.rate(customer_ref=record.customer_ref, kind=record.kind,
                                            quantity=record.quantity, occurred_at=record.occurred_at,
                                            destination=record.destination))
            record.batch_id = record.allowance_used = record.charged_amount = record.billed_at = None
        rated = [r for r in records if r.status == UsageRecord.Status.RATED]
        currency = rated[0].rate_snapshot["currency"] if rated else "BRL"
        summary = lock_summary(customer=customer, period=period, currency=currency)
        summary.lines.all().delete()
        summary.allowance_usage.all().delete()
        summary.record_count, summary.total_amount, summary.currency = 0, ZERO, currency
        charged = apply_records(summary=summary, records=rated)
        billed = [r for r in rated if r.status == UsageRecord.Status.BILLED]
        batch = FoldBatch.objects.create(tenant=tenant, customer=customer, period=period, record_count=len(billed),
                                         charged_amount=charged, folded_by="rerate")
        for record in billed:
            record.batch_id = batch.id
        UsageRecord.objects.bulk_update(records, list(dict.fromkeys(RATING_FIELDS + BILLING_FIELDS)), batch_size=500)
        emit_event(tenant=tenant, type="summary.updated", payload={
            "customer": customer.external_id, "period": period, "summary_id": summary.id,
            "total_amount": str(summary.total_amount), "currency": summary.currency, "rerated": True,
        })
    return {"records": len(records), "billed": len(billed),
            "unrated": sum(1 for r in records if r.status == UsageRecord.Status.UNRATED)}
