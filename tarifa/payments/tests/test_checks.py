"""Payment checks: growing intervals, stop at payment and expiry, webhook + poll, reversals, failures."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tarifa.alerts.models import Alert
from tarifa.events.models import Event
from tarifa.metering.models import Summary
from tarifa.payments.models import (
    CheckLog, CreditNote, GatewayCredential, InboundNotification, Invoice, PaymentCheck,
)
from tarifa.payments.services.checking import (
    apply_transactions, check_now, claim_due_checks, resolve_notification, run_due_checks,
)
from tarifa.payments.services.credentials import set_credential, update_settings
from tarifa.payments.services.invoices import CloseResult, cancel_invoice, close_month, create_invoice
from tarifa.payments.gateways import GatewayTransaction
from tarifa.metering.tests.conftest import plan  # noqa: F401 — a fixture
from tarifa.payments.tests.conftest import T0, open_invoice
from tarifa.runtime.testing import drain

pytestmark = pytest.mark.django_db
MIN, HOUR = 60, 3600
DECEMBER_CLOSE = datetime(2026, 1, 1, 3, 5, tzinfo=dt_timezone.utc)  # 00:05 on January 1st in São Paulo


def _check(invoice) -> PaymentCheck:
    return PaymentCheck.objects.get(invoice=invoice)


def _run(at: datetime):
    return run_due_checks(worker_id="test", now=at)


def test_checks_start_after_the_first_interval_and_grow_exponentially_to_the_cap(shop, fake):
    invoice = open_invoice(shop, "INV-1")
    assert _check(invoice).next_check_at == T0 + timedelta(minutes=15)
    assert _run(T0 + timedelta(minutes=14)).checked == 0  # younger than the first interval: not checked
    now, gaps = T0 + timedelta(minutes=15), []
    for _ in range(9):
        assert _run(now).checked == 1
        check = _check(invoice)
        gaps.append(int((check.next_check_at - now).total_seconds()))
        now = check.next_check_at
    assert gaps == [30 * MIN, HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR, 24 * HOUR, 24 * HOUR, 24 * HOUR]
    assert _check(invoice).attempts == 9 and CheckLog.objects.filter(invoice=invoice, outcome="not_found").count() == 9


def test_an_explicit_list_progression_repeats_its_last_interval(shop, fake):
    update_settings(tenant=shop[0], progression="list", intervals="30m,1h,2h")
    invoice = open_invoice(shop, "INV-L")
    now, gaps = T0 + timedelta(minutes=30), []
    for _ in range(4):
        _run(now)
        gaps.append(int((_check(invoice).next_check_at - now).total_seconds()))
        now = _check(invoice).next_check_at
    assert gaps == [HOUR, 2 * HOUR, 2 * HOUR, 2 * HOUR]


def test_checks_stop_when_paid(shop, fake):
    invoice = open_invoice(shop, "INV-P")
    fake.add("INV-P", code="T-1", status=1)
    _run(T0 + timedelta(minutes=15))
    assert Invoice.objects.get(pk=invoice.pk).status == "open"
    fake.add("INV-P", code="T-2", status=3, gross="100.00", fee="4.99", method=1)
    assert _run(T0 + timedelta(minutes=45)).paid == 1
    invoice.refresh_from_db()
    assert (invoice.status, invoice.transaction_code, invoice.gross_amount, invoice.fee_amount, invoice.net_amount,
            invoice.payment_method, invoice.paid_via) == (
        "paid", "T-2", Decimal("100.00"), Decimal("4.99"), Decimal("95.01"), "credit_card", "poll")
    assert _check(invoice).status == "paid"
    assert _run(T0 + timedelta(days=5)).checked == 0
    assert Event.objects.filter(type="invoice.paid").count() == 1


def test_an_invoice_paid_another_amount_is_paid_and_the_difference_raised_once(shop, fake):
    """The gateway's transaction is final, so the invoice is paid; the 10.00 it came short (a
    discount given at the gateway, a boleto paid with another value) is an alert, not lost."""
    from tarifa.alerts.models import Alert

    invoice = open_invoice(shop, "INV-S")
    fake.add("INV-S", code="T-S", status=3, gross="90.00", fee="3.00")
    assert _run(T0 + timedelta(minutes=15)).paid == 1
    fake.add("INV-S", code="T-S", status=4, gross="90.00", fee="3.00")  # available later: no second alert
    check_now(tenant=shop[0], reference="INV-S")
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"
    alert = Alert.objects.get(type="payment.amount_mismatch")
    assert (alert.data["difference"], alert.data["gross_amount"]) == ("-10.00", "90.00")
    assert "10.00 short" in alert.message
    paid = Event.objects.get(type="invoice.paid").payload
    assert (paid["amount"], paid["gross_amount"], paid["difference"]) == ("100.00", "90.00", "-10.00")
    exact = open_invoice(shop, "INV-X")
    fake.add("INV-X", code="T-X", status=3, gross="100.00")
    _run(T0 + timedelta(minutes=15))
    assert Invoice.objects.get(pk=exact.pk).status == "paid" and Alert.objects.count() == 1


def test_open_invoices_expire_after_their_age(shop, fake):
    update_settings(tenant=shop[0], expire_after_days=2)
    invoice = open_invoice(shop, "INV-E")
    now = T0 + timedelta(minutes=15)
    while _check(invoice).status == "pending":
        _run(now)
        now = _check(invoice).next_check_at
    assert _check(invoice).status == "expired" and Invoice.objects.get(pk=invoice.pk).status == "expired"
    assert _check(invoice).last_checked_at == T0 + timedelta(days=2)  # a last look at expiry
    assert Event.objects.filter(type="invoice.expired").count() == 1


def test_an_expired_invoice_paid_later_becomes_paid(shop, fake):
    """A boleto paid after the checks stopped: the webhook (or a manual check) tells, and the
    money is not ignored."""
    update_settings(tenant=shop[0], expire_after_days=1)
    invoice = open_invoice(shop, "INV-LATE")
    _run(T0 + timedelta(days=1))
    assert Invoice.objects.get(pk=invoice.pk).status == "expired"
    fake.add("INV-LATE", code="T-L", status=3, notification="NC-L")
    Client().post(f"/webhooks/pagseguro/{shop[0].slug}", {"notificationCode": "NC-L", "notificationType": "transaction"})
    drain()
    invoice.refresh_from_db()
    assert (invoice.status, invoice.transaction_code, invoice.paid_via) == ("paid", "T-L", "webhook")
    assert _check(invoice).status == "paid"
    paid = Event.objects.get(type="invoice.paid")
    assert paid.payload["paid_after_expiry"] is True and paid.payload["reference"] == "INV-LATE"
    assert Event.objects.filter(type="invoice.expired").count() == 1


def test_an_expired_invoice_can_be_checked_by_hand(shop, fake):
    update_settings(tenant=shop[0], expire_after_days=1)
    invoice = open_invoice(shop, "INV-HAND")
    _run(T0 + timedelta(days=1))
    call_command("payments", "check", "--tenant", shop[0].slug, "--reference", "INV-HAND")
    assert (Invoice.objects.get(pk=invoice.pk).status, _check(invoice).status) == ("expired", "expired")
    assert Event.objects.filter(type="invoice.expired").count() == 1  # looked at again, not expired again
    fake.add("INV-HAND", code="T-H", status=4)
    call_command("payments", "check", "--tenant", shop[0].slug, "--reference", "INV-HAND")
    assert (Invoice.objects.get(pk=invoice.pk).status, _check(invoice).status) == ("paid", "paid")


def test_a_cancelled_invoice_paid_anyway_raises_payment_unexpected_once(shop, fake):
    invoice = open_invoice(shop, "INV-CX")
    cancel_invoice(tenant=shop[0], reference="INV-CX", reason="sent twice")
    tx = GatewayTransaction(code="T-CX", reference="INV-CX", status=3, gross_amount=Decimal("100"))
    assert apply_transactions(invoice_id=invoice.id, transactions=[tx], source="webhook") == "unexpected"
    assert apply_transactions(invoice_id=invoice.id, transactions=[tx], source="webhook") == "unpaid"  # once
    available = GatewayTransaction(code="T-CX", reference="INV-CX", status=4, gross_amount=Decimal("100"))
    apply_transactions(invoice_id=invoice.id, transactions=[available], source="poll")  # the same money, later
    assert Invoice.objects.get(pk=invoice.pk).status == "cancelled"
    event = Event.objects.get(type="payment.unexpected")
    assert event.payload["gateway_transaction"] == "T-CX" and event.payload["status"] == "cancelled"
    alert = Alert.objects.get(type="payment.unexpected")
    assert "INV-CX" in alert.message and alert.data["gross_amount"] == "100"
    assert CheckLog.objects.filter(invoice=invoice, outcome="unexpected").count() == 2  # each look is logged


def test_cancelled_invoices_are_not_checked(shop, fake):
    invoice = open_invoice(shop, "INV-C")
    cancel_invoice(tenant=shop[0], reference="INV-C", reason="duplicate")
    assert _run(T0 + timedelta(hours=1)).checked == 0
    assert _check(invoice).status == "cancelled"


def test_webhook_and_poll_apply_the_payment_once(shop, fake):
    invoice = open_invoice(shop, "INV-W")
    fake.add("INV-W", code="T-9", status=4, notification="NC-1")
    response = Client().post(f"/webhooks/pagseguro/{shop[0].slug}",
                             {"notificationCode": "NC-1", "notificationType": "transaction"})
    assert response.status_code == 200
    again = Client().post(f"/webhooks/pagseguro/{shop[0].slug}",
                          {"notificationCode": "NC-1", "notificationType": "transaction"})
    assert again.status_code == 200 and InboundNotification.objects.count() == 1
    note = InboundNotification.objects.get()
    tx = GatewayTransaction(code="T-9", reference="INV-W", status=4, gross_amount=Decimal("100"))
    results = [resolve_notification(notification_id=note.id),
               apply_transactions(invoice_id=invoice.id, transactions=[tx], source="poll")]
    assert sorted(results) == ["applied", "unpaid"]  # the second found it paid
    assert Event.objects.filter(type="invoice.paid").count() == 1
    assert Invoice.objects.get(pk=invoice.pk).paid_via == "webhook"
    drain()  # the queued resolution finds the notification done
    assert Event.objects.filter(type="invoice.paid").count() == 1


def test_a_later_refund_raises_payment_reversed_instead_of_unpaying(shop, fake):
    invoice = open_invoice(shop, "INV-R")
    fake.add("INV-R", code="T-5", status=3)
    _run(T0 + timedelta(minutes=15))
    fake.add("INV-R", code="T-5", status=6)
    tx = GatewayTransaction(code="T-5", reference="INV-R", status=6)
    assert apply_transactions(invoice_id=invoice.id, transactions=[tx], source="webhook") == "reversed"
    assert apply_transactions(invoice_id=invoice.id, transactions=[tx], source="poll") == "unpaid"  # once
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.reversed_at is not None
    assert Event.objects.filter(type="payment.reversed").count() == 1
    from tarifa.alerts.models import Alert

    alert = Alert.objects.get(type="payment.reversed")  # someone must decide: bill again or write off
    assert (alert.data["gateway_status"], alert.data["gross_amount"]) == (6, "100.00")
    assert Event.objects.filter(type="alert.raised").count() == 1


def test_bad_xml_or_unknown_status_never_pays_and_is_the_last_error(shop, fake):
    invoice = open_invoice(shop, "INV-X")
    fake.fail_next("malformed")
    _run(T0 + timedelta(minutes=15))
    check = _check(invoice)
    assert Invoice.objects.get(pk=invoice.pk).status == "open"
    assert check.last_error.startswith("malformed_xml") and check.consecutive_failures == 1
    assert check.attempts == 0 and check.interval_seconds == 15 * MIN  # the schedule itself did not move
    assert check.next_check_at == T0 + timedelta(minutes=16)  # tried again soon
    fake.add("INV-X", code="T-7", status=99)
    _run(T0 + timedelta(minutes=16))
    assert _check(invoice).last_error.startswith("unknown_status") and Invoice.objects.get(pk=invoice.pk).status == "open"
    fake.transactions.clear()
    _run(T0 + timedelta(minutes=18))
    check = _check(invoice)
    assert (check.last_error, check.consecutive_failures, check.attempts) == ("", 0, 1)


def test_repeated_failures_raise_an_alert_for_the_invoice_and_the_credential(shop, fake):
    update_settings(tenant=shop[0], failure_alert_after=3)
    invoice = open_invoice(shop, "INV-F")
    now = T0 + timedelta(minutes=15)
    for _ in range(3):
        fake.fail_next(500, 500, 500)
        _run(now)
        now = _check(invoice).next_check_at
    raised = {(a.type, a.data.get("reference") or a.data.get("gateway")) for a in Alert.objects.all()}
    assert raised == {("payment_check.failing", "pagseguro"), ("payment_check.failing", "INV-F")}
    assert GatewayCredential.objects.get().consecutive_failures == 3
    _run(now)
    assert GatewayCredential.objects.get().consecutive_failures == 0


def test_a_401_pauses_the_tenants_checks_until_the_credential_is_replaced(shop, fake):
    first, second = open_invoice(shop, "INV-A"), open_invoice(shop, "INV-B")
    fake.fail_next(401)
    _run(T0 + timedelta(minutes=15))
    assert {_check(first).status, _check(second).status} == {"paused"}
    assert GatewayCredential.objects.get().status == "unauthorized"
    assert Alert.objects.filter(type="payment_credential.unauthorized").count() == 1
    assert _run(T0 + timedelta(hours=2)).checked == 0
    set_credential(tenant=shop[0], gateway="pagseguro", base_url=fake.url, email=fake.email, token=fake.token)
    assert {_check(first).status, _check(second).status} == {"pending"}
    assert run_due_checks(worker_id="test").checked == 2


def test_a_401_to_a_credential_replaced_meanwhile_retries_with_the_new_one(shop, fake):
    """The operator fixed the token while a batch was at the gateway with the old one: its 401
    must not pause the new credential (nor every check of the tenant)."""
    from tarifa.payments.services import checking

    invoice = open_invoice(shop, "INV-N")
    set_credential(tenant=shop[0], gateway="pagseguro", base_url=fake.url, email=fake.email, token="OLD")
    now = T0 + timedelta(minutes=15)
    claimed = claim_due_checks(worker_id="test", limit=10, lease_seconds=120, now=now)
    credentials = checking._credentials_for(claimed)
    outcomes = checking._ask_gateways(claimed, credentials)  # 401: the old token
    set_credential(tenant=shop[0], gateway="pagseguro", base_url=fake.url, email=fake.email, token=fake.token)
    checking._apply_outcomes(outcomes, credentials=credentials, worker_id="test", source="poll", now=now)
    assert GatewayCredential.objects.get().status == "active"
    assert (_check(invoice).status, _check(invoice).next_check_at) == ("pending", now)
    assert not Alert.objects.filter(type="payment_credential.unauthorized").exists()
    fake.add("INV-N", code="T-N", status=3)
    assert _run(now).paid == 1


def test_a_killed_checkers_claims_return_after_the_lease(shop, fake):
    invoice = open_invoice(shop, "INV-K")
    due = T0 + timedelta(minutes=15)
    assert len(claim_due_checks(worker_id="dead", limit=10, lease_seconds=120, now=due)) == 1
    assert claim_due_checks(worker_id="other", limit=10, lease_seconds=120, now=due) == []
    assert _run(due + timedelta(seconds=121)).checked == 1
    assert _check(invoice).attempts == 1


def test_the_monthly_close_waits_for_usage_not_folded_yet(shop, fake, plan):
    """Usage of December rated but still waiting for the workers at the close: the invoice would
    have missed it. The close leaves the summary for a later run, once it is folded."""
    from django.test import override_settings

    from tarifa.metering.services.folding import fold_all_pending
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.services.plans import subscribe
    from tarifa.metering.tests.conftest import at, call

    tenant, customer = shop
    subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
    ingest_usage(tenant=tenant, records=[call("d1", "cust-1", 6000, at(5), destination="987654321")])
    fold_all_pending(batch_size=1000)
    with override_settings(TARIFA_API_FOLD_IN_PLACE=False):
        ingest_usage(tenant=tenant, records=[call("d2", "cust-1", 600, at(30), destination="987654321")])
    due = DECEMBER_CLOSE
    assert close_month(now=due) == CloseResult()
    fold_all_pending(batch_size=1000)
    assert close_month(now=due + timedelta(minutes=15)) == CloseResult(invoices=1)
    summary = Summary.objects.get(customer=customer)
    assert Invoice.objects.get().amount == summary.total_amount > 0


@pytest.fixture
def use(shop, plan):
    """cust-1 on the telephony plan; use(id, seconds) rates and folds a December mobile call now."""
    from tarifa.metering.services.folding import fold_all_pending
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.services.plans import subscribe
    from tarifa.metering.tests.conftest import at, call

    tenant, customer = shop
    subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))

    def use(record_id: str, seconds: int) -> None:
        ingest_usage(tenant=tenant, records=[call(record_id, "cust-1", seconds, at(20), destination="987654321")])
        fold_all_pending(batch_size=1000)

    return use


def price_mobile_calls(plan, price: str) -> None:
    """The telephony plan's terms corrected: mobile calls at `price` a minute (30/6), 600 s included."""
    from tarifa.metering.services.plans import replace_plan_terms

    replace_plan_terms(plan=plan, rates=[{"kind": "call.mobile", "destination_prefix": "9", "price": price,
                                          "unit": "second", "block_size": "60", "minimum": "30", "increment": "6"}],
                       allowances=[{"code": "minutes", "kinds": ["call.mobile"], "quantity": "600"}])


