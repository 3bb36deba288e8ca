"""Operators' admin pages for invoices and gateway credentials."""

from __future__ import annotations

from decimal import Decimal

import pytest

pytestmark = pytest.mark.django_db


def test_payment_admin_pages_render(operator, tenant):
    from datetime import date

    from tarifa.payments.services.invoices import create_invoice
    from tarifa.tenants.services import create_customer

    customer, _ = create_customer(tenant=tenant, external_id="c")
    invoice, _ = create_invoice(tenant=tenant, reference="R-1", customer=customer, amount=Decimal("5"),
                                currency="BRL", due_date=date(2026, 1, 1), gateway="pagseguro")
    assert operator.get("/admin/payments/invoice/").status_code == 200
    assert operator.get(f"/admin/payments/invoice/{invoice.pk}/change/").status_code == 200
    assert operator.get("/admin/payments/gatewaycredential/").status_code == 200
    # read here: created, checked and cancelled through the API and CLI
    assert operator.get("/admin/payments/invoice/add/").status_code == 403
    operator.post(f"/admin/payments/invoice/{invoice.pk}/change/", {"amount": "1", "description": "edited"})
    invoice.refresh_from_db()
    assert (invoice.amount, invoice.description) == (Decimal("5"), "")


def test_credit_notes_are_read_in_the_admin(operator, tenant):
    from tarifa.metering.models import Summary
    from tarifa.payments.models import CreditNote
    from tarifa.tenants.services import create_customer

    customer, _ = create_customer(tenant=tenant, external_id="c")
    summary = Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL")
    note = CreditNote.objects.create(tenant=tenant, customer=customer, summary=summary, reference="TRF-2025-12-c-C1",
                                     amount=Decimal("3.50"), currency="BRL", reason="reversal",
                                     created_at=summary.updated_at)
    page = operator.get("/admin/payments/creditnote/?q=TRF-2025-12")
    assert page.status_code == 200 and b"TRF-2025-12-c-C1" in page.content
    assert operator.get(f"/admin/payments/creditnote/{note.pk}/change/").status_code == 200
    assert operator.get("/admin/payments/creditnote/add/").status_code == 403  # made by the close only
    operator.post(f"/admin/payments/creditnote/{note.pk}/change/", {"amount": "1"})
    note.refresh_from_db()
    assert note.amount == Decimal("3.50")


def test_payment_settings_are_checked_in_the_admin_as_in_the_api(operator, tenant):
    from tarifa.payments.models import PaymentSettings
    from tarifa.payments.services.credentials import update_settings

    config = update_settings(tenant=tenant, close_grace_days=2)
    url = f"/admin/payments/paymentsettings/{config.pk}/change/"
    assert operator.get("/admin/payments/paymentsettings/").status_code == 200
    values = {"progression": "exponential", "first_interval_seconds": 900, "max_interval_seconds": 86400,
              "intervals": "", "expire_after_days": 30, "invoice_due_days": 10, "late_usage_months": 3,
              "close_grace_days": 2, "settle_every_days": 1, "default_gateway": "pagseguro",
              "failure_alert_after": 5}
    for changes, field in [({"close_grace_days": 40}, "close_grace_days"),
                           ({"settle_every_days": 32}, "settle_every_days"),
                           ({"default_gateway": "paypal"}, "default_gateway"),
                           ({"max_interval_seconds": 60}, "max_interval_seconds"),
                           ({"progression": "list", "intervals": "soon"}, "intervals")]:
        page = operator.post(url, {**values, **changes})
        assert page.status_code == 200 and list(page.context["adminform"].form.errors) == [field], changes
    assert operator.post(url, {**values, "close_grace_days": 5, "tenant": 999}).status_code == 302
    config = PaymentSettings.objects.get()
    assert (config.close_grace_days, config.tenant_id) == (5, tenant.pk)
