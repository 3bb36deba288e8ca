from __future__ import annotations

from datetime import date, datetime, timezone as dt_timezone
from decimal import Decimal

import pytest

from tarifa.payments.services.credentials import set_credential
from tarifa.payments.services.invoices import create_invoice
from tarifa.payments.testing import FakePagSeguro
from tarifa.tenants.services import create_customer

T0 = datetime(2025, 12, 1, 12, 0, tzinfo=dt_timezone.utc)


@pytest.fixture
def fake(settings):
    settings.TARIFA_PRIVATE_URLS = True  # it listens on 127.0.0.1
    server = FakePagSeguro()
    yield server
    server.close()


@pytest.fixture
def shop(tenant, fake):
    """A tenant with a PagSeguro credential pointing at the fake, and one customer."""
    set_credential(tenant=tenant, gateway="pagseguro", base_url=fake.url, email=fake.email, token=fake.token,
                   timeout_seconds=2)
    customer, _ = create_customer(tenant=tenant, external_id="cust-1")
    return tenant, customer


def open_invoice(shop, reference: str, *, amount: str = "100.00", now: datetime = T0):
    tenant, customer = shop
    invoice, _ = create_invoice(tenant=tenant, reference=reference, customer=customer, amount=Decimal(amount),
                                currency="BRL", due_date=date(2025, 12, 10), gateway="pagseguro", now=now)
    return invoice
