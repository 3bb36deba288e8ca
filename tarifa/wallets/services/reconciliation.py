"""Proving wallets: balance == sum of the ledger, each entry's balance_after follows from the one
before, each usage_debit equals the records linked to it, and each reversed prepaid record was
refunded exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tarifa.core.money import DecimalSum
from tarifa.metering.models import UsageRecord
from tarifa.tenants.models import Customer, Tenant
from tarifa.wallets.models import GrantLot, LedgerEntry, Wallet

ZERO = Decimal(0)


@dataclass(frozen=True)
class WalletDifference:
    customer: str
    check: str
    expected: str
    actual: str


def find_wallet_differences(*, tenant: Tenant | None = None, customer: Customer | None = None) -> list[WalletDifference]:
    wallets = Wallet.objects.select_related("customer").order_by("id")
    if tenant is not None:
        wallets = wallets.filter(tenant=tenant)
    if customer is not None:
        wallets = wallets.filter(customer=customer)
    differences = []
    for wallet in wallets.annotate(ledger_sum=DecimalSum("entries__amount")):
        who = wallet.customer.external_id
        ledger_sum = wallet.ledger_sum or ZERO
        if wallet.balance != ledger_sum:
            differences.append(WalletDifference(who, "balance == sum(ledger)", str(ledger_sum), str(wallet.balance)))
        if wallet.balance < -wallet.credit_limit:
            differences.append(WalletDifference(who, "balance >= -credit_limit", str(-wallet.credit_limit),
                                                str(wallet.balance)))
        granted = GrantLot.objects.filter(wallet=wallet).aggregate(s=DecimalSum("remaining"))["s"] or ZERO
        if granted != wallet.granted_remaining:
            differences.append(WalletDifference(who, "granted_remaining == sum(grant lots)", str(granted),
                                                str(wallet.granted_remaining)))
        differences.extend(_chain_breaks(wallet))
        differences.extend(_debit_mismatches(wallet))
    return differences


def _chain_breaks(wallet: Wallet) -> list[WalletDifference]:
    running, breaks = ZERO, []
    for entry_id, amount, after in wallet.entries.order_by("id").values_list("id", "amount", "balance_after").iterator():
        running += amount
        if after != running:
            breaks.append(WalletDifference(wallet.customer.external_id, f"entry {entry_id} balance_after",
                                           str(running), str(after)))
            running = after
    return breaks


def _debit_mismatches(wallet: Wallet) -> list[WalletDifference]:
    who, found = wallet.customer.external_id, []
    # A debit pays for the records linked to it; re-rating moves records to a new debit and gives
    # their old charge back with a refund that `reverses` the old debit.
    rerated = dict(wallet.entries.filter(kind=LedgerEntry.Kind.REFUND, idempotency_key__startswith="rerate:")
                   .values_list("reverses_id").annotate(s=DecimalSum("amount")))
    paid = dict(UsageRecord.objects.filter(wallet_entry__wallet=wallet).values_list("wallet_entry_id")
                .annotate(s=DecimalSum("charged_amount")))
    for entry_id, amount in wallet.entries.filter(kind=LedgerEntry.Kind.USAGE_DEBIT).values_list("id", "amount"):
        covered = (paid.get(entry_id) or ZERO) + (rerated.get(entry_id) or ZERO)
        if amount != -covered:
            found.append(WalletDifference(who, f"usage_debit {entry_id} == its records", str(-covered), str(amount)))
    linked = UsageRecord.objects.filter(wallet_entry__wallet=wallet)
    stray = linked.exclude(status__in=[UsageRecord.Status.BILLED, UsageRecord.Status.REVERSED]).count()
    if stray:
        found.append(WalletDifference(who, "debited records are billed or reversed", "0", str(stray)))
    owed = linked.filter(status=UsageRecord.Status.REVERSED, charged_amount__gt=0)
    refunds = set(wallet.entries.filter(kind=LedgerEntry.Kind.REFUND, idempotency_key__startswith="reversal:")
                  .values_list("idempotency_key", flat=True))
    missing = [i for i in owed.values_list("id", flat=True) if f"reversal:{i}" not in refunds]
    if missing:
        found.append(WalletDifference(who, "each reversed debited record refunded once", "0 missing",
                                      f"{len(missing)} missing"))
    return found

