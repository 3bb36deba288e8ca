"""Text longer than its column is a 422 naming the field (core.text.check_lengths), where it had been
a 500 on PostgreSQL (SQLite stored it, and a wallet's reason was cut short without a word); what
no service checks by name is still a 422 (the API's net for PostgreSQL's own refusal)."""

from __future__ import annotations

import pytest
from django.db import connection

from tarifa.events.models import WebhookEndpoint
from tarifa.metering.models import PricePlan
from tarifa.payments.models import Invoice
from tarifa.tenants.models import Customer
from tarifa.wallets.models import LedgerEntry

pytestmark = pytest.mark.django_db
RATE = {"kind": "call", "price": "0.10", "unit": "second", "block_size": "60"}


def _refused(response, field: str, limit: int) -> None:
    assert response.status_code == 422, response.content
    assert response.json() == {"code": "value_too_long", "field": field,
                               "message": f"{field} is longer than {limit} characters."}


def test_customers(api):
    _refused(api.post("/api/v1/customers", {"external_id": "c" * 129}), "external_id", 128)
    _refused(api.post("/api/v1/customers", {"external_id": "c1", "name": "n" * 201}), "name", 200)
    assert api.post("/api/v1/customers", {"external_id": "c" * 128, "name": "n" * 200}).status_code == 201
    _refused(api.patch(f"/api/v1/customers/{'c' * 128}", {"name": "n" * 201}), "name", 200)
    slash = api.post("/api/v1/customers", {"external_id": "a/b"})  # no address could name it
    assert (slash.status_code, slash.json()["code"]) == (422, "invalid_external_id")
    assert list(Customer.objects.values_list("name", flat=True)) == ["n" * 200]


def test_plans_name_the_rate_or_allowance(api):
    plan = {"code": "p", "name": "Plan", "rates": [RATE, {**RATE, "kind": "sms", "description": "d" * 201}]}
    _refused(api.post("/api/v1/plans", plan), "rates[1].description", 200)
    plan["rates"][1]["description"] = "fits"
    _refused(api.post("/api/v1/plans", {**plan, "name": "n" * 201}), "name", 200)
    _refused(api.post("/api/v1/plans", {**plan, "code": "p" * 65}), "code", 64)
    _refused(api.post("/api/v1/plans", {**plan, "allowances": [{"code": "a" * 65, "kinds": ["call"], "quantity": "1"}]}),
             "allowances[0].code", 64)
    assert not PricePlan.objects.exists()


def test_webhooks_invoices_and_wallet_reasons(api):
    _refused(api.post("/api/v1/webhooks", {"url": "https://example.com/" + "x" * 481}), "url", 500)
    assert api.post("/api/v1/customers", {"external_id": "c1"}).status_code == 201
    invoice = {"reference": "r1", "customer": "c1", "amount": "10", "due_date": "2026-12-01"}
    _refused(api.post("/api/v1/invoices", {**invoice, "description": "d" * 501}), "description", 500)
    assert api.put("/api/v1/customers/c1/wallet", {"unit": "BRL"}).status_code == 201
    top_up = {"amount": "5", "idempotency_key": "k1"}
    _refused(api.post("/api/v1/customers/c1/wallet/top-ups", {**top_up, "reason": "r" * 201}), "reason", 200)
    assert api.post("/api/v1/customers/c1/wallet/top-ups", {**top_up, "reason": "r" * 200}).status_code == 201
    assert not WebhookEndpoint.objects.exists() and not Invoice.objects.exists()
    assert list(LedgerEntry.objects.values_list("reason", flat=True)) == ["r" * 200]


def test_what_no_service_checks_is_still_a_422_on_postgresql(api):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite does not enforce a column's length")
    response = api.put("/api/v1/payments/gateways/pagseguro", {"email": "a@example.com", "token": "t" * 201})
    assert response.status_code == 422, response.content
    assert response.json() == {"code": "value_too_long", "message": "A text value is longer than its field allows "
                               "(value too long for type character varying(200))."}
