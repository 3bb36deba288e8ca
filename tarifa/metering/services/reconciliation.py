"""Proving summaries equal their records, rebuilding them when they do not, and re-rating a period."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from tarifa.core.money import DecimalSum
from tarifa.metering.models import (
    Allowance, AllowanceUsage, FoldBatch, PendingSummary, RateSnapshot, Summary, SummaryLine, UsageRecord,
)
from tarifa.metering.periods import checked_period
from tarifa.metering.selectors import allowances_by_plan, covering_allowance
from tarifa.metering.services.folding import (
    add_to_line, apply_records, emit_summary_events, save_billing, save_totals,
)
from tarifa.metering.services.ingestion import RATING_FIELDS, rerate_records
from tarifa.tenants.models import Customer, Tenant
from tarifa.wallets.services.grants import expire_grants
from tarifa.wallets.models import Wallet
from tarifa.wallets.services.ledger import queue_failed_usage_retry, refund_debits

ZERO = Decimal(0)
LINE_FIELDS = ("record_count", "quantity", "billable_quantity", "allowance_used", "charged_amount")


@dataclass(frozen=True)
class Difference:
    customer_id: int
    customer: str
    period: str
    kind: str
    field: str
    summary_value: Decimal
    records_value: Decimal


def _expected_lines(records) -> dict[tuple[int, str, str], dict]:
    rows = records.filter(status=UsageRecord.Status.BILLED).values("customer_id", "period", "rated_kind").annotate(
        record_count=Count("id"), quantity=DecimalSum("quantity"), billable_quantity=DecimalSum("billable_quantity"),
        allowance_used=DecimalSum("allowance_used"), charged_amount=DecimalSum("charged_amount"),
    )
    return {(r["customer_id"], r["period"], r["rated_kind"]): r for r in rows}


def find_differences(*, tenant: Tenant | None = None, customer: Customer | None = None,
                     period: str | None = None) -> list[Difference]:
    period = checked_period(period)
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
                differences.append(Difference(key[0], names.get(key[0], str(key[0])), key[1], key[2], field,
                                              Decimal(summary_value), Decimal(records_value)))
    paid = {(c, p): amount for c, p, amount in records.filter(status=UsageRecord.Status.BILLED, wallet_entry__isnull=False)
            .values_list("customer_id", "period").annotate(paid=DecimalSum("charged_amount")).order_by()}
    for summary in summaries.prefetch_related("lines").select_related("customer"):
        line_total = sum((l.charged_amount for l in summary.lines.all()), ZERO)
        line_count = sum(l.record_count for l in summary.lines.all())
        if summary.total_amount != line_total:
            differences.append(Difference(summary.customer_id, summary.customer.external_id, summary.period, "*",
                                          "total_amount",
                                          summary.total_amount, line_total))
        if summary.record_count != line_count:
            differences.append(Difference(summary.customer_id, summary.customer.external_id, summary.period, "*",
                                          "record_count",
                                          Decimal(summary.record_count), Decimal(line_count)))
        wallet_paid = paid.get((summary.customer_id, summary.period), ZERO)
        if summary.wallet_paid_amount != wallet_paid:
            differences.append(Difference(summary.customer_id, summary.customer.external_id, summary.period, "*",
                                          "wallet_paid_amount", summary.wallet_paid_amount, wallet_paid))
    return differences


def rebuild_summary(*, customer: Customer, period: str) -> Summary | None:
    """Recompute a summary, its lines and allowance usage from its billed records."""
    with transaction.atomic():
        # NO KEY UPDATE, like the fold: plain FOR UPDATE deadlocks with the ingestion's FK checks.
        summary = Summary.objects.select_for_update(no_key=True).filter(customer=customer, period=period).first()
        if summary is None:
            return None
        billed = list(UsageRecord.objects.filter(customer=customer, period=period, status=UsageRecord.Status.BILLED))
        units = dict(RateSnapshot.objects.filter(id__in={r.snapshot_id for r in billed}).values_list("id", "data__unit"))
        allowances = allowances_by_plan(plan_ids={r.plan_id for r in billed})
        summary.lines.all().delete()
        lines: dict[str, SummaryLine] = {}
        used: dict[Allowance, Decimal] = defaultdict(lambda: ZERO)
        for record in billed:
            line = lines.setdefault(record.rated_kind, SummaryLine(summary=summary, kind=record.rated_kind,
                                                                   unit=units[record.snapshot_id]))
            add_to_line(line, quantity=record.quantity, billable=record.billable_quantity,
                        covered=record.allowance_used, amount=record.charged_amount)
            allowance = covering_allowance(allowances.get(record.plan_id, []), record.rated_kind)
            if allowance is not None:
                used[allowance] += record.allowance_used
        SummaryLine.objects.bulk_create(lines.values())
        for usage in summary.allowance_usage.select_related("allowance"):
            usage.used = used.pop(usage.allowance, ZERO)
            usage.save(update_fields=["used"])
        AllowanceUsage.objects.bulk_create([
            AllowanceUsage(summary=summary, allowance=allowance, included=allowance.quantity, used=amount)
            for allowance, amount in used.items()
        ])
        summary.record_count = sum(l.record_count for l in lines.values())
        summary.total_amount = sum((l.charged_amount for l in lines.values()), ZERO)
        summary.wallet_paid_amount = sum((r.charged_amount for r in billed if r.wallet_entry_id is not None), ZERO)
        summary.save()
    return summary


def rerate_period(*, tenant: Tenant, period: str, customer: Customer | None = None) -> dict[str, int]:
    """Re-rate and re-fold a whole period from scratch, chronologically, after a tariff correction.

    Per customer, in one transaction holding the summary lock: the summary is emptied, every
    record of the period is rated again against the current plans and folded in occurred_at order.
    """
    checked_period(period)
    counts = {"customers": 0, "records": 0, "billed": 0, "unrated": 0}
    # Records whose customer was unknown may belong to one now.
    unknown = UsageRecord.objects.filter(tenant=tenant, period=period, customer__isnull=True,
                                         status=UsageRecord.Status.UNRATED)
    if customer is not None:
        unknown = unknown.filter(customer_ref=customer.external_id)
    with transaction.atomic():
        batch = list(unknown.select_for_update())
        rerate_records(tenant=tenant, records=batch)
        UsageRecord.objects.bulk_update(batch, RATING_FIELDS, batch_size=500)
    scope = UsageRecord.objects.filter(tenant=tenant, period=period, customer__isnull=False)
    if customer is not None:
        scope = scope.filter(customer=customer)
    for current in Customer.objects.filter(pk__in=scope.values("customer_id")).order_by("id"):
        result = _rerate_customer_period(tenant=tenant, customer=current, period=period)
        counts["customers"] += 1
        for key in ("records", "billed", "unrated"):
            counts[key] += result[key]
    return counts


def _how_paid(records: list[UsageRecord]) -> tuple[dict[int, Decimal], dict[int, bool]]:
    """What each usage_debit paid for these records, and by billed record whether a wallet paid it
    (read before re-rating forgets them). A re-rate corrects prices, not who pays: a customer who
    changed billing mode since had its postpaid month charged to the wallet (failing where the
    wallet fell short) and its prepaid month moved onto an invoice."""
    paid: dict[int, Decimal] = defaultdict(lambda: ZERO)
    wallet_pays: dict[int, bool] = {}
    for record in records:
        if record.status == UsageRecord.Status.BILLED:
            wallet_pays[record.id] = record.wallet_entry_id is not None
            if record.wallet_entry_id and record.charged_amount:
                paid[record.wallet_entry_id] += record.charged_amount
    return paid, wallet_pays


def _rerate_customer_period(*, tenant: Tenant, customer: Customer, period: str) -> dict[str, int]:
    """Summaries first, then records, as every fold and call locks them: a call folding into the
    summary between the two had been left out of the summary rebuilt from the records read."""
    with transaction.atomic():
        summaries = _lock_period_summaries(customer=customer, period=period)
        records = _period_records(customer=customer, period=period)
        debited, wallet_pays = _how_paid(records)  # before re-rating forgets it
        rerate_records(tenant=tenant, records=records)
        if {r.summary_id for r in records if r.summary_id} - summaries.keys():
            # A summary created since the lock (by this re-rate, or by a call for a customer who had
            # none): lock it too, then read and rate again what may have been folded into it.
            summaries = _lock_period_summaries(customer=customer, period=period)
            records = _period_records(customer=customer, period=period)
            debited, wallet_pays = _how_paid(records)
            rerate_records(tenant=tenant, records=records)
        for record in records:
            record.batch_id = record.allowance_used = record.charged_amount = record.billed_at = None
            record.wallet_entry_id, record.failure_code, record.amount_due = None, "", None
        for summary in summaries.values():
            summary.lines.all().delete()
            summary.allowance_usage.all().delete()
            summary.record_count, summary.total_amount, summary.wallet_paid_amount = 0, ZERO, ZERO
        rated = [r for r in records if r.status == UsageRecord.Status.RATED]
        batch = FoldBatch.objects.create(record_count=0, charged_amount=ZERO, folded_by="rerate",
                                         summary_count=len(summaries))
        given_back = refund_debits(charges=debited, key=f"rerate:{batch.id}", reason=f"re-rating of {period}")
        charged, _crossed = apply_records(summaries=summaries, records=rated, batch_id=batch.id,
                                          wallet_pays=wallet_pays, given_back=given_back, caused_by="rerate")
        # Granted credit given back to a grant that has expired meanwhile, and not taken again at
        # the corrected prices, expires now.
        expire_grants(wallet_ids=list(given_back), after=f"rerate:{batch.id}")
        for wallet in Wallet.objects.filter(id__in=list(given_back)):  # lower prices may pay what had failed
            queue_failed_usage_retry(wallet=wallet, cause=f"rerate:{batch.id}:{wallet.id}")
        # apply_records writes the summaries it charged records to; one left with none (all its
        # records unrated now) had kept its old total.
        now, charged_into = timezone.now(), {r.summary_id for r in rated}
        emptied = [s for s in summaries.values() if s.id not in charged_into]
        for summary in emptied:
            summary.updated_at = now
        save_totals(emptied)
        billed = [r for r in rated if r.status == UsageRecord.Status.BILLED]
        FoldBatch.objects.filter(pk=batch.id).update(record_count=len(billed), charged_amount=charged)
        UsageRecord.objects.bulk_update(records, RATING_FIELDS, batch_size=500)
        save_billing(records)
        _drop_drained_markers(list(summaries))
        emit_summary_events(summaries=list(summaries.values()), crossed=set(summaries), force=True, rerated=True)
    return {"records": len(records), "billed": len(billed),
            "unrated": sum(1 for r in records if r.status == UsageRecord.Status.UNRATED)}


def _lock_period_summaries(*, customer: Customer, period: str) -> dict[int, Summary]:
    return {s.id: s for s in Summary.objects.select_for_update(no_key=True, of=("self",))
            .filter(customer=customer, period=period).select_related("customer").order_by("id")}


def _period_records(*, customer: Customer, period: str) -> list[UsageRecord]:
    return list(UsageRecord.objects.select_for_update().filter(customer=customer, period=period)
                .exclude(status=UsageRecord.Status.REVERSED).order_by("occurred_at", "id"))


def _drop_drained_markers(summary_ids: list[int]) -> None:
    """Drop the fold markers of re-rated summaries that have nothing left waiting. A call that found
    a summary locked left its records to the workers, marked: that marker stays. So does one a
    worker holds (SKIP LOCKED), which waits for our summary lock while we would wait for it."""
    waiting = UsageRecord.objects.filter(summary_id__in=summary_ids, status=UsageRecord.Status.RATED)
    drained = list(PendingSummary.objects.select_for_update(skip_locked=True).filter(summary_id__in=summary_ids)
                   .exclude(summary_id__in=waiting.values("summary_id")).values_list("summary_id", flat=True))
    PendingSummary.objects.filter(summary_id__in=drained).delete()