def turn_prepaid(customer, *, balance: str) -> None:
    """A postpaid customer gets a wallet holding `balance` BRL and turns prepaid."""
    from tarifa.tenants.services import update_customer
    from tarifa.wallets.services.ledger import configure_wallet, top_up

    configure_wallet(customer=customer, unit="BRL", credit_limit=Decimal(0), low_balance_threshold=None)
    top_up(customer=customer, amount=Decimal(balance), idempotency_key="first", caused_by="test")
    update_customer(customer=customer, billing_mode="prepaid")


def test_usage_folded_after_the_close_is_billed_in_an_adjustment_invoice(shop, fake, use):
    """Late CDRs of December, folded after December's invoice: the next close run bills the
    difference, once; a cancelled invoice counts as billed."""
    tenant, customer = shop
    use("d1", 6000)
    close = DECEMBER_CLOSE
    assert close_month(now=close) == CloseResult(invoices=1)
    first = Invoice.objects.get()
    summary = Summary.objects.get(customer=customer)
    assert first.amount == summary.total_amount > 0
    use("late-1", 600)  # arrives on Jan 3rd
    summary.refresh_from_db()
    later = datetime(2026, 1, 3, 12, 5, tzinfo=dt_timezone.utc)
    assert close_month(now=later) == CloseResult(adjustments=1) and close_month(now=later).made == 0
    adjustment = Invoice.objects.exclude(pk=first.pk).get()
    assert (adjustment.reference, adjustment.amount, adjustment.summary_id, adjustment.due_date) == (
        "TRF-2025-12-cust-1-2", summary.total_amount - first.amount, summary.id, date(2026, 1, 13))
    assert "TRF-2025-12-cust-1" in adjustment.description
    cancel_invoice(tenant=tenant, reference=adjustment.reference, reason="waived")
    assert close_month(now=later + timedelta(days=1)).made == 0  # cancelled: billed all the same


