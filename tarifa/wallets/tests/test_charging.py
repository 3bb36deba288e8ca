"""Prepaid debits in the fold's transaction, failures for lack of credit, and retries after top-up."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tarifa.core.errors import Conflict, DomainError
from tarifa.metering.models import Summary, UsageRecord
from tarifa.metering.services.reconciliation import find_differences, rerate_period
from tarifa.runtime.testing import drain
from tarifa.wallets.models import LedgerEntry, Wallet
from tarifa.wallets.services.ledger import adjust_balance, configure_wallet, top_up
from tarifa.wallets.services.reconciliation import find_wallet_differences
from tarifa.wallets.tests.conftest import at, prepaid_customer, tokens, use  # noqa: F401

pytestmark = pytest.mark.django_db


def _wallet(customer) -> Wallet:
    return Wallet.objects.get(customer=customer)


def test_the_fold_debits_prepaid_usage_once_and_links_each_record_to_its_debit(tenant, wallet_customer):
    result = use(tenant, [tokens("m1", "org-1", 1500), tokens("m2", "org-1", 2000, model="gpt-4o-mini"),
                          tokens("m3", "org-1", 500, kind="llm.output_tokens")])
    assert (result.records, result.failed, result.charged) == (3, 0, Decimal("3.70"))  # 1.50 + 0.20 + 2.00
    wallet = _wallet(wallet_customer)
    assert wallet.balance == Decimal("6.30")
    debit = LedgerEntry.objects.get(wallet=wallet, kind="usage_debit")
    assert debit.amount == Decimal("-3.70") and debit.balance_after == Decimal("6.30") and debit.record_count == 3
    assert set(UsageRecord.objects.filter(wallet_entry=debit).values_list("external_id", flat=True)) == {"m1", "m2", "m3"}
    summary = Summary.objects.get(customer=wallet_customer)
    assert summary.total_amount == Decimal("3.70")  # prepaid usage still folds into the monthly summary
    assert summary.wallet_paid_amount == Decimal("3.70")  # and the close has nothing of it to invoice
    # Delivered again (a client retry): counted once, debited once.
    use(tenant, [tokens("m1", "org-1", 1500)])
    assert _wallet(wallet_customer).balance == Decimal("6.30")
    assert find_differences() == [] and find_wallet_differences() == []


def test_usage_the_wallet_cannot_cover_fails_whole_and_is_charged_after_a_top_up(tenant, wallet_customer):
    result = use(tenant, [tokens("a", "org-1", 6000, at(1, 1)), tokens("b", "org-1", 5000, at(1, 2)),
                          tokens("c", "org-1", 4000, at(1, 3))])
    # 10.00 available: a (6.00) fits, b (5.00) does not, c (4.00) does — records are never half-charged.
    assert (result.records, result.failed) == (2, 1)
    b = UsageRecord.objects.get(external_id="b")
    assert (b.status, b.failure_code, b.amount_due, b.charged_amount, b.wallet_entry_id) == (
        "failed", "insufficient_credits", Decimal("5.00"), None, None)
    assert _wallet(wallet_customer).balance == Decimal("0.00")
    summary = Summary.objects.get(customer=wallet_customer)
    assert (summary.record_count, summary.total_amount) == (2, Decimal("10.00"))

    top_up(customer=wallet_customer, amount=Decimal("20"), idempotency_key="pix-1", caused_by="test")
    drain()  # the top-up queued the retry, which queued the fold
    b.refresh_from_db()
    assert (b.status, b.failure_code, b.charged_amount, b.amount_due) == ("billed", "", Decimal("5.00"), None)
    assert _wallet(wallet_customer).balance == Decimal("15.00")
    assert find_differences() == [] and find_wallet_differences() == []


def test_raising_the_credit_limit_retries_what_failed(tenant, wallet_customer):
    use(tenant, [tokens("a", "org-1", 6000, at(1, 1)), tokens("b", "org-1", 5000, at(1, 2))])
    assert UsageRecord.objects.get(external_id="b").status == "failed"
    configure_wallet(customer=wallet_customer, low_balance_threshold=Decimal("1"), actor="ops")
    drain()  # another setting: nothing to retry
    assert UsageRecord.objects.get(external_id="b").status == "failed"
    configure_wallet(customer=wallet_customer, credit_limit=Decimal("10"), actor="ops")
    drain()  # the retry, then the fold
    assert UsageRecord.objects.get(external_id="b").status == "billed"
    assert _wallet(wallet_customer).balance == Decimal("-1.00")
    assert find_differences() == [] and find_wallet_differences() == []


def test_credit_limit_lets_the_balance_go_negative_but_no_further(tenant, token_plan):
    prepaid_customer(tenant, token_plan, "org-2", balance="1", credit_limit="5")
    result = use(tenant, [tokens(f"x{i}", "org-2", 2000, at(1, i)) for i in range(4)])
    assert (result.records, result.failed) == (3, 1)  # 1 + 5 available: three of 2.00
    assert Wallet.objects.get(customer__external_id="org-2").balance == Decimal("-5.00")


def test_prepaid_customer_without_wallet_fails_with_a_code(tenant, token_plan):
    from tarifa.tenants.services import create_customer
    from tarifa.metering.services.plans import subscribe
    from datetime import date

    customer, _ = create_customer(tenant=tenant, external_id="nowallet", billing_mode="prepaid")
    subscribe(customer=customer, plan=token_plan, starts_on=date(2025, 1, 1))
    use(tenant, [tokens("n1", "nowallet", 1000)])
    assert UsageRecord.objects.get(external_id="n1").failure_code == "no_wallet"


def test_a_top_up_repeated_with_its_key_credits_once(tenant, wallet_customer):
    first = top_up(customer=wallet_customer, amount=Decimal("50"), idempotency_key="order-77", caused_by="t")
    again = top_up(customer=wallet_customer, amount=Decimal("50"), idempotency_key="order-77", caused_by="t")
    assert first.created and not again.created and first.entry.id == again.entry.id
    assert _wallet(wallet_customer).balance == Decimal("60")
    with pytest.raises(Conflict) as conflict:
        top_up(customer=wallet_customer, amount=Decimal("5"), idempotency_key="order-77", caused_by="t")
    assert conflict.value.code == "idempotency_conflict"
    with pytest.raises(DomainError):
        top_up(customer=wallet_customer, amount=Decimal("-1"), idempotency_key="neg", caused_by="t")
    assert _wallet(wallet_customer).balance == Decimal("60")


def test_operator_adjustments_are_audited_and_cannot_overdraw(tenant, wallet_customer):
    posted = adjust_balance(customer=wallet_customer, amount=Decimal("-4"), reason="goodwill reversal", actor="ana")
    audit = posted.entry.audit
    assert (audit.actor, audit.before, audit.after, audit.reason) == ("ana", {"balance": "10.000000"},
                                                                      {"balance": "6.000000"}, "goodwill reversal")
    assert posted.entry.caused_by == "operator:ana"
    with pytest.raises(DomainError) as refused:
        adjust_balance(customer=wallet_customer, amount=Decimal("-7"), reason="too much", actor="ana")
    assert refused.value.code == "insufficient_credits"
    with pytest.raises(DomainError):
        adjust_balance(customer=wallet_customer, amount=Decimal("1"), reason=" ", actor="ana")
    assert _wallet(wallet_customer).balance == Decimal("6")


def test_rerating_a_prepaid_period_refunds_the_old_debits_and_charges_again(tenant, wallet_customer, token_plan):
    use(tenant, [tokens(f"r{i}", "org-1", 1000, at(2, i)) for i in range(3)])
    assert _wallet(wallet_customer).balance == Decimal("7.00")
    rate = token_plan.rates.get(kind="llm.input_tokens", destination_prefix="")
    rate.price = Decimal("0.50")  # a tariff correction
    rate.save()
    rerate_period(tenant=tenant, period="2025-12")
    assert _wallet(wallet_customer).balance == Decimal("8.50")
    kinds = list(LedgerEntry.objects.filter(wallet__customer=wallet_customer).order_by("id").values_list("kind", "amount"))
    assert kinds[-2:] == [("refund", Decimal("3.00")), ("usage_debit", Decimal("-1.50"))]
    assert find_differences() == [] and find_wallet_differences() == []


def test_reconcile_catches_a_balance_that_does_not_match_its_ledger(tenant, wallet_customer):
    use(tenant, [tokens("t1", "org-1", 1000)])
    Wallet.objects.filter(customer=wallet_customer).update(balance=Decimal("99"))
    checks = {d.check for d in find_wallet_differences()}
    assert "balance == sum(ledger)" in checks
    LedgerEntry.objects.filter(kind="usage_debit").update(amount=Decimal("-0.5"))
    assert any(d.check.startswith("usage_debit") for d in find_wallet_differences())


def test_reconcile_checks_what_the_wallets_paid_of_each_summary_and_fix_rebuilds_it(tenant, wallet_customer):
    """The close invoices a summary's total less what wallets paid of it: that amount is proven
    against the records like the total, and rebuilt by --fix and by the migration that added it."""
    import importlib
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    from tarifa.metering.services.reconciliation import rebuild_summary

    use(tenant, [tokens("m1", "org-1", 1500), tokens("m2", "org-1", 2000, model="gpt-4o-mini")])
    Summary.objects.filter(customer=wallet_customer).update(wallet_paid_amount=Decimal(0))
    [difference] = find_differences()
    assert (difference.field, difference.summary_value, difference.records_value) == (
        "wallet_paid_amount", Decimal(0), Decimal("1.70"))
    rebuild_summary(customer=wallet_customer, period=difference.period)
    assert find_differences() == []
    Summary.objects.filter(customer=wallet_customer).update(wallet_paid_amount=Decimal(0))
    migration = importlib.import_module("tarifa.metering.migrations.0011_summary_wallet_paid_amount")
    # The editor's two members it uses (SQLite's own refuses to open inside a test's transaction).
    migration.fill_wallet_paid(apps, SimpleNamespace(connection=connection,
                                                     execute=lambda sql: connection.cursor().execute(sql)))
    assert Summary.objects.get(customer=wallet_customer).wallet_paid_amount == Decimal("1.70")


def test_a_customer_turned_postpaid_has_the_usage_its_wallet_could_not_pay_charged(tenant, wallet_customer):
    """Usage the wallet could not pay stays failed until credit arrives; a customer turned postpaid
    gets none, so the change of billing mode itself has the workers charge it, to invoice."""
    from tarifa.tenants.services import update_customer

    use(tenant, [tokens("a", "org-1", 6000, at(1, 1)), tokens("b", "org-1", 5000, at(1, 2))])
    assert UsageRecord.objects.get(external_id="b").status == "failed"
    update_customer(customer=wallet_customer, name="Org One")  # another change: nothing to retry
    drain()
    assert UsageRecord.objects.get(external_id="b").status == "failed"
    update_customer(customer=wallet_customer, billing_mode="postpaid")
    drain()  # the retry, then the fold
    b = UsageRecord.objects.get(external_id="b")
    assert (b.status, b.charged_amount, b.wallet_entry_id) == ("billed", Decimal("5.00"), None)
    summary = Summary.objects.get(customer=wallet_customer)
    assert (summary.total_amount, summary.wallet_paid_amount) == (Decimal("11.00"), Decimal("6.00"))
    assert _wallet(wallet_customer).balance == Decimal("4.00")  # the wallet paid a, and nothing more
    assert find_differences() == [] and find_wallet_differences() == []
