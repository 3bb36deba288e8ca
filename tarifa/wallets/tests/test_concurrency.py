"""Concurrent debits of one wallet by 4 worker processes on PostgreSQL, one of them killed."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from tarifa.core.money import DecimalSum
from tarifa.metering.models import UsageRecord
from tarifa.metering.services.ingestion import ingest_usage
from tarifa.metering.services.reconciliation import find_differences
from tarifa.metering.tests.conftest import fold_with_a_worker_killed
from tarifa.runtime.services import enqueue
from tarifa.runtime.testing import drain
from tarifa.wallets.models import LedgerEntry, Wallet
from tarifa.wallets.services.ledger import top_up
from tarifa.wallets.services.reconciliation import find_wallet_differences
from tarifa.wallets.tests.conftest import SAO_PAULO, prepaid_customer, tokens  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_four_workers_debiting_one_wallet_with_one_killed_never_overdraw_or_lose_a_debit(postgres, tenant,
                                                                                          token_plan, tmp_path):
    hot = prepaid_customer(tenant, token_plan, "hot", balance="150", credit_limit="20")
    prepaid_customer(tenant, token_plan, "cold", balance="1000")
    # Usage in two months makes two summaries, so two workers fold (and debit) the same wallet at once.
    for month in (11, 12):
        for customer in ("hot", "cold"):
            records = [tokens(f"{customer}-{month}-{i}", customer, 100 + (i % 7) * 10,
                              datetime(2025, month, 1 + i % 27, 12, i % 60, tzinfo=SAO_PAULO)) for i in range(1200)]
            for start in range(0, len(records), 600):
                assert ingest_usage(tenant=tenant, records=records[start:start + 600]).counts["accepted"] == 600
    for _ in range(8):
        enqueue("metering.fold")
    fold_with_a_worker_killed(tmp_path, batch_size=30, started_after=300)

    wallet = Wallet.objects.get(customer=hot)
    debits = LedgerEntry.objects.filter(wallet=wallet, kind="usage_debit").aggregate(s=DecimalSum("amount"))["s"]
    charged = UsageRecord.objects.filter(customer=hot, status="billed").aggregate(s=DecimalSum("charged_amount"))["s"]
    assert -debits == charged  # no debit lost, none doubled
    assert wallet.balance == Decimal(150) - charged >= Decimal(-20)  # never beyond the credit limit
    assert wallet.balance < Decimal("-19")  # it was drained to the limit: what failed did not fit
    failed = UsageRecord.objects.filter(customer=hot, status="failed")
    assert failed.exists() and set(failed.values_list("failure_code", flat=True)) == {"insufficient_credits"}
    assert not failed.filter(wallet_entry__isnull=False).exists() and not failed.filter(charged_amount__isnull=False).exists()
    assert UsageRecord.objects.filter(customer__external_id="cold", status="billed").count() == 2400
    assert find_wallet_differences() == [] and find_differences() == []

    # A top-up retries what failed; everything ends charged exactly once.
    top_up(customer=hot, amount=Decimal("500"), idempotency_key="refill", caused_by="test")
    drain()
    assert not UsageRecord.objects.filter(customer=hot).exclude(status="billed").exists()
    wallet.refresh_from_db()
    total = UsageRecord.objects.filter(customer=hot).aggregate(s=DecimalSum("charged_amount"))["s"]
    assert wallet.balance == Decimal(650) - total
    assert find_wallet_differences() == [] and find_differences() == []


def test_two_requests_creating_the_same_wallet_both_succeed(postgres, tenant, token_plan, monkeypatch):
    """A client's retried PUT …/wallet for a new wallet: the second create had hit the unique
    customer (a 500). The loser now changes the wallet the winner created."""
    import threading

    from django.db import connection

    from tarifa.tenants.services import create_customer
    from tarifa.wallets.services import ledger

    customer, _ = create_customer(tenant=tenant, external_id="new", billing_mode="prepaid")
    plan_currency = ledger._plan_currency

    def the_other_request_wins(customer):
        def other() -> None:  # with its unit: it does not come back here
            ledger.configure_wallet(customer=customer, unit="BRL", credit_limit=Decimal("5"))
            connection.close()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
        return plan_currency(customer)

    monkeypatch.setattr(ledger, "_plan_currency", the_other_request_wins)
    wallet, created = ledger.configure_wallet(customer=customer, credit_limit=Decimal("7"), actor="test")
    assert not created
    assert Wallet.objects.get(customer=customer).credit_limit == Decimal("7")
    assert wallet.entries.count() == 0