def test_late_usage_is_settled_at_most_once_a_day(shop, fake, use):
    """CDRs trickling in after the close make one adjustment invoice a day (settle_every_days, in
    the tenant's days) for all that came, not one at every run (each a payment to collect); with 0,
    every run that finds some makes one."""
    from tarifa.payments.selectors import billing_gaps

    tenant, customer = shop
    use("d1", 6000)
    run = DECEMBER_CLOSE
    assert close_month(now=run) == CloseResult(invoices=1)
    first = Invoice.objects.get()
    for n in range(6):  # through January 1st (to 18:05): a late December CDR, then a run 3 hours later
        use(f"late-{n}", 120)
        run += timedelta(hours=3)
        assert close_month(now=run) == CloseResult(), run
    [gap] = billing_gaps(now=run)
    assert gap.settles_itself and "at most once in settle_every_days" in gap.problem
    run = datetime(2026, 1, 2, 3, 5, tzinfo=dt_timezone.utc)  # 00:05 on the 2nd
    assert close_month(now=run) == CloseResult(adjustments=1)
    summary = Summary.objects.get(customer=customer)
    adjustment = Invoice.objects.exclude(pk=first.pk).get()
    assert adjustment.amount == summary.total_amount - first.amount == Decimal("3.60")  # 6 × 2 min at 0.30
    use("late-6", 120)
    assert close_month(now=run + timedelta(hours=20)) == CloseResult()  # 20:05 on the 2nd: tomorrow's
    update_settings(tenant=tenant, settle_every_days=0)
    assert close_month(now=run + timedelta(hours=20, minutes=15)) == CloseResult(adjustments=1)
    use("late-7", 120)
    assert close_month(now=run + timedelta(hours=20, minutes=30)) == CloseResult(adjustments=1)
    assert billing_gaps(now=run + timedelta(hours=20, minutes=30)) == []


