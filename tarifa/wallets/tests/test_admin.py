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
    assert page.status_code == 200 and b"top_up" in page.content and b"Grant lots" in page.content
    form = operator.get(f"/admin/wallets/wallet/{wallet.pk}/adjust/")
    assert form.status_code == 200
    key = form.context["form"].initial["key"]
    adjust = f"/admin/wallets/wallet/{wallet.pk}/adjust/"
    refused = operator.post(adjust, {"amount": "-50", "reason": "too much", "key": key})
    assert refused.status_code == 200 and b"does not cover" in refused.content
    done = operator.post(adjust, {"amount": "-2.5", "reason": "fee", "key": key})
    assert done.status_code == 302
    again = operator.post(adjust, {"amount": "-2.5", "reason": "fee", "key": key}, follow=True)  # sent twice
    assert b"Already adjusted" in again.content
    assert Wallet.objects.get(pk=wallet.pk).balance == Decimal("7.5")
    other = operator.post(adjust, {"amount": "-1", "reason": "fee", "key": key})  # the old form, changed
    assert other.status_code == 200 and b"already made an adjustment" in other.content
    assert Wallet.objects.get(pk=wallet.pk).balance == Decimal("7.5")
    assert operator.post(adjust, {"amount": "-1", "reason": "fee"}).status_code == 200  # no key: not posted
    audit = AuditEntry.objects.get(action="adjustment")
    assert (audit.actor, audit.reason, audit.before, audit.after) == ("ana", "fee", {"balance": "10.000000"},
                                                                      {"balance": "7.500000"})
    assert operator.get("/admin/wallets/auditentry/").status_code == 200
