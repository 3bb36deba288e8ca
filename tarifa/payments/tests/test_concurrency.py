"""Payment checks under real concurrency on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tarifa.events.models import Event
from tarifa.payments.gateways import GatewayTransaction
from tarifa.payments.models import CheckLog, Invoice, PaymentCheck
from tarifa.payments.services.checking import apply_transactions
from tarifa.payments.tests.conftest import open_invoice
from tarifa.runtime.services import enqueue
from tarifa.runtime.testing import hold_in_thread, run_in_threads, spawn
from tarifa.runtime.tests.test_processes import FAST, _stop, _wait

pytestmark = pytest.mark.django_db(transaction=True)


def test_webhook_and_polls_racing_pay_once(postgres, shop, fake):
    invoice = open_invoice(shop, "RACE-1", now=timezone.now())
    tx = GatewayTransaction(code="T-1", reference="RACE-1", status=3, gross_amount=Decimal("100"))
    sources = ["webhook", "poll", "poll", "webhook", "poll", "poll"]
    results = run_in_threads(lambda i: apply_transactions(invoice_id=invoice.id, transactions=[tx],
                                                          source=sources[i]), len(sources))
    assert sorted(results).count("paid") == 1
    assert Event.objects.filter(type="invoice.paid").count() == 1
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"


def test_two_worker_processes_check_every_due_invoice_once(postgres, shop, fake, tmp_path):
    fake.delay = 0.02
    past = timezone.now() - timedelta(hours=1)
    for i in range(300):
        open_invoice(shop, f"W-{i}", now=past)
        if i % 10 == 0:
            fake.add(f"W-{i}", code=f"T-{i}", status=3)
    for _ in range(4):
        enqueue("payments.check_due")
    env = {**FAST, "TARIFA_PAYMENT_CHECK_BATCH": "25"}
    workers = [spawn(["worker"], env=env, log_path=str(tmp_path / f"w{i}.log")) for i in range(2)]
    try:
        _wait(lambda: not PaymentCheck.objects.filter(status__in=["pending", "processing"],
                                                      next_check_at__lte=timezone.now()).exists(),
              60, "the due checks were not all run")
    finally:
        _stop(workers)
    assert Invoice.objects.filter(status="paid").count() == 30
    assert PaymentCheck.objects.filter(status="pending", attempts=1).count() == 270
    assert CheckLog.objects.count() == 300  # each due invoice checked exactly once
    assert Event.objects.filter(type="invoice.paid").count() == 30


def test_an_expiry_and_a_webhook_paying_the_same_invoice_neither_deadlock_nor_both_announce(postgres, shop, fake):
    """The expiry had updated the check, then the invoice; a webhook paying it locks the invoice,
    then the check: each could hold what the other waited for (a deadlock), and an invoice the
    webhook paid meanwhile had its invoice.expired sent too. The expiry now takes the invoice first."""
    from tarifa.payments.services.checking import run_due_checks
    from tarifa.payments.services.credentials import update_settings

    update_settings(tenant=shop[0], expire_after_days=1)
    invoice = open_invoice(shop, "EXP-1", now=timezone.now() - timedelta(days=2))
    tx = GatewayTransaction(code="T-E", reference="EXP-1", status=3, gross_amount=Decimal("100"))
    webhook = hold_in_thread(  # the webhook holds the invoice, as apply_transactions begins; then pays it
        lambda: Invoice.objects.select_for_update().get(pk=invoice.pk),
        lambda: apply_transactions(invoice_id=invoice.id, transactions=[tx], source="webhook"))
    failures = []
    try:
        run_due_checks(worker_id="test")  # not found at the gateway, past its expiry: expires it
    except Exception as error:  # reported below
        failures.append(error)
    assert failures + webhook() == []
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"
    assert PaymentCheck.objects.get(invoice=invoice).status == "paid"
    assert not Event.objects.filter(type="invoice.expired").exists()
    assert Event.objects.filter(type="invoice.paid").count() == 1


def test_two_monthly_closes_at_once_make_each_invoice_once(postgres, shop, fake):
    from tarifa.metering.models import Summary
    from tarifa.payments.services.invoices import close_month
    from tarifa.tenants.services import create_customer

    tenant = shop[0]
    for n in range(1200):  # more than one chunk
        customer, _ = create_customer(tenant=tenant, external_id=f"m-{n}")
        Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                               total_amount=Decimal("1.00") + n, record_count=1)
    due = timezone.now().replace(year=2026, month=1, day=1, hour=3, minute=5)
    made = run_in_threads(lambda _i: close_month(now=due), 2)
    assert sum(m.invoices for m in made) == 1200 == Invoice.objects.count() == PaymentCheck.objects.count()
    assert Event.objects.filter(type="invoice.created").count() == 1200


def test_two_closes_at_once_settle_each_changed_summary_once(postgres, shop, fake):
    """Summaries that grew or fell after their invoice, settled by two close runs at once: each
    gets one adjustment invoice or one credit note (the summary lock, then the unique reference)."""
    from django.db.models import F

    from tarifa.metering.models import Summary
    from tarifa.payments.models import CreditNote
    from tarifa.payments.services.invoices import close_month
    from tarifa.tenants.services import create_customer

    tenant = shop[0]
    for n in range(60):
        customer, _ = create_customer(tenant=tenant, external_id=f"s{n:02d}")
        Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                               total_amount=Decimal("50.00"), record_count=1)
    due = timezone.now().replace(year=2026, month=1, day=1, hour=3, minute=5)
    assert close_month(now=due).invoices == 60
    summaries = Summary.objects.order_by("id")
    grew, fell = [s.id for s in summaries[:30]], [s.id for s in summaries[30:]]
    Summary.objects.filter(id__in=grew).update(total_amount=F("total_amount") + Decimal("5.00"))
    Summary.objects.filter(id__in=fell).update(total_amount=F("total_amount") - Decimal("7.00"))
    made = run_in_threads(lambda _i: close_month(now=due + timedelta(days=2)), 2)
    assert (sum(m.adjustments for m in made), sum(m.credit_notes for m in made), sum(m.invoices for m in made)) == (
        30, 30, 0)
    assert sorted(Invoice.objects.filter(summary_id__in=grew).exclude(reference__endswith="-2")
                  .values_list("summary_id", flat=True)) == grew  # the first invoices, untouched
    assert sorted(Invoice.objects.filter(reference__endswith="-2").values_list("summary_id", flat=True)) == grew
    assert set(Invoice.objects.filter(reference__endswith="-2").values_list("amount", flat=True)) == {Decimal("5.00")}
    assert sorted(CreditNote.objects.values_list("summary_id", flat=True)) == fell
    assert set(CreditNote.objects.values_list("amount", flat=True)) == {Decimal("7.00")}
    assert Event.objects.filter(type="credit_note.created").count() == 30
    assert close_month(now=due + timedelta(days=3)).made == 0


def test_a_cancel_waits_for_a_close_crediting_the_invoice_and_then_refuses(postgres, shop, fake):
    """A close run settling a summary that fell (a credit note) while the operator cancels its
    invoice: the cancel waits for the close's lock on the summary, then sees the credit note and
    refuses (invoice_credited). Locking the invoice alone, it had been cancelled between the
    close's reading it open and its crediting it: credit for money never charged."""
    from tarifa.core.errors import Conflict
    from tarifa.metering.models import Summary
    from tarifa.payments.models import CreditNote
    from tarifa.payments.services.invoices import cancel_invoice, close_month

    tenant, customer = shop
    summary = Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                                     total_amount=Decimal("50.00"), record_count=1)
    due = timezone.now().replace(year=2026, month=1, day=1, hour=3, minute=5)
    assert close_month(now=due).invoices == 1
    Summary.objects.filter(pk=summary.pk).update(total_amount=Decimal("43.00"))
    def credit() -> None:
        assert close_month(now=due + timedelta(days=1)).credit_notes == 1

    close = hold_in_thread(  # a close run holding the summary, as it does while it settles it
        lambda: Summary.objects.select_for_update(no_key=True).get(pk=summary.pk), credit)
    with pytest.raises(Conflict) as refused:
        cancel_invoice(tenant=tenant, reference="TRF-2025-12-cust-1", reason="waived")
    assert close() == []
    assert refused.value.code == "invoice_credited"
    assert Invoice.objects.get(reference="TRF-2025-12-cust-1").status == "open"
    assert CreditNote.objects.get().amount == Decimal("7.00")