def test_a_month_is_settled_on_its_last_day_in_the_window_whatever_settle_every_days(shop, fake, use):
    """A change held back by settle_every_days would otherwise fall out of late_usage_months (3:
    December is settled through March 31st) and be left for an operator to settle by hand."""
    from zoneinfo import ZoneInfo

    from tarifa.payments.selectors import billing_gaps

    tenant, customer = shop
    update_settings(tenant=tenant, settle_every_days=7)
    use("d1", 6000)
    assert close_month(now=DECEMBER_CLOSE) == CloseResult(invoices=1)
    sao_paulo = ZoneInfo("America/Sao_Paulo")
    march = lambda day, hour=0: datetime(2026, 3, day, hour, 5, tzinfo=sao_paulo)  # noqa: E731
    use("late-1", 120)
    assert close_month(now=march(27)) == CloseResult(adjustments=1)
    use("late-2", 120)
    assert close_month(now=march(30, 23)) == CloseResult()  # held: settled 3 days ago
    assert close_month(now=march(31)) == CloseResult(adjustments=1)  # the last day: not held
    use("late-3", 120)
    assert close_month(now=march(31, 22)) == CloseResult(adjustments=1)  # every run of that day
    assert close_month(now=march(31, 23)) == CloseResult()
    summary = Summary.objects.get(customer=customer)
    assert sum(i.amount for i in Invoice.objects.all()) == summary.total_amount
    use("late-4", 120)  # after December's last settle: nobody's to settle now
    [gap] = billing_gaps(now=datetime(2026, 4, 1, 3, 5, tzinfo=dt_timezone.utc))
    assert not gap.settles_itself and "by hand" in gap.problem
    assert close_month(now=datetime(2026, 4, 1, 3, 5, tzinfo=dt_timezone.utc)) == CloseResult()


def test_a_weekly_settle_waits_for_seven_of_the_tenants_days():
    from zoneinfo import ZoneInfo

    from tarifa.payments.models import PaymentSettings
    from tarifa.payments.selectors import settling_cutoff

    sao_paulo = ZoneInfo("America/Sao_Paulo")
    now = datetime(2026, 1, 10, 15, 0, tzinfo=sao_paulo)
    assert settling_cutoff(now, PaymentSettings(settle_every_days=7)) == datetime(2026, 1, 4, tzinfo=sao_paulo)
    assert settling_cutoff(now, PaymentSettings(settle_every_days=1)) == datetime(2026, 1, 10, tzinfo=sao_paulo)
    assert settling_cutoff(now, PaymentSettings(settle_every_days=0)) is None


