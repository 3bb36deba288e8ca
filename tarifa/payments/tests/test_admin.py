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
