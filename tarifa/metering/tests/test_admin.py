"""Operators' admin pages for plans and their rates."""

from __future__ import annotations

import pytest

from tarifa.metering.admin import MAX_INLINE_RATES
from tarifa.metering.services.plans import create_plan

pytestmark = pytest.mark.django_db

PER_MINUTE = {"kind": "call.international", "unit": "second", "block_size": "60", "price": "1.00"}


def test_a_plan_of_a_few_rates_is_edited_on_its_page(operator, tenant):
    plan = create_plan(tenant=tenant, code="small", name="Small", rates=[{**PER_MINUTE, "destination_prefix": "00"}])
    page = operator.get(f"/admin/metering/priceplan/{plan.pk}/change/")
    assert page.status_code == 200
    assert b'name="rates-TOTAL_FORMS"' in page.content
    assert f"?plan__id__exact={plan.pk}".encode() in page.content and b"1 rates" in page.content


def test_a_plan_of_many_rates_links_to_its_rate_list(operator, tenant):
    count = MAX_INLINE_RATES + 1
    plan = create_plan(tenant=tenant, code="world", name="World",
                       rates=[{**PER_MINUTE, "destination_prefix": f"00{n}"} for n in range(100, 100 + count)])
    page = operator.get(f"/admin/metering/priceplan/{plan.pk}/change/")
    assert page.status_code == 200
    assert b'name="rates-TOTAL_FORMS"' not in page.content  # no form per rate
    assert b'name="allowances-TOTAL_FORMS"' in page.content
    assert f"{count} rates".encode() in page.content
    rates = operator.get(f"/admin/metering/rate/?plan__id__exact={plan.pk}")
    assert rates.status_code == 200 and f"{count} rates".encode() in rates.content
    found = operator.get(f"/admin/metering/rate/?plan__id__exact={plan.pk}&q=00150")
    assert found.status_code == 200
    assert b'field-destination_prefix">00150<' in found.content
    assert b'field-destination_prefix">00151<' not in found.content