def invoice_then_reverse(tenant, use) -> Invoice:
    """Two December calls (d1, d2) invoiced by the close of January 1st, then d2 reversed: the
    invoice, which now charges more than its summary holds."""
    from tarifa.metering.services.reversal import reverse_usage

    use("d1", 6000)
    use("d2", 1200)
    assert close_month(now=DECEMBER_CLOSE) == CloseResult(invoices=1)
    reverse_usage(tenant=tenant, external_id="d2", reason="test call", caused_by="test")
    return Invoice.objects.get()


def test_a_summary_its_invoices_match_is_settled_on_sqlite_too(shop, fake):
    """31.80 invoiced as 27.00 + 3.60 + 0.60 + 0.60: settled. SQLite adds them as binary floating
    point (31.800000000000004), and had listed the summary as changed after its invoice for ever."""
    from tarifa.payments.selectors import billing_gaps, unsettled

    tenant, customer = shop
    summary = Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                                     total_amount=Decimal("31.80"), record_count=4)
    made = DECEMBER_CLOSE
    for n, amount in enumerate(["27.00", "3.60", "0.60", "0.60"]):
        create_invoice(tenant=tenant, reference=f"TRF-{n}", customer=customer, amount=Decimal(amount),
                       currency="BRL", due_date=date(2026, 1, 10), gateway="pagseguro", summary=summary, now=made)
    assert not unsettled(Summary.objects.all()).exists()
    assert billing_gaps(now=made + timedelta(days=1)) == []


def test_usage_reduced_after_the_close_is_credited_once(shop, fake, use):
    """A reversal (or a re-rate) after December's invoice: the customer was billed more than the
    summary now holds. The close had made nothing (no negative invoice) and the overcharge was
    recorded nowhere; it now makes a credit note for the difference, once, and later usage bills
    only what goes beyond the credited total. A cancelled invoice is never credited."""
    from tarifa.metering.services.reversal import reverse_usage

    tenant, customer = shop
    invoice = invoice_then_reverse(tenant, use)
    summary = Summary.objects.get(customer=customer)
    later = datetime(2026, 1, 5, 12, 5, tzinfo=dt_timezone.utc)
    assert close_month(now=later) == CloseResult(credit_notes=1) and close_month(now=later).made == 0
    note = CreditNote.objects.get()
    assert (note.reference, note.amount, note.summary_id, note.customer_id) == (
        "TRF-2025-12-cust-1-C1", invoice.amount - summary.total_amount, summary.id, customer.id)
    assert note.amount > 0 and "TRF-2025-12-cust-1" in note.reason
    event = Event.objects.get(type="credit_note.created")
    assert (event.payload["reference"], event.payload["amount"], event.payload["period"]) == (
        note.reference, str(note.amount), "2025-12")
    use("late-1", 1200)  # as much as was credited: billed again, net of the credit
    summary.refresh_from_db()
    assert close_month(now=later + timedelta(days=1)) == CloseResult(adjustments=1)
    adjustment = Invoice.objects.exclude(pk=invoice.pk).get()
    assert adjustment.amount == summary.total_amount - (invoice.amount - note.amount) == note.amount
    cancel_invoice(tenant=tenant, reference=adjustment.reference, reason="waived")
    reverse_usage(tenant=tenant, external_id="late-1", reason="test call", caused_by="test")
    assert close_month(now=later + timedelta(days=2)).made == 0  # its invoice was cancelled: nothing charged
    reverse_usage(tenant=tenant, external_id="d1", reason="test call", caused_by="test")
    assert close_month(now=later + timedelta(days=3)) == CloseResult(credit_notes=1)
    summary.refresh_from_db()
    assert (summary.total_amount, CreditNote.objects.order_by("id").last().reference) == (0, "TRF-2025-12-cust-1-C2")
    assert sum(CreditNote.objects.values_list("amount", flat=True)) == invoice.amount - summary.total_amount


def test_an_invoice_its_credit_notes_reduced_cannot_be_cancelled(shop, fake, use):
    """December billed, then a call reversed: a credit note. Cancelled now, the invoice would leave
    the customer credited for money never charged, so it is refused and stays as it was. Once a
    later invoice of the month charges more than the credit, one of the two may be cancelled."""
    from tarifa.core.errors import Conflict

    tenant, _customer = shop
    invoice = invoice_then_reverse(tenant, use)
    close = DECEMBER_CLOSE
    assert close_month(now=close + timedelta(days=1)) == CloseResult(credit_notes=1)
    note = CreditNote.objects.get()
    with pytest.raises(Conflict) as refused:
        cancel_invoice(tenant=tenant, reference=invoice.reference, reason="waived")
    assert refused.value.code == "invoice_credited"
    assert note.reference in refused.value.message
    assert f"balance after them is {(invoice.amount - note.amount):.2f} BRL" in refused.value.message
    invoice.refresh_from_db()
    assert (invoice.status, _check(invoice).status) == ("open", "pending")
    assert not Event.objects.filter(type="invoice.cancelled").exists()
    use("late-1", 6000)  # more than was credited: an adjustment invoice
    assert close_month(now=close + timedelta(days=2)) == CloseResult(adjustments=1)
    adjustment = Invoice.objects.exclude(pk=invoice.pk).get()
    assert adjustment.amount > note.amount
    assert cancel_invoice(tenant=tenant, reference=invoice.reference, reason="waived")[1] is True
    with pytest.raises(Conflict):  # the credit now rests on the adjustment alone
        cancel_invoice(tenant=tenant, reference=adjustment.reference, reason="waived")


