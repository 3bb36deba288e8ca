"""Operators' admin pages for tenants and customers check what the tenants service checks."""

from __future__ import annotations

import pytest

from tarifa.tenants.models import ApiKey, Customer
from tarifa.tenants.services import create_customer

pytestmark = pytest.mark.django_db


def _tenant_post(tenant, **changes) -> dict:
    return {"slug": tenant.slug, "name": tenant.name, "timezone": tenant.timezone,
            "default_phone_region": tenant.default_phone_region, "default_currency": tenant.default_currency, **changes}


def test_a_tenant_keeps_a_known_time_zone_and_region(operator, tenant):
    url = f"/admin/tenants/tenant/{tenant.pk}/change/"
    for changes, field in [({"timezone": "Mars/Olympus_Mons"}, "timezone"),
                           ({"default_phone_region": "XX"}, "default_phone_region"),
                           ({"default_currency": "E1R"}, "default_currency"),
                           ({"default_currency": "ABC"}, "default_currency")]:  # three letters, no currency
        page = operator.post(url, _tenant_post(tenant, **changes))
        assert page.status_code == 200 and list(page.context["adminform"].form.errors) == [field], changes
    assert operator.post(url, _tenant_post(tenant, timezone="America/Manaus", default_phone_region="pt",
                                           default_currency="eur")).status_code == 302
    tenant.refresh_from_db()
    assert (tenant.timezone, tenant.default_phone_region, tenant.default_currency) == ("America/Manaus", "PT", "EUR")


def test_a_customer_is_checked_and_normalised_and_keeps_its_tenant_and_id(operator, tenant):
    customer, _ = create_customer(tenant=tenant, external_id="org-1")
    url = f"/admin/tenants/customer/{customer.pk}/change/"
    values = {"name": "Org", "email": "", "phone": "", "metadata": "{}", "billing_mode": "postpaid"}
    page = operator.post(url, {**values, "phone": "12"})
    assert page.status_code == 200 and list(page.context["adminform"].form.errors) == ["phone"]
    page = operator.post(url, {**values, "metadata": "[1]"})
    assert list(page.context["adminform"].form.errors) == ["metadata"]
    page = operator.post(url, {**values, "metadata": '{"note": "a\\u0000b"}'})  # PostgreSQL's jsonb refuses it
    assert list(page.context["adminform"].form.errors) == ["metadata"]
    # A \ud800 escape without its pair decodes to half a character, which no database can store:
    # storing it, or showing back the form that refused it, had been a 500.
    page = operator.post(url, {**values, "metadata": '{"note": "a\\ud800"}'})
    assert list(page.context["adminform"].form.errors) == ["metadata"]
    assert "half a character" in page.context["adminform"].form.errors["metadata"][0]
    assert "a\\ud800" in page.content.decode()  # shown back as typed, escaped
    for number in ("NaN", "-Infinity", "1e400"):  # Python's json reads them; jsonb refuses them
        page = operator.post(url, {**values, "metadata": f'{{"score": [{number}]}}'})
        assert list(page.context["adminform"].form.errors) == ["metadata"], number
    # tenant and external_id are not fields of the change form: posting them changes nothing
    assert operator.post(url, {**values, "phone": "(11) 98765-4321", "email": "Ana@Example.COM",
                               "external_id": "org-2", "tenant": 999}).status_code == 302
    customer.refresh_from_db()
    assert (customer.phone, customer.email, customer.external_id, customer.tenant_id) == (
        "+5511987654321", "Ana@example.com", "org-1", tenant.pk)
    added = operator.post("/admin/tenants/customer/add/", {**values, "tenant": tenant.pk, "external_id": "org-3",
                                                           "phone": "11 3333-4444"})
    assert added.status_code == 302 and Customer.objects.get(external_id="org-3").phone == "+551133334444"


def test_api_keys_are_issued_by_the_command_not_added_in_the_admin(operator, tenant):
    assert operator.get("/admin/tenants/apikey/add/").status_code == 403
    key = ApiKey.objects.get(tenant=tenant)
    assert operator.get(f"/admin/tenants/apikey/{key.pk}/change/").status_code == 200


def test_a_customer_turned_postpaid_in_the_admin_has_its_failed_usage_charged(operator, tenant):
    """The change form saves through update_customer, which queues the retry of the usage a wallet
    could not pay (tarifa/wallets/tests/test_charging.py follows it to the invoice)."""
    from tarifa.runtime.models import Job

    customer, _ = create_customer(tenant=tenant, external_id="org-1", billing_mode="prepaid")
    url = f"/admin/tenants/customer/{customer.pk}/change/"
    values = {"name": "Org", "email": "", "phone": "", "metadata": "{}"}
    assert operator.post(url, {**values, "billing_mode": "prepaid"}).status_code == 302
    assert not Job.objects.filter(type="wallets.retry_failed_usage").exists()
    assert operator.post(url, {**values, "billing_mode": "postpaid"}).status_code == 302
    customer.refresh_from_db()
    assert (customer.name, customer.billing_mode) == ("Org", "postpaid")
    assert Job.objects.get(type="wallets.retry_failed_usage").payload == {"customer_id": customer.pk}
