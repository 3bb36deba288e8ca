"""Folding rated usage into monthly summaries, one batch per transaction.

A fold claims summaries that have usage waiting (their PendingSummary rows, FOR UPDATE SKIP
LOCKED on PostgreSQL), takes up to `batch_size` of their waiting records — per summary in time
order, the processing order in which allowances and graduated tiers are consumed — and in the
same transaction updates the summaries, their lines and allowance usage, and marks each record
billed with the batch id. A summary is folded by one worker at a time, so the result does not
depend on how many workers run; a crash leaves either the whole batch applied or none of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from tarifa.core.errors import NUMERIC_OUT_OF_RANGE, Conflict, sqlstate
from tarifa.core.money import MONEY_LIMIT, QUANTITY_LIMIT
from tarifa.core.pgarrays import array_literal
from tarifa.events.services import emit_events
from tarifa.metering.models import (
    Allowance, AllowanceUsage, FoldBatch, PendingSummary, RateSnapshot, Summary, SummaryLine, UsageRecord,
)
from tarifa.metering.pricing import terms_of
from tarifa.metering.rating import charge
from tarifa.metering.selectors import (
    allowances_by_plan, covering_allowance, summaries_maybe_due_events, waiting_usage,
)
from tarifa.metering.services.bulk import waiting_record_ids
from tarifa.metering.services.set_folding import NOTHING_WAITING, claim_size, fold_claimed_in_sql
from tarifa.ops.metrics import USAGE_FOLDED, count_on_commit
from tarifa.tenants.models import Customer
from tarifa.wallets.services.charging import PrepaidFunds

logger = structlog.get_logger(__name__)
ZERO = Decimal(0)
LINE_FIELDS = ["record_count", "quantity", "billable_quantity", "allowance_used", "chargeable_quantity",
               "charged_amount", "unit"]


class FoldRecord:
    """The columns of a usage record a fold reads and writes: building Django model instances for
    a thousand rows cost a fifth of a fold. `apply_records` and `save_billing` take these or
    UsageRecord instances alike (re-rating passes model instances)."""

    __slots__ = ("id", "summary_id", "plan_id", "snapshot_id", "rated_kind", "quantity", "billable_quantity",
                 "status", "batch_id", "allowance_used", "charged_amount", "billed_at", "unrated_reason",
                 "wallet_entry_id", "failure_code", "amount_due")

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)


@dataclass(frozen=True)
class FoldResult:
    records: int  # billed
    charged: Decimal
    batches: int = 0
    failed: int = 0  # prepaid records the wallet could not pay


class SummaryOutOfRange(Conflict):
    """Folding would take a summary's totals beyond its columns (PostgreSQL fails the statement,
    SQLite would round). Only absurd usage gets there: a record is bounded (rating's
    MAX_RECORD_CHARGE, ingestion's MAX_QUANTITY), a month of such records is not."""

    def __init__(self, summary_ids):
        self.summary_ids = sorted(summary_ids)
        super().__init__("summary_out_of_range", f"Summaries {self.summary_ids} cannot hold the usage folded into "
                         f"them: a total would reach {MONEY_LIMIT:,.0f} or a quantity {QUANTITY_LIMIT:,.0f}.")


def overflowed(error: Exception) -> bool:
    """A fold's numeric overflow: ours (SummaryOutOfRange) or PostgreSQL's (SQLSTATE 22003, from
    psycopg directly where the set-based SQL uses its cursor, or wrapped in Django's DataError)."""
    if isinstance(error, SummaryOutOfRange):
        return True
    return sqlstate(error) == NUMERIC_OUT_OF_RANGE


def fold_next_batch(*, batch_size: int, folded_by: str = "", summary_ids: list[int] | None = None,
                    record_ids: list[int] | None = None) -> FoldResult:
    """Fold one batch of waiting usage; returns what it folded (0 batches: nothing was waiting).

    `record_ids` folds only those records (of the claimed summaries) and leaves the summaries'
    markers for the other records waiting.

    A summary that cannot hold its records (SummaryOutOfRange) must not hold up the others
    claimed with it, which it did, batch after batch: the batch is then folded one summary at a
    time, and the records of a summary that overflows alone are set aside (`_set_aside`).
    """
    with transaction.atomic():
        claims = PendingSummary.objects.select_for_update(skip_locked=True).order_by("summary_id")
        if summary_ids is not None:
            claims = claims.filter(summary_id__any=summary_ids)
        claimed = list(claims.values_list("summary_id", flat=True)[:claim_size(batch_size)])
        if not claimed:
            return FoldResult(0, ZERO)
        fold = dict(batch_size=batch_size, folded_by=folded_by, record_ids=record_ids)
        try:
            with transaction.atomic():
                return _fold_claimed(claimed, **fold)
        except Exception as error:
            if not overflowed(error):
                raise
        results = []
        for summary_id in claimed:
            try:
                with transaction.atomic():
                    results.append(_fold_claimed([summary_id], **fold))
            except Exception as error:
                if not overflowed(error):
                    raise
                _set_aside(summary_id, record_ids=record_ids)
        return FoldResult(sum(r.records for r in results), sum((r.charged for r in results), ZERO), 1,
                          sum(r.failed for r in results))


def _set_aside(summary_id: int, *, record_ids: list[int] | None) -> None:
    """Mark the waiting records of a summary that cannot hold them unrated, summary_out_of_range:
    listed with the other unrated records (and counted in /metrics) for an operator to correct,
    instead of failing every fold that claims the summary."""
    waiting = waiting_usage(summary_id)
    if record_ids is not None:
        waiting = waiting.filter(id__any=record_ids)
    count = waiting.update(status=UsageRecord.Status.UNRATED,
                           unrated_reason=UsageRecord.UnratedReason.SUMMARY_OUT_OF_RANGE)
    if not waiting_usage(summary_id).exists():
        PendingSummary.objects.filter(summary_id=summary_id).delete()
    logger.warning("summary_out_of_range", summary_id=summary_id, records_set_aside=count)


def _fold_claimed(claimed: list[int], *, batch_size: int, folded_by: str, record_ids: list[int] | None) -> FoldResult:
    """fold_next_batch's work on the summaries it claimed (their markers locked)."""
    if record_ids is None and connection.vendor == "postgresql" and settings.TARIFA_FOLD_IN_SQL:
        done = fold_claimed_in_sql(claimed=claimed, batch_size=batch_size, folded_by=folded_by)
        if done is NOTHING_WAITING:
            return _drop_stale_markers(claimed)
        if done is not None:  # it read only the summaries it needed: the others keep their markers
            _close_batch(claimed=done.read, touched=done.summary_ids,
                         taken=done.records, batch_size=batch_size, crossed=crossed_thresholds(done.moves),
                         batch_id=done.batch_id)
            count_on_commit(USAGE_FOLDED, done.records)
            return FoldResult(done.records, done.charged, 1, 0)
    summaries = lock_summaries(claimed)
    if record_ids is None and connection.vendor == "postgresql":  # see bulk.PROBING_WAITING_RECORDS
        # By id: the summaries' locks keep these records waiting.
        waiting = UsageRecord.objects.filter(id__any=waiting_record_ids(summary_ids=claimed, limit=batch_size))
    else:
        waiting = UsageRecord.objects.filter(summary_id__any=claimed, status=UsageRecord.Status.RATED)
        if record_ids is not None:
            waiting = waiting.filter(id__any=record_ids)
    records = [FoldRecord(*row) for row in waiting.order_by("summary_id", "occurred_at", "id")
               .values_list(*FoldRecord.__slots__)[:batch_size]]
    if not records and record_ids is not None:
        return FoldResult(0, ZERO)
    if not records:
        return _drop_stale_markers(claimed)
    batch = FoldBatch.objects.create(record_count=0, charged_amount=ZERO, folded_by=folded_by,
                                     summary_count=len({r.summary_id for r in records}))
    charged, crossed = apply_records(summaries=summaries, records=records, batch_id=batch.id, caused_by=folded_by)
    save_billing(records)
    billed = sum(1 for r in records if r.status == UsageRecord.Status.BILLED)
    failed = sum(1 for r in records if r.status == UsageRecord.Status.FAILED)
    FoldBatch.objects.filter(pk=batch.id).update(record_count=billed, charged_amount=charged)
    count_on_commit(USAGE_FOLDED, billed)
    _close_batch(claimed=claimed, touched=sorted({r.summary_id for r in records}),
                 taken=len(records), batch_size=batch_size, crossed=crossed, batch_id=batch.id,
                 keep_markers=record_ids is not None)
    return FoldResult(billed, charged, 1, failed)


def lock_summaries(ids: list[int]) -> dict[int, Summary]:
    """Lock (FOR NO KEY UPDATE, in id order, as bulk ingestion locks them) and load summaries."""
    return {s.id: s for s in Summary.objects.select_for_update(no_key=True, of=("self",)).filter(id__any=ids)
            .select_related("customer").order_by("id")}


def _drop_stale_markers(claimed: list[int]) -> FoldResult:
    """The claimed summaries (locked) have nothing waiting: folded meanwhile, or re-rated away."""
    PendingSummary.objects.filter(summary_id__any=claimed).delete()
    return FoldResult(0, ZERO, 1)


def _close_batch(*, claimed: list[int], touched: list[int], taken: int,
                 batch_size: int, crossed: set[int], batch_id: int, keep_markers: bool = False) -> None:
    """Drop the markers of the claimed summaries the batch drained and emit events for those it
    touched (ascending ids). Records came ordered by summary: a batch that was not full drained
    every claimed summary; a full one drained those before its last summary, which (with the later
    ones) may hold more."""
    if not keep_markers:
        drained = claimed if taken < batch_size else [i for i in claimed if i < touched[-1]]
        PendingSummary.objects.filter(summary_id__any=drained).delete()
    emit_events_of_summaries(ids=touched, crossed=crossed, batch_id=batch_id)


def emit_summary_events(*, summaries: list[Summary], crossed: set[int], force: bool = False, **extra) -> int:
    """Emit `summary.updated`, debounced: at once when an allowance threshold was crossed (the alert
    check listens for it), otherwise at most once per summary per TARIFA_SUMMARY_EVENT_SECONDS; the
    periodic sweep emits for summaries changed since their last event. Without the debounce a month
    of spread-out usage produced one event (and webhook call) per summary per fold batch."""
    now = timezone.now()
    quiet_since = _quiet_since(now)
    due = [s for s in summaries
           if force or s.id in crossed or s.last_event_at is None or s.last_event_at <= quiet_since]
    if not due:
        return 0
    emit_events(events=[
        (s.tenant_id, "summary.updated", summary_payload(s, allowance_threshold_crossed=s.id in crossed, **extra))
        for s in due
    ])
    Summary.objects.filter(id__any=[s.id for s in due]).update(last_event_at=now)
    return len(due)


def emit_events_of_summaries(*, ids: list[int], crossed: set[int], **extra) -> int:
    """emit_summary_events for summaries known by id, loading only those it may emit for (a bulk
    import chunk touches thousands, and the debounce drops most)."""
    due = summaries_maybe_due_events(ids=ids, crossed=crossed, quiet_since=_quiet_since(timezone.now()))
    return emit_summary_events(summaries=due, crossed=crossed, **extra)


def _quiet_since(now):
    """Summaries whose last event is older than this are due another (the debounce)."""
    return now - timedelta(seconds=settings.TARIFA_SUMMARY_EVENT_SECONDS)


def emit_stale_summary_events() -> int:
    """Emit `summary.updated` for summaries changed since their last event (run by the sweep)."""
    stale = list(Summary.objects.filter(last_event_at__isnull=False, updated_at__gt=F("last_event_at"))
                 .select_related("customer"))
    return emit_summary_events(summaries=stale, crossed=set(), force=True)


def fold_all_pending(*, batch_size: int, folded_by: str = "", summary_ids: list[int] | None = None,
                     record_ids: list[int] | None = None) -> FoldResult:
    records, charged, batches, failed = 0, ZERO, 0, 0
    while True:
        result = fold_next_batch(batch_size=batch_size, folded_by=folded_by, summary_ids=summary_ids,
                                 record_ids=record_ids)
        if not result.batches:
            return FoldResult(records, charged, batches, failed)
        records, charged, batches = records + result.records, charged + result.charged, batches + 1
        failed += result.failed


def summary_payload(summary: Summary, **extra) -> dict:
    return {"customer": summary.customer.external_id, "period": summary.period, "summary_id": summary.id,
            "total_amount": str(summary.total_amount), "currency": summary.currency,
            "record_count": summary.record_count, **extra}


def apply_records(*, summaries: dict[int, Summary], records: list[UsageRecord], batch_id: int,
                  wallet_pays: dict[int, bool] | None = None, given_back: dict | None = None,
                  caused_by: str = "") -> tuple[Decimal, set[int]]:
    """Charge `records` (ordered per summary by time) against their locked summaries.

    Allowances first, then graduated tiers, each record's charge rounded once. A prepaid customer's
    record is also debited from the wallet (locked here), or fails whole when the wallet cannot pay.
    `wallet_pays` (re-rating) says by record id whether a wallet pays it, whatever the customer's
    billing mode is now; records it does not name go by the mode. `given_back` (re-rating: what
    its refunds gave back, by wallet id) is taken again first, the way it had paid.
    Mutates the records' billing fields (the caller saves them) and writes the summaries, lines,
    allowance usage and wallet debits.
    Returns the total charged and the ids of summaries whose allowance use crossed an alert threshold.
    """
    ids = list(summaries)
    lines = {(l.summary_id, l.kind): l for l in SummaryLine.objects.filter(summary_id__any=ids)}
    usage = {(u.summary_id, u.allowance_id): u for u in AllowanceUsage.objects.filter(summary_id__any=ids)}
    used_before = {key: u.used for key, u in usage.items()}
    snapshots = {i: d for i, d in RateSnapshot.objects.filter(id__in={r.snapshot_id for r in records})
                 .values_list("id", "data")}
    terms = {i: terms_of(d) for i, d in snapshots.items()}
    allowances = allowances_by_plan(plan_ids={r.plan_id for r in records})
    prepaid = {s.customer_id for s in summaries.values() if s.customer.billing_mode == Customer.BillingMode.PREPAID}
    wallet_pays = wallet_pays or {}
    payers = prepaid | {summaries[r.summary_id].customer_id for r in records if wallet_pays.get(r.id)}
    funds = PrepaidFunds(customer_ids=payers, given_back=given_back) if payers else None
    now = timezone.now()
    charged_total = ZERO
    for record in records:
        summary = summaries[record.summary_id]
        snapshot = snapshots[record.snapshot_id]
        if snapshot["currency"] != summary.currency:
            record.status = UsageRecord.Status.UNRATED
            record.unrated_reason = UsageRecord.UnratedReason.CURRENCY_MISMATCH
            continue
        kind = record.rated_kind
        billable, covered, used = record.billable_quantity, ZERO, None
        allowance = covering_allowance(allowances.get(record.plan_id, []), kind)
        if allowance is not None:
            used = usage.get((summary.id, allowance.id))
            if used is None:
                used = usage[(summary.id, allowance.id)] = AllowanceUsage(
                    summary_id=summary.id, allowance_id=allowance.id, included=allowance.quantity, used=ZERO)
            covered = max(ZERO, min(billable, used.included - used.used))
        line = lines.get((summary.id, kind))
        if line is None:
            line = lines[(summary.id, kind)] = SummaryLine(summary_id=summary.id, kind=kind, unit=snapshot["unit"])
        amount = charge(billable - covered, already=line.chargeable_quantity, terms=terms[record.snapshot_id])
        if funds is not None and wallet_pays.get(record.id, summary.customer_id in prepaid):
            refusal = funds.refusal(customer_id=summary.customer_id, amount=amount, currency=summary.currency)
            if refusal:  # never half-charged: the record leaves the allowance, line and summary untouched
                record.status, record.failure_code, record.amount_due = UsageRecord.Status.FAILED, refusal, amount
                continue
            funds.take(customer_id=summary.customer_id, amount=amount, record=record)
            summary.wallet_paid_amount += amount
        if used is not None:
            used.used += covered
        add_to_line(line, quantity=record.quantity, billable=billable, covered=covered, amount=amount)
        summary.record_count += 1
        summary.total_amount += amount
        charged_total += amount
        record.status, record.allowance_used, record.charged_amount = UsageRecord.Status.BILLED, covered, amount
        record.billed_at, record.batch_id, record.unrated_reason = now, batch_id, ""
        record.failure_code, record.amount_due = "", None
    if funds is not None:
        funds.post_debits(batch_id=batch_id, caused_by=caused_by)
    touched = [summaries[i] for i in sorted({r.summary_id for r in records})]
    check_in_range(touched, lines.values())
    for summary in touched:
        summary.updated_at = now
    SummaryLine.objects.bulk_create(lines.values(), update_conflicts=True, unique_fields=["summary", "kind"],
                                    update_fields=LINE_FIELDS)
    AllowanceUsage.objects.bulk_create(usage.values(), update_conflicts=True, unique_fields=["summary", "allowance"],
                                       update_fields=["used", "included"])
    save_totals(touched)
    thresholds = {a.id: a.plan.thresholds for plan_allowances in allowances.values() for a in plan_allowances}
    crossed = crossed_thresholds(
        [(summary_id, allowance_id, used_before.get((summary_id, allowance_id), ZERO), u.used, u.included)
         for (summary_id, allowance_id), u in usage.items()], thresholds=thresholds)
    return charged_total, crossed


def check_in_range(summaries, lines) -> None:
    """SummaryOutOfRange unless every total fits its column, as PostgreSQL would require."""
    beyond = {s.id for s in summaries if abs(s.total_amount) >= MONEY_LIMIT}
    beyond |= {line.summary_id for line in lines if abs(line.charged_amount) >= MONEY_LIMIT or max(
        line.quantity, line.billable_quantity, line.chargeable_quantity, line.allowance_used) >= QUANTITY_LIMIT}
    if beyond:
        raise SummaryOutOfRange(beyond)


def add_to_line(line: SummaryLine, *, quantity: Decimal, billable: Decimal, covered: Decimal,
                amount: Decimal) -> None:
    """Count one billed record into its summary line (folding and rebuilding share this)."""
    line.record_count += 1
    line.quantity += quantity
    line.billable_quantity += billable
    line.allowance_used += covered
    line.chargeable_quantity += billable - covered
    line.charged_amount += amount


def crossed_thresholds(moves, *, thresholds: dict[int, list[int]] | None = None) -> set[int]:
    """Summaries whose allowance use crossed an alert threshold; `moves` holds (summary id,
    allowance id, used before, used after, included). Thresholds are loaded when not given."""
    moves = list(moves)
    if thresholds is None:
        thresholds = {a.id: a.plan.thresholds for a in Allowance.objects.filter(
            id__in={m[1] for m in moves}).select_related("plan")}
    return {
        summary_id for summary_id, allowance_id, before, after, included in moves
        if included > 0 and any(before * 100 < t * included <= after * 100 for t in thresholds.get(allowance_id, []))
    }


def save_totals(summaries: list[Summary]) -> None:
    """Write summaries' totals (and what wallets paid of them): one UPDATE … FROM unnest() on PostgreSQL."""
    if not summaries:
        return
    if connection.vendor != "postgresql":
        Summary.objects.bulk_update(summaries, ["record_count", "total_amount", "wallet_paid_amount", "updated_at"])
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Summary._meta.db_table} AS s SET record_count = v.record_count,
                    total_amount = v.total_amount, wallet_paid_amount = v.wallet_paid_amount, updated_at = v.updated_at
                FROM unnest(%s::bigint[], %s::integer[], %s::numeric[], %s::numeric[], %s::timestamptz[])
                     AS v(id, record_count, total_amount, wallet_paid_amount, updated_at)
                WHERE s.id = v.id""",
            [array_literal(s.id for s in summaries), array_literal(s.record_count for s in summaries),
             array_literal(s.total_amount for s in summaries), array_literal(s.wallet_paid_amount for s in summaries),
             array_literal(s.updated_at.isoformat() for s in summaries)],
        )


BILLING_FIELDS = ["status", "batch_id", "allowance_used", "charged_amount", "billed_at", "unrated_reason",
                  "wallet_entry_id", "failure_code", "amount_due"]


def _as_model(record) -> UsageRecord:
    if isinstance(record, UsageRecord):
        return record
    return UsageRecord(id=record.id, **{field: getattr(record, field) for field in BILLING_FIELDS})


def save_billing(records: list[UsageRecord]) -> None:
    """Write the billing fields of folded records: one UPDATE … FROM unnest() on PostgreSQL."""
    if not records:
        return
    if connection.vendor != "postgresql":
        UsageRecord.objects.bulk_update([_as_model(r) for r in records], BILLING_FIELDS, batch_size=500)
        return
    table = UsageRecord._meta.db_table
    billed_at = next((r.billed_at for r in records if r.billed_at is not None), None)
    batch_id = next((r.batch_id for r in records if r.batch_id is not None), None)
    if any(r.batch_id not in (None, batch_id) or r.billed_at not in (None, billed_at) for r in records):
        raise ValueError("save_billing writes the records of one batch")  # one batch, one time: scalars below
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table} AS u SET status = v.status, unrated_reason = v.unrated_reason,
                    batch_id = CASE WHEN v.billed THEN %s::bigint END, allowance_used = v.allowance_used,
                    charged_amount = v.charged_amount, billed_at = CASE WHEN v.billed THEN %s::timestamptz END,
                    wallet_entry_id = v.wallet_entry_id, failure_code = v.failure_code, amount_due = v.amount_due
                FROM unnest(%s::bigint[], %s::text[], %s::boolean[], %s::numeric[], %s::numeric[], %s::text[],
                            %s::bigint[], %s::text[], %s::numeric[])
                     AS v(id, status, billed, allowance_used, charged_amount, unrated_reason, wallet_entry_id,
                          failure_code, amount_due)
                WHERE u.id = v.id""",
            [batch_id, billed_at, array_literal(r.id for r in records), array_literal(r.status for r in records),
             array_literal("t" if r.billed_at is not None else "f" for r in records),
             array_literal(r.allowance_used for r in records), array_literal(r.charged_amount for r in records),
             array_literal(r.unrated_reason for r in records), array_literal(r.wallet_entry_id for r in records),
             array_literal(r.failure_code for r in records), array_literal(r.amount_due for r in records)],
        )