def test_monthly_close_turns_each_postpaid_summary_into_one_invoice(shop, fake):
    tenant, customer = shop
    Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                           total_amount=Decimal("87.30"), record_count=3)
    from tarifa.tenants.services import create_customer

    idle, _ = create_customer(tenant=tenant, external_id="idle")
    Summary.objects.create(tenant=tenant, customer=idle, period="2025-12", currency="BRL")  # zero: no invoice
    texter, _ = create_customer(tenant=tenant, external_id="texter")  # on a plan counted in a credit unit
    Summary.objects.create(tenant=tenant, customer=texter, period="2025-12", currency="MESSAGES",
                           total_amount=Decimal("500"), record_count=500)  # not money: not invoiced
    before = datetime(2026, 1, 1, 3, 4, tzinfo=dt_timezone.utc)  # 00:04 in São Paulo
    due = DECEMBER_CLOSE
    assert close_month(now=before).made == 0
    assert close_month(now=due) == CloseResult(invoices=1)
    assert close_month(now=due).made == 0  # twice: still one
    invoice = Invoice.objects.get()
    assert (invoice.reference, invoice.amount, invoice.due_date, invoice.summary.period) == (
        "TRF-2025-12-cust-1", Decimal("87.30"), date(2026, 1, 11), "2025-12")
    assert (_check(invoice).status, _check(invoice).next_check_at) == ("pending", due + timedelta(minutes=15))
    created = Event.objects.get(type="invoice.created")
    assert (created.payload["reference"], created.payload["amount"]) == ("TRF-2025-12-cust-1", "87.30")


def test_the_close_invoices_whole_minor_units_and_settles_without_drift(shop, fake):
    """Usage charged to fractions of a cent (a token plan with 6 places) is invoiced in cents, half
    up; late usage is billed when the rounded amount moves, so the invoices always come to the
    summary rounded, never to an adjustment of 0.0030 (unpayable) or a drift of cents."""
    from tarifa.payments.selectors import billing_gaps

    tenant, customer = shop
    summary = Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                                     total_amount=Decimal("12.3456"), record_count=3)
    close = DECEMBER_CLOSE
    assert close_month(now=close) == CloseResult(invoices=1)
    assert Invoice.objects.get().amount == Decimal("12.35")
    for total, made in (("12.3486", CloseResult()), ("12.3549", CloseResult()),
                        ("12.3550", CloseResult(adjustments=1)), ("12.3449", CloseResult(credit_notes=1))):
        Summary.objects.filter(pk=summary.pk).update(total_amount=Decimal(total))
        close += timedelta(days=1)  # settled at most once a day
        assert close_month(now=close) == made, total
        assert billing_gaps(now=close) == []
    assert Invoice.objects.order_by("id").last().amount == Decimal("0.01")
    assert CreditNote.objects.get().amount == Decimal("0.02")  # 12.36 invoiced, 12.34 owed
    Summary.objects.create(tenant=tenant, customer=customer, period="2025-11", currency="JPY",
                           total_amount=Decimal("1500.5"), record_count=1)  # no minor unit: yen
    assert close_month(now=close) == CloseResult(invoices=1)
    assert Invoice.objects.get(currency="JPY").amount == Decimal("1501")


def test_the_close_leaves_a_summary_whose_reference_an_api_invoice_took(shop, fake):
    """An invoice made through the API under the close's name for a summary: the close makes no
    second one for it (one by one that had been a conflict), and goes on with the others."""
    from tarifa.tenants.services import create_customer

    tenant, customer = shop
    other, _ = create_customer(tenant=tenant, external_id="cust-2")
    for owner in (customer, other):
        Summary.objects.create(tenant=tenant, customer=owner, period="2025-12", currency="BRL",
                               total_amount=Decimal("10.00"), record_count=1)
    open_invoice(shop, "TRF-2025-12-cust-1", amount="99.00")
    assert close_month(now=DECEMBER_CLOSE) == CloseResult(invoices=1)
    assert sorted(Invoice.objects.values_list("reference", "amount")) == [
        ("TRF-2025-12-cust-1", Decimal("99.00")), ("TRF-2025-12-cust-2", Decimal("10.00"))]


def test_a_tariff_correction_after_the_close_is_credited(shop, fake, plan, use):
    """A price lowered and the closed month re-rated (tarifa usage rerate): the customer had been
    invoiced at the old price, and the next close run credits the difference."""
    tenant, customer = shop
    use("d1", 6000)  # 5,400 s beyond the allowance, at 0.30 a minute
    close = DECEMBER_CLOSE
    assert close_month(now=close) == CloseResult(invoices=1)
    assert Invoice.objects.get().amount == Decimal("27.00")
    price_mobile_calls(plan, "0.20")
    call_command("usage", "rerate", "--tenant", tenant.slug, "--period", "2025-12")
    assert Summary.objects.get(customer=customer).total_amount == Decimal("18.00")
    assert close_month(now=close + timedelta(days=1)) == CloseResult(credit_notes=1)
    assert CreditNote.objects.get().amount == Decimal("9.00")


def test_a_rerate_keeps_who_paid_each_call_after_a_change_of_billing_mode(shop, fake, plan, use):
    """December's first call postpaid, its second paid by the wallet (the customer turned prepaid);
    a price corrected and December re-rated, twice, the billing mode changed between: each call
    is charged again the way it was paid. By the mode of the day, the postpaid call had gone to
    the wallet, failing for want of credit, and the invoiced month had been credited whole."""
    from tarifa.metering.services.reconciliation import find_differences, rerate_period
    from tarifa.tenants.services import update_customer
    from tarifa.wallets.models import Wallet

    tenant, customer = shop

    def reprice(price: str) -> None:
        price_mobile_calls(plan, price)
        rerate_period(tenant=tenant, period="2025-12")

    use("postpaid-1", 6000)  # 5,400 s beyond the allowance at 0.30 a minute: 27.00
    turn_prepaid(customer, balance="10")
    use("prepaid-1", 1200)  # 6.00 from the wallet
    close = DECEMBER_CLOSE
    assert close_month(now=close) == CloseResult(invoices=1) and Invoice.objects.get().amount == Decimal("27.00")
    reprice("0.20")  # 18.00 on the invoice, 4.00 from the wallet
    summary = Summary.objects.get(customer=customer)
    assert (summary.total_amount, summary.wallet_paid_amount) == (Decimal("22.00"), Decimal("4.00"))
    assert Wallet.objects.get(customer=customer).balance == Decimal("6.00")
    assert close_month(now=close + timedelta(days=1)) == CloseResult(credit_notes=1)
    assert CreditNote.objects.get().amount == Decimal("9.00")
    update_customer(customer=customer, billing_mode="postpaid")
    reprice("0.30")  # back to 27.00 and 6.00: the wallet still pays its call
    summary.refresh_from_db()
    assert (summary.total_amount, summary.wallet_paid_amount) == (Decimal("33.00"), Decimal("6.00"))
    assert Wallet.objects.get(customer=customer).balance == Decimal("4.00")
    assert close_month(now=close + timedelta(days=2)) == CloseResult(adjustments=1)
    assert Invoice.objects.order_by("id").last().amount == Decimal("9.00")
    assert find_differences() == []


