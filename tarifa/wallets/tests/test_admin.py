"""Operators' admin: wallets are read-only except through the audited adjust form."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tarifa.wallets.models import AuditEntry, Wallet
from tarifa.wallets.tests.conftest import prepaid_customer

pytestmark = pytest.mark.django_db


def test_the_adjust_form_posts_an_audited_ledger_entry(operator, tenant, token_plan):
    customer = prepaid_customer(tenant, token_plan, "org-a", balance="10")
    wallet = Wallet.objects.get(customer=customer)
    assert operator.get("/admin/wallets/wallet/").status_code == 200
    page = operator.get(f"/admin/wallets/wallet/{wallet.pk}/change/")
    assert page.status_code == 200 and b"top_up" in page.content
    assert operator.get(f"/admin/wallets/wallet/{wallet.pk}/adjust/").status_code == 200
    refused = operator.post(f"/admin/wallets/wallet/{wallet.pk}/adjust/", {"amount": "-50", "reason": "too much"})
    assert refused.status_code == 200 and b"does not cover" in refused.content
    done = operator.post(f"/admin/wallets/wallet/{wallet.pk}/adjust/", {"amount": "-2.5", "reason": "fee"})
    assert done.status_code == 302
    assert Wallet.objects.get(pk=wallet.pk).balance == Decimal("7.5")
    audit = AuditEntry.objects.get(action="adjustment")
    assert (audit.actor, audit.reason, audit.before, audit.after) == ("ana", "fee", {"balance": "10.000000"},
                                                                      {"balance": "7.500000"})
    assert operator.get("/admin/wallets/auditentry/").status_code == 200
