"""Property: any interleaving of top-ups, usage, reversals, grants, expiries, adjustments and
re-rates keeps every wallet's balance equal to its ledger, within its credit limit, its granted
credit within its grants, and every charged prepaid record paid by exactly one debit."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tarifa.core.errors import DomainError
from tarifa.core.money import DecimalSum
from tarifa.metering.models import PricePlan, UsageRecord
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.processing import retry_failed_usage
from tarifa.metering.services.reconciliation import find_differences, rerate_period
from tarifa.metering.services.reversal import reverse_usage
from tarifa.wallets.models import GrantDraw, GrantLot, LedgerEntry, Wallet
from tarifa.wallets.services.grants import expire_grants, grant_monthly_credits
from tarifa.wallets.services.ledger import adjust_balance, top_up
from tarifa.wallets.tests.conftest import at, prepaid_customer, tokens, use  # noqa: F401

pytestmark = pytest.mark.django_db
COUNTER = itertools.count()

operations = st.lists(st.one_of(
    st.tuples(st.just("top_up"), st.integers(1, 20), st.sampled_from(["k1", "k2", "k3"])),
    st.tuples(st.just("usage"), st.integers(0, 6000), st.sampled_from(["llm.input_tokens", "llm.output_tokens"])),
    st.tuples(st.just("reverse"), st.integers(0, 20), st.just("")),
    st.tuples(st.just("grant"), st.integers(1, 3), st.just("")),
    st.tuples(st.just("expire"), st.integers(1, 3), st.just("")),
    st.tuples(st.just("adjust"), st.integers(-15, 15), st.just("")),
    st.tuples(st.just("retry"), st.just(0), st.just("")),
    st.tuples(st.just("rerate"), st.just(0), st.just("")),
), min_size=1, max_size=14)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, credit_limit=st.sampled_from(["0", "3"]), expiry_days=st.sampled_from([10, None]))
@example(ops=[("adjust", -6, ""), ("grant", 1, "")], credit_limit="3", expiry_days=10)  # a grant first settles the lent credit
@example(ops=[("grant", 1, ""), ("usage", 6000, "llm.input_tokens"), ("rerate", 0, ""), ("reverse", 0, "")],
         credit_limit="0", expiry_days=None)  # given back to a grant that never expires, and taken again
def test_any_interleaving_keeps_the_ledger_and_the_debits_whole(tenant, token_plan, ops, credit_limit, expiry_days):
    n = next(COUNTER)
    PricePlan.objects.filter(pk=token_plan.pk).update(grant_expiry_days=expiry_days)  # None: grants never expire
    customer = prepaid_customer(tenant, token_plan, f"p{n}", balance="5", credit_limit=credit_limit, threshold="2")
    for step, (op, value, extra) in enumerate(ops):
        if op == "top_up":  # keys repeat: the same amount again credits nothing, another is refused
            before = Wallet.objects.get(customer=customer).balance
            try:
                posted = top_up(customer=customer, amount=Decimal(value), idempotency_key=extra, caused_by="property")
            except DomainError as refused:
                assert refused.code == "idempotency_conflict"
                assert Wallet.objects.get(customer=customer).balance == before
            else:
                assert Wallet.objects.get(customer=customer).balance == before + (value if posted.created else 0)
            retry_failed_usage(customer_id=customer.id)
            fold_all_pending(batch_size=7)
        elif op == "usage":
            use(tenant, [tokens(f"p{n}-{step}", customer.external_id, value, at(1, step), kind=extra)], fold=False)
            fold_all_pending(batch_size=7)
        elif op == "reverse":
            billed = list(UsageRecord.objects.filter(customer=customer, status="billed").order_by("id"))
            if billed:
                reverse_usage(tenant=tenant, external_id=billed[value % len(billed)].external_id, reason="p",
                              caused_by="property")
        elif op == "grant":
            grant_monthly_credits(now=datetime(2026, value, 1, 4, tzinfo=dt_timezone.utc))
        elif op == "expire":
            expire_grants(now=datetime(2026, value, 1, 4, tzinfo=dt_timezone.utc) + timedelta(days=11))
        elif op == "adjust" and value:
            try:
                adjust_balance(customer=customer, amount=Decimal(value), reason="p", actor="prop",
                               idempotency_key=f"{n}-{step}")
            except DomainError as refused:
                assert refused.code == "insufficient_credits"
        elif op == "retry":
            retry_failed_usage(customer_id=customer.id)
            fold_all_pending(batch_size=7)
        elif op == "rerate":  # gives back and takes again what grants paid (now: every grant has expired)
            rerate_period(tenant=tenant, period="2025-12", customer=customer)

        wallet = Wallet.objects.get(customer=customer)
        ledger_sum = LedgerEntry.objects.filter(wallet=wallet).aggregate(s=DecimalSum("amount"))["s"]
        assert wallet.balance == ledger_sum
        assert wallet.balance >= -wallet.credit_limit
        assert Decimal(0) <= wallet.granted_remaining <= max(wallet.balance, Decimal(0))
        assert not GrantLot.objects.filter(wallet=wallet, remaining__lt=0).exists()
        net_draws = GrantDraw.objects.filter(lot__wallet=wallet).values("lot", "entry").annotate(n=DecimalSum("amount"))
        assert all(row["n"] >= 0 for row in net_draws)  # never given back more than was taken
        charged = UsageRecord.objects.filter(customer=customer, status="billed", charged_amount__gt=0)
        assert not charged.filter(wallet_entry__isnull=True).exists()  # every charge has its debit
        assert find_wallet_problems(customer) == []
    assert find_differences(customer=customer) == []


def find_wallet_problems(customer):
    from tarifa.wallets.services.reconciliation import find_wallet_differences

    return find_wallet_differences(customer=customer)