def test_how_many_closed_months_the_close_settles_is_a_setting(shop, fake, use):
    """Usage of December that changed in March: settled while December is within the tenant's
    late_usage_months (3 by default), left alone beyond it or with 0."""
    tenant, customer = shop
    use("d1", 6000)
    assert close_month(now=DECEMBER_CLOSE) == CloseResult(invoices=1)
    use("late-1", 600)
    march = datetime(2026, 3, 10, 12, tzinfo=dt_timezone.utc)  # December is 3 closed months back
    update_settings(tenant=tenant, late_usage_months=2)
    assert close_month(now=march).made == 0
    update_settings(tenant=tenant, late_usage_months=0)
    assert close_month(now=march).made == 0
    update_settings(tenant=tenant, late_usage_months=3)
    assert close_month(now=march) == CloseResult(adjustments=1)


def test_with_grace_days_the_close_waits_and_late_cdrs_are_in_the_first_invoice(shop, fake, use):
    """close_grace_days 3: December is closed on January 4th at 00:05 (São Paulo), so its CDRs
    imported on the 2nd are in its one invoice, with no adjustment; until then reconcile does not
    count it as missed."""
    from tarifa.payments.selectors import billing_gaps

    tenant, _customer = shop
    update_settings(tenant=tenant, close_grace_days=3)
    use("d1", 6000)  # 27.00
    assert close_month(now=DECEMBER_CLOSE).made == 0
    use("late-1", 1200)  # 6.00, imported on January 2nd
    assert billing_gaps(now=datetime(2026, 1, 2, 12, tzinfo=dt_timezone.utc)) == []
    assert close_month(now=datetime(2026, 1, 4, 3, 4, tzinfo=dt_timezone.utc)).made == 0  # 00:04 on the 4th
    assert close_month(now=datetime(2026, 1, 4, 3, 5, tzinfo=dt_timezone.utc)) == CloseResult(invoices=1)
    assert Invoice.objects.get().amount == Decimal("33.00")
    assert close_month(now=datetime(2026, 1, 20, 12, tzinfo=dt_timezone.utc)).made == 0


def test_reconcile_finds_closed_months_their_invoices_do_not_match(shop, fake):
    """What the close has not settled: within the months it answers for (late_usage_months), what
    its next run settles; before them, a summary changed after its invoice, which nobody will."""
    from tarifa.payments.selectors import billing_gaps
    from tarifa.tenants.services import create_customer

    tenant, customer = shop
    other, _ = create_customer(tenant=tenant, external_id="cust-2")

    def summary(owner, period, total):
        return Summary.objects.create(tenant=tenant, customer=owner, period=period, currency="BRL",
                                      total_amount=Decimal(total), record_count=1)

    grew = summary(customer, "2025-12", "10.00")
    old = summary(customer, "2025-09", "10.00")
    for month, row in (("2025-12", grew), ("2025-09", old)):
        create_invoice(tenant=tenant, reference=f"TRF-{month}", customer=customer, amount=Decimal("10.00"),
                       currency="BRL", due_date=date(2026, 1, 10), gateway="pagseguro", summary=row,
                       now=DECEMBER_CLOSE)
    Summary.objects.filter(pk__in=[grew.pk, old.pk]).update(total_amount=Decimal("12.00"))
    summary(other, "2025-11", "5.00")  # never invoiced (zero at its close, then late CDRs)
    summary(other, "2025-06", "5.00")  # history from before the months the close answers for
    now = datetime(2026, 1, 5, 12, tzinfo=dt_timezone.utc)
    gaps = {(g.customer, g.period): g for g in billing_gaps(now=now)}
    assert sorted(gaps) == [("cust-1", "2025-09"), ("cust-1", "2025-12"), ("cust-2", "2025-11")]
    assert gaps["cust-1", "2025-12"].settles_itself and gaps["cust-1", "2025-12"].invoiced == Decimal("10.00")
    assert gaps["cust-2", "2025-11"].settles_itself and "not invoiced yet" in gaps["cust-2", "2025-11"].problem
    assert not gaps["cust-1", "2025-09"].settles_itself and "by hand" in gaps["cust-1", "2025-09"].problem
    assert [g.period for g in billing_gaps(now=now, customer=other)] == ["2025-11"]
    assert close_month(now=now) == CloseResult(invoices=1, adjustments=1)
    assert Invoice.objects.get(customer=other).reference == "TRF-2025-11-cust-2"
    assert [(g.customer, g.period) for g in billing_gaps(now=now)] == [("cust-1", "2025-09")]


def test_the_reconcile_command_fails_on_what_the_close_will_not_settle(shop, fake, plan, capsys):
    from tarifa.metering.periods import months_before
    from tarifa.metering.services.folding import fold_all_pending
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.services.plans import subscribe
    from tarifa.metering.tests.conftest import call

    tenant, customer = shop
    subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
    call_command("billing", "reconcile")
    assert "every closed month's summary equals its invoices" in capsys.readouterr().out
    year, month = map(int, months_before(timezone.now().astimezone(tenant.tzinfo).date(), 5).split("-"))
    when = datetime(year, month, 15, 12, tzinfo=dt_timezone.utc)
    ingest_usage(tenant=tenant, records=[call("m1", "cust-1", 1200, when, destination="987654321")])
    fold_all_pending(batch_size=1000)
    summary = Summary.objects.get(customer=customer)
    create_invoice(tenant=tenant, reference="TRF-OLD", customer=customer, amount=summary.total_amount - 1,
                   currency="BRL", due_date=date(2026, 1, 10), gateway="pagseguro", summary=summary)
    with pytest.raises(SystemExit) as exit_info:
        call_command("billing", "reconcile")
    assert exit_info.value.code == 1
    out = capsys.readouterr()
    assert "settle it by hand" in out.out and "1 difference(s) found" in out.err


