from __future__ import annotations

from django.db.models import QuerySet

from tarifa.core.errors import NotFound
from tarifa.tenants.models import Customer
from tarifa.wallets.models import LedgerEntry, Wallet


def wallet_of(*, customer: Customer) -> Wallet:
    wallet = Wallet.objects.filter(customer=customer).select_related("customer").first()
    if wallet is None:
        raise NotFound("wallet", customer.external_id)
    return wallet


def ledger(*, wallet: Wallet, kind: str | None = None) -> QuerySet[LedgerEntry]:
    entries = LedgerEntry.objects.filter(wallet=wallet)
    return entries.filter(kind=kind) if kind else entries


def records_paid_by(*, entry_ids: list[int]) -> dict[int, list[str]]:
    """The usage ids (clients' ids) each usage_debit paid for."""
    from tarifa.metering.models import UsageRecord

    paid: dict[int, list[str]] = {i: [] for i in entry_ids}
    for entry_id, external_id in (UsageRecord.objects.filter(wallet_entry_id__in=entry_ids)
                                  .order_by("occurred_at", "id").values_list("wallet_entry_id", "external_id")):
        paid[entry_id].append(external_id)
    return paid
