"""Reversing a charged usage record: out of its summary, refunded to a prepaid wallet, once."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tarifa.core.errors import Conflict, DomainError, NotFound
from tarifa.core.text import check_lengths
from tarifa.events.services import emit_event
from tarifa.metering.models import AllowanceUsage, SummaryLine, UsageRecord
from tarifa.metering.selectors import allowances_by_plan, covering_allowance
from tarifa.metering.services.folding import lock_summaries
from tarifa.tenants.models import Tenant
from tarifa.wallets.models import LedgerEntry, Wallet
from tarifa.wallets.services.grants import expire_grants
from tarifa.wallets.services.ledger import post_entry, queue_failed_usage_retry


@dataclass(frozen=True)
class Reversal:
    record: UsageRecord
    changed: bool  # False: it had been reversed already
    refund: LedgerEntry | None = None


def reverse_usage(*, tenant: Tenant, external_id: str, reason: str, caused_by: str) -> Reversal:
    """Take a billed record out of its summary (its own count, allowance use and charge, so the
    summary still equals the sum of its billed records), refund what a prepaid wallet paid for it
    (granted credit first, to its grant), and mark it reversed. Reversing again changes nothing.

    Locks in the order of folds, calls and re-rates (summary, record, wallet), so it never
    deadlocks with one.
    """
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("reason_required", "A reversal needs a reason.", field="reason")
    check_lengths(UsageRecord, {"reason": reason}, columns={"reason": "reversal_reason"})
    with transaction.atomic():
        found = UsageRecord.objects.filter(tenant=tenant, external_id=external_id).only("summary_id").first()
        if found is None:
            raise NotFound("usage_record", external_id)
        summaries = lock_summaries([found.summary_id]) if found.summary_id is not None else {}
        record = UsageRecord.objects.select_for_update().get(pk=found.pk)
        if record.status == UsageRecord.Status.REVERSED:
            return Reversal(record, False)
        if record.status != UsageRecord.Status.BILLED:
            raise Conflict("usage_not_charged",
                           f"Usage '{external_id}' is {record.status}; only charged (billed) usage can be reversed.")
        # Its summary, locked above (a billed record's summary does not change: re-rating keeps it).
        summary = summaries.get(record.summary_id) or lock_summaries([record.summary_id])[record.summary_id]
        amount, covered = record.charged_amount, record.allowance_used
        SummaryLine.objects.filter(summary=summary, kind=record.rated_kind).update(
            record_count=F("record_count") - 1, quantity=F("quantity") - record.quantity,
            billable_quantity=F("billable_quantity") - record.billable_quantity,
            allowance_used=F("allowance_used") - covered,
            chargeable_quantity=F("chargeable_quantity") - (record.billable_quantity - covered),
            charged_amount=F("charged_amount") - amount)
        allowance = covering_allowance(allowances_by_plan(plan_ids=[record.plan_id]).get(record.plan_id, []),
                                       record.rated_kind)
        if allowance is not None and covered:
            AllowanceUsage.objects.filter(summary=summary, allowance=allowance).update(used=F("used") - covered)
        summary.record_count -= 1
        summary.total_amount -= amount
        if record.wallet_entry_id is not None:
            summary.wallet_paid_amount -= amount
        summary.save(update_fields=["record_count", "total_amount", "wallet_paid_amount", "updated_at"])
        refund = None
        if record.wallet_entry_id is not None and amount > 0:
            debit = LedgerEntry.objects.get(pk=record.wallet_entry_id)
            wallet = Wallet.objects.select_for_update().get(pk=debit.wallet_id)
            refund = post_entry(wallet=wallet, kind=LedgerEntry.Kind.REFUND, amount=amount, reverses=debit,
                                idempotency_key=f"reversal:{record.id}", caused_by=caused_by,
                                reason=f"reversal of {external_id}: {reason}").entry
            # credit given back to a grant that has expired meanwhile expires at once
            expire_grants(wallet_ids=[wallet.id], after=f"reversal:{record.id}")
            queue_failed_usage_retry(wallet=wallet, cause=f"entry:{refund.id}")
        record.status, record.reversed_at, record.reversal_reason = (
            UsageRecord.Status.REVERSED, timezone.now(), reason)
        record.save(update_fields=["status", "reversed_at", "reversal_reason"])
        emit_event(tenant=tenant, type="usage.reversed", payload={
            "id": external_id, "customer": summary.customer.external_id, "period": summary.period,
            "amount": str(amount), "refunded": refund is not None, "reason": reason})
    return Reversal(record, True, refund)
