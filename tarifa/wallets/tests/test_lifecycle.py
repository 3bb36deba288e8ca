"""Reversal, balance alerts and monthly grants."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest

from tarifa.alerts.models import Alert
from tarifa.core.errors import Conflict
from tarifa.events.models import Event
from tarifa.metering.models import Summary, SummaryLine, UsageRecord
from tarifa.metering.services.reconciliation import find_differences
from tarifa.metering.services.reversal import reverse_usage
from tarifa.metering.tests.conftest import at as call_at, call, customers, plan  # noqa: F401
from tarifa.metering.services.ingestion import ingest_usage
from tarifa.metering.services.folding import fold_all_pending
from tarifa.runtime.testing import drain
from tarifa.wallets.models import GrantLot, LedgerEntry, Wallet
from tarifa.wallets.services.grants import expire_grants, grant_monthly_credits
from tarifa.wallets.services.ledger import top_up
from tarifa.wallets.services.reconciliation import find_wallet_differences
from tarifa.wallets.tests.conftest import at, prepaid_customer, tokens, use  # noqa: F401

pytestmark = pytest.mark.django_db


def _balance(customer) -> Decimal:
    return Wallet.objects.get(customer=customer).balance


def test_reversing_prepaid_usage_refunds_it_once(tenant, wallet_customer):
    use(tenant, [tokens("r1", "org-1", 2000), tokens("r2", "org-1", 1000, at(2))])
    assert _balance(wallet_customer) == Decimal("7.00")
    first = reverse_usage(tenant=tenant, external_id="r1", reason="duplicate answer", caused_by="test")
    again = reverse_usage(tenant=tenant, external_id="r1", reason="duplicate answer", caused_by="test")
    assert first.changed and not again.changed
    assert first.refund.amount == Decimal("2.00") and first.refund.reverses.kind == "usage_debit"
    assert _balance(wallet_customer) == Decimal("9.00")
    record = UsageRecord.objects.get(external_id="r1")
    assert (record.status, record.reversal_reason) == ("reversed", "duplicate answer")
    summary = Summary.objects.get(customer=wallet_customer)
    assert (summary.record_count, summary.total_amount) == (1, Decimal("1.00"))
    assert Event.objects.filter(type="usage.reversed").count() == 1
    assert find_differences() == [] and find_wallet_differences() == []


def test_reversing_postpaid_usage_corrects_the_summary_and_its_allowance(tenant, customers):
    ingest_usage(tenant=tenant, records=[call("p1", "c1", 500, call_at(1, 1)), call("p2", "c1", 200, call_at(1, 2))])
    fold_all_pending(batch_size=1000)
    summary = Summary.objects.get(customer__external_id="c1")
    assert summary.allowance_usage.get().used == Decimal(600)
    covered = UsageRecord.objects.get(external_id="p1").allowance_used  # 504 s: 500 s in 30/6 steps
    reverse_usage(tenant=tenant, external_id="p1", reason="test call", caused_by="test")
    summary.refresh_from_db()
    line = SummaryLine.objects.get(summary=summary)
    assert (summary.record_count, line.record_count, line.quantity) == (1, 1, Decimal(200))
    assert summary.allowance_usage.get().used == Decimal(600) - covered
    assert not LedgerEntry.objects.exists()
    assert find_differences() == []


def test_only_charged_usage_can_be_reversed(tenant, wallet_customer):
    use(tenant, [tokens("w1", "org-1", 1000)], fold=False)
    with pytest.raises(Conflict) as refused:
        reverse_usage(tenant=tenant, external_id="w1", reason="x", caused_by="test")
    assert refused.value.code == "usage_not_charged"


def test_balance_alerts_fire_once_per_crossing_and_rearm_after_a_top_up(tenant, wallet_customer):
    # 10.00 with a threshold of 3.00
    use(tenant, [tokens("a1", "org-1", 6000, at(1, 1))])  # 4.00: above the threshold
    drain()
    assert not Alert.objects.exists()
    use(tenant, [tokens("a2", "org-1", 2000, at(1, 2))])  # 2.00: low
    use(tenant, [tokens("a3", "org-1", 1000, at(1, 3))])  # 1.00: still low, no second alert
    drain()
    assert list(Alert.objects.values_list("type", flat=True)) == ["wallet.low_balance"]
    use(tenant, [tokens("a4", "org-1", 1000, at(1, 4))])  # 0.00: depleted
    drain()
    assert sorted(Alert.objects.values_list("type", flat=True)) == ["wallet.depleted", "wallet.low_balance"]
    top_up(customer=wallet_customer, amount=Decimal("2"), idempotency_key="small", caused_by="t")  # 2.00: not re-armed
    use(tenant, [tokens("a5", "org-1", 2000, at(1, 5))])
    drain()
    assert Alert.objects.count() == 2
    top_up(customer=wallet_customer, amount=Decimal("10"), idempotency_key="big", caused_by="t")  # 10.00: re-armed
    use(tenant, [tokens("a6", "org-1", 9000, at(1, 6))])  # 1.00: low again
    drain()
    assert Alert.objects.filter(type="wallet.low_balance").count() == 2
    raised = Event.objects.filter(type="alert.raised").values_list("payload__type", flat=True)
    assert sorted(raised) == ["wallet.depleted", "wallet.low_balance", "wallet.low_balance"]


def test_monthly_grant_runs_at_0005_on_the_first_once_per_wallet_and_expires_unused(tenant, wallet_customer):
    # São Paulo is UTC-3: 00:05 on 1 Jan local is 03:05 UTC.
    before = datetime(2026, 1, 1, 3, 4, tzinfo=dt_timezone.utc)
    due = datetime(2026, 1, 1, 3, 5, tzinfo=dt_timezone.utc)
    Wallet.objects.filter(customer=wallet_customer).update(created_at=before - timedelta(days=40))
    LedgerEntry.objects.create(wallet=Wallet.objects.get(customer=wallet_customer), kind="grant", amount=0,
                               balance_after=Decimal("10"), caused_by="x", idempotency_key="grant:2025-12")
    assert grant_monthly_credits(now=before) == 0  # 00:04 local: December's grant exists, January's not due
    assert grant_monthly_credits(now=due) == 1
    assert grant_monthly_credits(now=due) == 0  # a second run (or a second scheduler) grants nothing
    assert grant_monthly_credits(now=due + timedelta(days=3)) == 0
    assert _balance(wallet_customer) == Decimal("40")
    grant = LedgerEntry.objects.get(idempotency_key="grant:2026-01")
    assert grant.expires_at == due + timedelta(days=10)
    # Granted credit is spent first: 12.00 of usage leaves 18.00 of the grant.
    use(tenant, [tokens("g1", "org-1", 12000, datetime(2026, 1, 2, 12, tzinfo=dt_timezone.utc))])
    assert Wallet.objects.get(customer=wallet_customer).granted_remaining == Decimal("18")
    assert expire_grants(now=due + timedelta(days=9)) == 0
    assert expire_grants(now=due + timedelta(days=10)) == Decimal("18")
    assert expire_grants(now=due + timedelta(days=11)) == 0
    assert _balance(wallet_customer) == Decimal("10")  # 40 - 12 - 18: the paid credit is untouched
    assert GrantLot.objects.get().remaining == 0
    assert LedgerEntry.objects.filter(kind="grant_expiry").get().amount == Decimal("-18")
    assert find_wallet_differences() == []


def test_grants_skip_plans_without_one_and_honour_each_tenants_time_zone(tenant, token_plan):
    from tarifa.metering.services.plans import create_plan
    from tarifa.tenants.models import Tenant

    Tenant.objects.filter(pk=tenant.pk).update(timezone="Asia/Tokyo")  # UTC+9: 00:05 on 1 Jan is 15:05 on 31 Dec UTC
    tenant.refresh_from_db()
    prepaid_customer(tenant, token_plan, "jp", balance="1")
    no_grant = create_plan(tenant=tenant, code="plain", name="No grant", rates=[
        {"kind": "llm.input_tokens", "unit": "token", "price": "1", "block_size": "1000"}])
    prepaid_customer(tenant, no_grant, "plain", balance="1")
    assert grant_monthly_credits(now=datetime(2025, 12, 30, 15, 3, tzinfo=dt_timezone.utc)) == 1  # December's
    assert grant_monthly_credits(now=datetime(2025, 12, 31, 15, 4, tzinfo=dt_timezone.utc)) == 0  # 00:04 local
    assert grant_monthly_credits(now=datetime(2025, 12, 31, 15, 5, tzinfo=dt_timezone.utc)) == 1  # January's
    assert set(LedgerEntry.objects.filter(kind="grant").values_list("idempotency_key", flat=True)) == {
        "grant:2025-12", "grant:2026-01"}


def test_usage_given_back_returns_to_the_grant_it_was_paid_from(tenant, wallet_customer):
    """Re-rating or reversing usage that granted credit paid gives that credit back to its grant,
    where it still expires: given back as paid credit, each re-rate had turned expiring credit into
    money the customer keeps."""
    from django.utils import timezone

    from tarifa.metering.services.reconciliation import rerate_period

    due = datetime(2026, 1, 1, 3, 5, tzinfo=dt_timezone.utc)
    assert grant_monthly_credits(now=due) == 1  # 10.00 paid + 30.00 granted
    expiry = timezone.now() + timedelta(days=10)  # the re-rate and reversal run now: still unexpired
    GrantLot.objects.update(expires_at=expiry)
    use(tenant, [tokens("g1", "org-1", 12000, datetime(2026, 1, 2, 12, tzinfo=dt_timezone.utc)),
                 tokens("g2", "org-1", 4000, datetime(2026, 1, 3, 12, tzinfo=dt_timezone.utc))])
    wallet = Wallet.objects.get(customer=wallet_customer)
    assert (wallet.balance, wallet.granted_remaining) == (Decimal("24"), Decimal("14"))
    rerate_period(tenant=tenant, period="2026-01")
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.granted_remaining) == (Decimal("24"), Decimal("14"))
    reverse_usage(tenant=tenant, external_id="g2", reason="retried request", caused_by="test")
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.granted_remaining) == (Decimal("28"), Decimal("18"))
    assert expire_grants(now=expiry) == Decimal("18")
    assert _balance(wallet_customer) == Decimal("10")  # the paid credit, as if g2 had never been used
    assert find_wallet_differences() == []


def test_a_rerate_pays_again_from_the_grant_that_paid_not_from_a_later_one(tenant, token_plan):
    """January's usage took all of January's grant and 5.00 of paid credit. Re-rated in February,
    it is paid the same way again: February's grant stays whole (before, the re-charge took it
    first and the customer kept the refund as paid credit). Re-rated at half the price, the part
    of January's grant no longer needed expires at once, since January's grant has expired."""
    from django.utils import timezone

    from tarifa.metering.services.plans import replace_plan_terms
    from tarifa.metering.services.reconciliation import rerate_period

    customer = prepaid_customer(tenant, token_plan, "org-2", balance="10")
    assert grant_monthly_credits(now=datetime(2026, 1, 1, 3, 5, tzinfo=dt_timezone.utc)) == 1  # expires on the 11th
    use(tenant, [tokens("j1", "org-2", 20000, datetime(2026, 1, 2, 12, tzinfo=dt_timezone.utc)),
                 tokens("j2", "org-2", 15000, datetime(2026, 1, 3, 12, tzinfo=dt_timezone.utc))])
    assert grant_monthly_credits(now=datetime(2026, 2, 1, 3, 5, tzinfo=dt_timezone.utc)) == 1
    february = GrantLot.objects.get(entry__idempotency_key="grant:2026-02")
    GrantLot.objects.filter(pk=february.pk).update(expires_at=timezone.now() + timedelta(days=10))  # unexpired now

    def state():
        wallet = Wallet.objects.get(customer=customer)
        return wallet.balance, wallet.granted_remaining, GrantLot.objects.get(pk=february.pk).remaining

    assert state() == (Decimal("35"), Decimal("30"), Decimal("30"))  # 5.00 paid left, February's grant
    rerate_period(tenant=tenant, period="2026-01")
    assert state() == (Decimal("35"), Decimal("30"), Decimal("30"))
    replace_plan_terms(plan=token_plan, rates=[
        {"kind": "llm.input_tokens", "unit": "token", "price": "0.50", "block_size": "1000"}])
    rerate_period(tenant=tenant, period="2026-01")  # 17.50, all from January's grant: 10.00 paid is whole
    assert state() == (Decimal("40"), Decimal("30"), Decimal("30"))
    expired = LedgerEntry.objects.filter(kind="grant_expiry").get()
    assert expired.amount == Decimal("-12.50") and expired.idempotency_key.startswith("grant_expiry:")
    assert find_wallet_differences() == [] and find_differences() == []


def test_reversals_give_back_the_grant_share_of_a_debit_and_an_expired_grant_takes_its_share(tenant, token_plan):
    """One debit of 35.00 paid 30.00 from January's grant and 5.00 of paid credit. Reversed record
    by record after the grant expired, each refund gives back the grant's share of it (30/35),
    which expires at once, and the rest as paid credit; the last refund takes what rounding left,
    so the paid credit comes back exactly."""
    customer = prepaid_customer(tenant, token_plan, "org-3", balance="10")
    assert grant_monthly_credits(now=datetime(2026, 1, 1, 3, 5, tzinfo=dt_timezone.utc)) == 1  # expired since
    use(tenant, [tokens("j1", "org-3", 20000, datetime(2026, 1, 2, 12, tzinfo=dt_timezone.utc)),
                 tokens("j2", "org-3", 15000, datetime(2026, 1, 3, 12, tzinfo=dt_timezone.utc))])
    assert LedgerEntry.objects.filter(kind="usage_debit").get().amount == Decimal("-35")
    assert _balance(customer) == Decimal("5")
    reverse_usage(tenant=tenant, external_id="j2", reason="retried", caused_by="test")
    assert _balance(customer) == Decimal("7.142858")  # 15.00 back, 12.857142 of it expired
    reverse_usage(tenant=tenant, external_id="j1", reason="retried", caused_by="test")
    assert _balance(customer) == Decimal("10")
    assert sorted(LedgerEntry.objects.filter(kind="grant_expiry").values_list("amount", flat=True)) == [
        Decimal("-17.142858"), Decimal("-12.857142")]
    assert Wallet.objects.get(customer=customer).granted_remaining == 0
    assert find_wallet_differences() == []


def test_a_changed_low_balance_line_alerts_a_balance_already_below_it_and_rearms_one_above_it(tenant, wallet_customer):
    """Lowering the line below a balance that had alerted re-arms the alert (before, the next fall
    through the new line was taken for the crossing already alerted, and nobody was told); raising
    it above the balance alerts at once, as the balance is low by the new line."""
    from tarifa.wallets.services.ledger import configure_wallet

    def lows():
        drain()
        return Alert.objects.filter(type="wallet.low_balance").count()

    configure_wallet(customer=wallet_customer, low_balance_threshold=Decimal("8"))  # balance 10.00
    assert lows() == 0
    use(tenant, [tokens("b1", "org-1", 3000, at(1, 1))])  # 7.00
    assert lows() == 1
    configure_wallet(customer=wallet_customer, low_balance_threshold=Decimal("5"))  # above it again: re-armed
    assert lows() == 1
    use(tenant, [tokens("b2", "org-1", 3000, at(1, 2))])  # 4.00
    assert lows() == 2
    configure_wallet(customer=wallet_customer, low_balance_threshold=Decimal("4.5"))  # still low: told already
    assert lows() == 2
    top_up(customer=wallet_customer, amount=Decimal("26"), idempotency_key="t", caused_by="test")  # 30.00
    configure_wallet(customer=wallet_customer, low_balance_threshold=Decimal("50"))  # low by the new line
    assert lows() == 3
    configure_wallet(customer=wallet_customer, low_balance_threshold=Decimal("50"))  # unchanged: nothing
    assert lows() == 3
    assert Alert.objects.order_by("-id").first().data["threshold"] == "50.000000"


def test_a_rerate_that_lowers_prices_retries_usage_that_failed_for_want_of_credit(tenant, token_plan):
    from tarifa.metering.services.plans import replace_plan_terms
    from tarifa.metering.services.reconciliation import rerate_period

    customer = prepaid_customer(tenant, token_plan, "org-4", balance="10")
    use(tenant, [tokens("d1", "org-4", 8000, at(5))])  # December: 8.00
    use(tenant, [tokens("j1", "org-4", 5000, datetime(2026, 1, 5, 12, tzinfo=dt_timezone.utc))])  # 5.00 of 2.00
    drain()  # the retry the first top-up queued
    assert UsageRecord.objects.get(external_id="j1").failure_code == "insufficient_credits"
    replace_plan_terms(plan=token_plan, rates=[
        {"kind": "llm.input_tokens", "unit": "token", "price": "0.50", "block_size": "1000"}])
    rerate_period(tenant=tenant, period="2025-12", customer=customer)  # December: 4.00, so 6.00 left
    drain()
    january = UsageRecord.objects.get(external_id="j1")
    assert (january.status, january.charged_amount) == ("billed", Decimal("5"))  # rated before the correction
    assert _balance(customer) == Decimal("1")
    assert find_wallet_differences() == [] and find_differences() == []
