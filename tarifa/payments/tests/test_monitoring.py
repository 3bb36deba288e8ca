"""What /metrics tells an operator about payments: the checking backlog and its lag, failing
credentials, and what monthly closes made."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from tarifa.metering.models import Summary
from tarifa.payments.models import GatewayCredential
from tarifa.payments.services.invoices import close_month
from tarifa.payments.tests.conftest import open_invoice

pytestmark = pytest.mark.django_db


def scrape() -> dict[str, float]:
    text = Client().get("/metrics").content.decode()
    return {name: float(value) for name, value in
            re.findall(r"^(tarifa_(?:payment|close)\S*) (\S+)$", text, re.M)}


def test_metrics_show_the_payment_backlog_and_what_closes_made(shop, fake):
    tenant, customer = shop
    now = timezone.now()
    open_invoice(shop, "DUE-1", now=now - timedelta(hours=1))  # first check 15 minutes in: due 45 min ago
    open_invoice(shop, "LATER-1", now=now)
    metrics = scrape()
    assert (metrics["tarifa_payment_checks_active"], metrics["tarifa_payment_checks_due"]) == (2, 1)
    assert 45 * 60 <= metrics["tarifa_payment_check_lag_seconds"] < 47 * 60
    assert metrics["tarifa_payment_credentials_failing"] == 0
    GatewayCredential.objects.filter(tenant=tenant).update(status=GatewayCredential.Status.UNAUTHORIZED)
    assert scrape()["tarifa_payment_credentials_failing"] == 1

    before = scrape().get('tarifa_close_made_total{what="invoices"}', 0.0)
    Summary.objects.create(tenant=tenant, customer=customer, period="2025-12", currency="BRL",
                           total_amount=Decimal("10.00"), record_count=1)
    close_month(now=datetime(2026, 1, 1, 12, tzinfo=dt_timezone.utc))
    assert scrape()['tarifa_close_made_total{what="invoices"}'] - before == 1
