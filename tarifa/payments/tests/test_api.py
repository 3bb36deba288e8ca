"""Invoices API, webhook endpoint, stats and the CLI."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client

from tarifa.payments.models import Invoice
from tarifa.runtime.testing import drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop_api(api, fake):
    assert api.put("/api/v1/payments/gateways/pagseguro", {"base_url": fake.url, "email": fake.email,
                                                           "token": fake.token}).status_code == 200
    assert api.post("/api/v1/customers", {"external_id": "c-1"}).status_code == 201
    return api


BODY = {"reference": "ORD-1", "customer": "c-1", "amount": "150.00", "currency": "BRL", "due_date": "2025-12-20",
        "payment_link": "https://pag.ae/abc", "description": "Plan Pro"}


def test_invoices_are_idempotent_on_reference_and_show_their_checks(shop_api):
    api = shop_api
    first, again = api.post("/api/v1/invoices", BODY), api.post("/api/v1/invoices", BODY)
    assert (first.status_code, again.status_code) == (201, 200)
    body = first.json()
    assert body["status"] == "open" and body["check"]["status"] == "pending" and body["checks"] == []
    clash = api.post("/api/v1/invoices", {**BODY, "amount": "151.00"})
    assert clash.status_code == 409 and clash.json()["code"] == "invoice_exists"
    assert api.post("/api/v1/invoices", {**BODY, "reference": "X", "customer": "nobody"}).status_code == 404
    bad = api.post("/api/v1/invoices", {**BODY, "reference": "Y", "amount": "-1"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_amount"
    assert api.post("/api/v1/invoices", {**BODY, "reference": "Z", "gateway": "paypal"}).json()["code"] == "unknown_gateway"
    listed = api.get("/api/v1/invoices", status="open").json()
    assert [i["reference"] for i in listed["items"]] == ["ORD-1"]
    assert api.get("/api/v1/invoices", status="unpaid").status_code == 422  # not an empty list


def test_check_now_webhook_and_history(shop_api, fake, tenant):
    api = shop_api
    api.post("/api/v1/invoices", BODY)
    assert api.post("/api/v1/invoices/ORD-1/check").json() == {"checked": 1, "paid": 0, "failed": 0, "expired": 0}
    fake.add("ORD-1", code="TX-1", status=3, gross="150.00", fee="5.00", notification="N-77")
    response = Client().post(f"/webhooks/pagseguro/{tenant.slug}",
                             {"notificationCode": "N-77", "notificationType": "transaction"})
    assert response.status_code == 200
    drain()
    invoice = api.get("/api/v1/invoices/ORD-1").json()
    assert invoice["status"] == "paid" and invoice["paid_via"] == "webhook" and invoice["transaction_code"] == "TX-1"
    assert Decimal(invoice["net_amount"]) == Decimal("145.00") and invoice["check"]["status"] == "paid"
    assert [c["outcome"] for c in invoice["checks"]] == ["paid", "not_found"]
    assert invoice["transactions"][0]["status"] == 3
    assert api.post("/api/v1/invoices/ORD-1/cancel", {}).json()["code"] == "invoice_not_open"
    assert Client().post("/webhooks/pagseguro/nobody", {"notificationCode": "x"}).status_code == 404
    assert Client().post(f"/webhooks/pagseguro/{tenant.slug}", {}).status_code == 400
    too_long = Client().post(f"/webhooks/pagseguro/{tenant.slug}", {"notificationCode": "N" * 101})
    assert too_long.status_code == 400 and too_long.json()["message"] == "notificationCode is longer than 100 characters."


def test_cancel_and_stats(shop_api):
    api = shop_api
    api.post("/api/v1/invoices", BODY)
    api.post("/api/v1/invoices", {**BODY, "reference": "ORD-2"})
    assert api.post("/api/v1/invoices/ORD-2/cancel", {"reason": "dup"}).json()["status"] == "cancelled"
    assert api.post("/api/v1/invoices/ORD-2/cancel", {"reason": "dup"}).status_code == 200
    stats = api.get("/api/v1/payments/stats").json()
    assert stats["invoices"] == {"open": 1, "cancelled": 1} and stats["checks"] == {"pending": 1, "cancelled": 1}
    assert stats["due_now"] == 0 and len(stats["next_checks"]) == 1 and stats["failing_credentials"] == []
    assert api.put("/api/v1/payments/settings", {"progression": "list", "intervals": "5x"}).json()["code"] == "invalid_intervals"
    assert api.put("/api/v1/payments/settings", {"progression": "list", "intervals": "30m,1h"}).status_code == 200
    saved = api.put("/api/v1/payments/settings", {"close_grace_days": 5, "late_usage_months": 2,
                                                  "settle_every_days": 7}).json()
    assert (saved["close_grace_days"], saved["late_usage_months"], saved["settle_every_days"], saved["intervals"]) == (
        5, 2, 7, "30m,1h")
    too_rare = api.put("/api/v1/payments/settings", {"settle_every_days": 32})
    assert (too_rare.status_code, too_rare.json()["code"]) == (422, "invalid_settle_every_days")


def test_cli_stats_and_check(shop_api, tenant, capsys):
    shop_api.post("/api/v1/invoices", BODY)
    call_command("payments", "check", "--tenant", tenant.slug, "--reference", "ORD-1")
    call_command("payments", "stats")
    out = capsys.readouterr().out
    assert "ORD-1: not paid yet" in out and "due now: 0" in out and "failing credentials: none" in out
    assert Invoice.objects.get().payment_check.attempts == 1


def test_numbers_beyond_their_columns_or_dates_are_refused_not_500(shop_api):
    """Found by schemathesis: expire_after_days of 4.6e18 was a server error (no such date)."""
    api = shop_api
    for body, code in (({"expire_after_days": 4611686018427387904}, "invalid_expire_after_days"),
                       ({"invoice_due_days": 99999}, "invalid_invoice_due_days"),
                       ({"max_interval_seconds": 10 ** 12}, "invalid_max_interval_seconds"),
                       ({"first_interval_seconds": 0}, "invalid_first_interval_seconds"),
                       ({"late_usage_months": 25}, "invalid_late_usage_months"),
                       ({"close_grace_days": 28}, "invalid_close_grace_days"),
                       ({"default_gateway": "paypal"}, "unknown_gateway"),
                       ({"first_interval_seconds": 600, "max_interval_seconds": 300}, "invalid_intervals")):
        response = api.put("/api/v1/payments/settings", body)
        assert response.status_code == 422 and response.json()["code"] == code, (body, response.content)
    huge = api.post("/api/v1/invoices", {**BODY, "reference": "HUGE", "amount": "1e20"})
    assert huge.status_code == 422 and huge.json()["code"] == "invalid_number"
    credits = api.post("/api/v1/invoices", {**BODY, "reference": "CREDITS", "currency": "messages"})
    assert credits.status_code == 422 and credits.json()["code"] == "invalid_currency"  # a credit unit: not money
    cents = api.post("/api/v1/invoices", {**BODY, "reference": "CENTS", "amount": "10.005"})
    assert cents.status_code == 422 and cents.json()["code"] == "invalid_amount" and "2 decimal" in cents.json()["message"]
    assert api.post("/api/v1/invoices", {**BODY, "reference": "YEN", "amount": "1500", "currency": "JPY"}).status_code == 201


def test_credit_notes_are_listed(shop_api, tenant, make_api):
    """The close's credit notes (a summary fell below its invoices) as the tenant's ERP reads them."""
    from datetime import datetime, timezone as dt_timezone

    from tarifa.metering.models import Summary
    from tarifa.payments.services.invoices import CloseResult, close_month
    from tarifa.tenants.models import Customer

    customer = Customer.objects.get(tenant=tenant, external_id="c-1")
    summary = Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                                     total_amount=Decimal("40.00"), record_count=4)
    assert close_month(now=datetime(2026, 1, 1, 12, tzinfo=dt_timezone.utc)) == CloseResult(invoices=1)
    Summary.objects.filter(pk=summary.pk).update(total_amount=Decimal("30.00"))  # as a reversal leaves it
    assert close_month(now=datetime(2026, 1, 2, 12, tzinfo=dt_timezone.utc)) == CloseResult(credit_notes=1)
    page = shop_api.get("/api/v1/credit-notes?customer=c-1").json()
    assert page["next_cursor"] is None
    [note] = page["items"]
    assert (note["reference"], note["customer"], note["period"], Decimal(note["amount"]), note["currency"]) == (
        "TRF-2025-12-c-1-C1", "c-1", "2025-12", Decimal("10.00"), "BRL")
    assert "TRF-2025-12-c-1" in note["reason"]
    assert shop_api.get("/api/v1/credit-notes?period=2025-11").json()["items"] == []
    assert len(shop_api.get("/api/v1/credit-notes?period=2025-12").json()["items"]) == 1
    assert shop_api.get("/api/v1/credit-notes?period=2025-13").json()["code"] == "invalid_period"
    assert shop_api.get("/api/v1/credit-notes?customer=nobody").status_code == 404
    # The close's invoices say which month they bill, and are listed by it; others have no month.
    shop_api.post("/api/v1/invoices", BODY)
    by_month = shop_api.get("/api/v1/invoices?period=2025-12").json()["items"]
    assert [(i["reference"], i["period"]) for i in by_month] == [("TRF-2025-12-c-1", "2025-12")]
    assert shop_api.get(f"/api/v1/invoices/{BODY['reference']}").json()["period"] is None
    assert shop_api.get("/api/v1/invoices?period=12-2025").status_code == 422
    _, other = make_api("Other")
    assert other.get("/api/v1/credit-notes").json()["items"] == []


def test_cli_runs_the_monthly_close(shop_api, tenant, capsys):
    from tarifa.metering.models import Summary
    from tarifa.tenants.models import Customer

    customer = Customer.objects.get(tenant=tenant, external_id="c-1")
    Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                           total_amount=Decimal("12.00"), record_count=1)
    call_command("payments", "close", "--at", "2026-01-01T03:05:00+00:00")
    assert capsys.readouterr().out.strip() == "close: 1 invoices, 0 adjustment invoices, 0 credit notes"
    assert Invoice.objects.get().reference == "TRF-2025-12-c-1"
    call_command("payments", "close", "--at", "2026-01-01T03:20:00+00:00")
    assert capsys.readouterr().out.strip() == "close: 0 invoices, 0 adjustment invoices, 0 credit notes"


def test_cancelling_an_invoice_its_credit_notes_reduced_is_a_conflict(shop_api, tenant):
    """The monthly close invoiced 87.30, then credited 7.30 (a reversal): cancelling would credit
    money never charged, so the API answers 409 invoice_credited and the invoice stays open."""
    from datetime import datetime, timezone as dt_timezone

    from tarifa.metering.models import Summary
    from tarifa.payments.services.invoices import close_month

    summary = Summary.objects.create(tenant=tenant, customer=tenant.customers.get(external_id="c-1"),
                                     period="2025-12", currency="BRL", total_amount=Decimal("87.30"), record_count=3)
    close_month(now=datetime(2026, 1, 1, 3, 5, tzinfo=dt_timezone.utc))
    Summary.objects.filter(pk=summary.pk).update(total_amount=Decimal("80.00"))
    assert close_month(now=datetime(2026, 1, 2, 3, 20, tzinfo=dt_timezone.utc)).credit_notes == 1  # a day later
    refused = shop_api.post("/api/v1/invoices/TRF-2025-12-c-1/cancel", {"reason": "waived"})
    assert (refused.status_code, refused.json()["code"]) == (409, "invoice_credited")
    assert "TRF-2025-12-c-1-C1" in refused.json()["message"] and "80.00 BRL" in refused.json()["message"]
    assert shop_api.get("/api/v1/invoices/TRF-2025-12-c-1").json()["status"] == "open"


def test_a_gateway_base_url_in_a_private_network_is_422(api, settings):
    settings.TARIFA_PRIVATE_URLS = False
    answer = api.put("/api/v1/payments/gateways/pagseguro", {"base_url": "http://169.254.169.254/latest",
                                                              "email": "shop@example.com", "token": "T"})
    assert (answer.status_code, answer.json()["code"], answer.json()["field"]) == (422, "private_url", "base_url")
    broken = api.put("/api/v1/payments/gateways/pagseguro", {"base_url": "https://[::1/ws", "email": "shop@example.com",
                                                              "token": "T"})
    assert (broken.status_code, broken.json()["code"]) == (422, "invalid_base_url")