def test_the_close_invoices_an_earlier_month_it_had_nothing_to_invoice_for(shop, fake, plan):
    """November all within its allowance: nothing to invoice at its close. Late CDRs of November
    that go beyond the allowance, folded in January, had then been billed never; the close
    invoices them (within late_usage_months). A month a prepaid wallet paid, before the customer
    turned postpaid, is not invoiced again."""
    from tarifa.metering.services.folding import fold_all_pending
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.services.plans import subscribe
    from tarifa.metering.tests.conftest import at, call
    from tarifa.tenants.services import update_customer
    from tarifa.wallets.tests.conftest import prepaid_customer

    tenant, customer = shop
    subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
    switched = prepaid_customer(tenant, plan, "was-prepaid", balance="100")

    def use(record_id: str, who: str, seconds: int) -> None:
        ingest_usage(tenant=tenant, records=[call(record_id, who, seconds, at(20, month=11), destination="987654321")])
        fold_all_pending(batch_size=1000)

    use("n1", "cust-1", 300)  # within the 600 s allowance
    use("p1", "was-prepaid", 6000)  # paid by the wallet
    assert close_month(now=datetime(2025, 12, 1, 3, 5, tzinfo=dt_timezone.utc)).made == 0
    update_customer(customer=switched, billing_mode="postpaid")
    use("n2", "cust-1", 1200)  # November's late CDR, beyond the allowance
    january = DECEMBER_CLOSE
    assert close_month(now=january) == CloseResult(invoices=1)
    invoice = Invoice.objects.get()
    assert (invoice.reference, invoice.amount) == ("TRF-2025-11-cust-1", Decimal("4.50"))
    assert close_month(now=january + timedelta(days=1)).made == 0


def test_a_customer_turned_postpaid_is_invoiced_only_what_its_wallet_did_not_pay(shop, fake, plan):
    """Prepaid until December 10th, postpaid after: December's summary holds both. The close had
    invoiced it whole, charging what the wallet had paid a second time."""
    from tarifa.metering.services.folding import fold_all_pending
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.services.reversal import reverse_usage
    from tarifa.metering.tests.conftest import at, call
    from tarifa.tenants.services import update_customer
    from tarifa.wallets.models import Wallet
    from tarifa.wallets.tests.conftest import prepaid_customer

    tenant, _customer = shop
    switched = prepaid_customer(tenant, plan, "switched", balance="100")

    def use(record_id: str, day: int, seconds: int) -> None:
        ingest_usage(tenant=tenant, records=[call(record_id, "switched", seconds, at(day), destination="987654321")])
        fold_all_pending(batch_size=1000)

    use("prepaid-1", 5, 6000)  # 600 s from the allowance, 5,400 s paid by the wallet: 27.00
    assert Wallet.objects.get(customer=switched).balance == Decimal("73.00")
    update_customer(customer=switched, billing_mode="postpaid")
    use("postpaid-1", 20, 1200)  # 6.00, to invoice
    summary = Summary.objects.get(customer=switched)
    assert summary.total_amount == Decimal("33.00")
    close = DECEMBER_CLOSE
    assert close_month(now=close) == CloseResult(invoices=1)
    assert Invoice.objects.get().amount == Decimal("6.00")
    assert close_month(now=close + timedelta(days=1)).made == 0  # no adjustment for the wallet's part
    reverse_usage(tenant=tenant, external_id="prepaid-1", reason="test call", caused_by="test")  # refunded
    assert Wallet.objects.get(customer=switched).balance == Decimal("100.00")
    assert close_month(now=close + timedelta(days=2)).made == 0  # nothing of the invoice to credit
    reverse_usage(tenant=tenant, external_id="postpaid-1", reason="test call", caused_by="test")
    assert close_month(now=close + timedelta(days=3)) == CloseResult(credit_notes=1)
    assert CreditNote.objects.get().amount == Decimal("6.00")


def test_a_customer_turned_prepaid_is_invoiced_the_days_before(shop, fake, plan, use):
    """Postpaid for December's first calls, prepaid for the later ones: December's summary holds
    both. The close had looked at postpaid customers only, so the postpaid calls were never
    invoiced."""
    from tarifa.wallets.models import Wallet

    tenant, customer = shop
    use("postpaid-1", 6000)  # 600 s from the allowance, 5,400 s at 0.30 a minute: 27.00 to invoice
    turn_prepaid(customer, balance="100")
    use("prepaid-1", 1200)  # 6.00 from the wallet
    assert Wallet.objects.get(customer=customer).balance == Decimal("94.00")
    summary = Summary.objects.get(customer=customer)
    assert (summary.total_amount, summary.wallet_paid_amount) == (Decimal("33.00"), Decimal("6.00"))
    close = DECEMBER_CLOSE
    assert close_month(now=close) == CloseResult(invoices=1)
    assert Invoice.objects.get().amount == Decimal("27.00")
    use("prepaid-late", 1200)  # a late CDR, paid by the wallet: nothing more to invoice
    assert close_month(now=close + timedelta(days=1)).made == 0
    from tarifa.metering.services.reversal import reverse_usage

    reverse_usage(tenant=tenant, external_id="prepaid-1", reason="test call", caused_by="test")  # refunded
    assert close_month(now=close + timedelta(days=2)).made == 0
    reverse_usage(tenant=tenant, external_id="postpaid-1", reason="test call", caused_by="test")
    assert close_month(now=close + timedelta(days=3)) == CloseResult(credit_notes=1)
    assert CreditNote.objects.get().amount == Decimal("27.00")
    summary.refresh_from_db()
    assert (summary.total_amount, summary.wallet_paid_amount) == (Decimal("6.00"), Decimal("6.00"))
