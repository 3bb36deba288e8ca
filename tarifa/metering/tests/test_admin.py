"""Operators' admin pages for plans and their rates."""

from __future__ import annotations

from decimal import Decimal

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


def _rate_post(plan, **changes) -> dict:
    return {"plan": plan.pk, "kind": "call.international", "destination_prefix": "0044", "description": "",
            "unit": "second", "price": "1.00", "block_size": "60", "minimum": "0", "increment": "1", "tiers": "[]",
            "rounding": "half_up", **changes}


@pytest.mark.parametrize("changes, field, message", [
    ({"block_size": "0"}, "block_size", "block_size must be &gt; 0."),
    ({"increment": "0"}, "increment", "increment must be &gt; 0."),
    ({"price": "-1"}, "price", "price must be &gt;= 0."),
    ({"destination_prefix": "44a"}, "destination_prefix", "A destination prefix holds digits"),
    ({"kind": "Call Intl"}, "kind", "is not a usage kind"),
    ({"tiers": '{"up_to": 10}'}, "tiers", "tiers is a list of"),
    ({"tiers": '[{"up_to": "10", "price": "1"}]'}, "tiers", "Tiers need ascending up_to bounds"),
    ({"rounding": "nearest"}, "rounding", "Select a valid choice"),
])
def test_the_rate_form_refuses_what_the_plan_service_refuses(operator, tenant, changes, field, message):
    """A zero increment saved by an operator would make every rating of the tenant fail."""
    plan = create_plan(tenant=tenant, code="intl", name="Intl", rates=[{**PER_MINUTE, "destination_prefix": "0044"}])
    rate = plan.rates.get()
    page = operator.post(f"/admin/metering/rate/{rate.pk}/change/", _rate_post(plan, **changes))
    assert page.status_code == 200  # the form again, with the error on its field
    errors = page.context["adminform"].form.errors
    assert list(errors) == [field] and message.replace("&gt;", ">") in errors[field][0]
    rate.refresh_from_db()
    assert (rate.block_size, rate.increment, rate.price, rate.destination_prefix) == (60, 1, 1, "0044")


def test_the_rate_form_saves_terms_as_the_plan_service_stores_them(operator, tenant):
    plan = create_plan(tenant=tenant, code="ai", name="AI", rates=[
        {"kind": "llm.input_tokens", "destination_prefix": "gpt-4o", "unit": "token", "block_size": "1000",
         "price": "0.01"}])
    rate = plan.rates.get()
    page = operator.post(f"/admin/metering/rate/{rate.pk}/change/", _rate_post(
        plan, kind="llm.input_tokens", destination_prefix="  GPT-4o-Mini ", unit="token", block_size="1000",
        price="0.005", tiers='[{"up_to": 1000000, "price": "0.01"}, {"price": "0.004"}]'))
    assert page.status_code == 302, page.context["adminform"].form.errors
    rate.refresh_from_db()
    assert rate.destination_prefix == "gpt-4o-mini"  # model names are matched lowercased and trimmed
    assert rate.price == Decimal("0.005")
    assert rate.tiers == [{"up_to": "1000000", "price": "0.01"}, {"up_to": None, "price": "0.004"}]


def test_plan_allowance_and_subscription_forms_check_as_the_services_do(tenant, customers):
    from tarifa.metering.admin import AllowanceForm, PricePlanForm, SubscriptionForm
    from tarifa.tenants.services import create_tenant

    plan = create_plan(tenant=tenant, code="basic", name="Basic", rates=[PER_MINUTE])
    values = {"tenant": tenant.pk, "code": "basic", "name": "Basic", "currency": "brl", "currency_places": 2,
              "alert_thresholds": "[50, 100]"}
    form = PricePlanForm(data=values, instance=plan)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["currency"] == "BRL"
    for changes, field in [({"currency_places": 9}, "currency_places"), ({"alert_thresholds": '["half"]'},
                           "alert_thresholds"), ({"code": "Basic Plan"}, "code"), ({"monthly_grant": "-1"},
                                                                                     "monthly_grant")]:
        form = PricePlanForm(data={**values, **changes}, instance=plan)
        assert not form.is_valid() and field in form.errors, changes
    allowance = {"plan": plan.pk, "code": "minutes", "kinds": '["call.local"]', "quantity": "600"}
    assert AllowanceForm(data=allowance).is_valid()
    assert "kinds" in AllowanceForm(data={**allowance, "kinds": "[]"}).errors
    assert "kinds" in AllowanceForm(data={**allowance, "kinds": '"call.local"'}).errors
    assert "quantity" in AllowanceForm(data={**allowance, "quantity": "0"}).errors
    other, _key = create_tenant(name="Other", slug="other")
    foreign = create_plan(tenant=other, code="theirs", name="Theirs", rates=[PER_MINUTE])
    subscription = {"customer": customers[0].pk, "starts_on": "2026-01-01"}
    assert SubscriptionForm(data={**subscription, "plan": plan.pk}).is_valid()
    assert SubscriptionForm(data={**subscription, "plan": foreign.pk}).errors == {
        "plan": ["No such plan for this tenant."]}


def test_usage_summaries_and_batches_are_read_only_in_the_admin(operator, tenant, customers):
    from tarifa.metering.models import Summary, UsageRecord
    from tarifa.metering.services.folding import fold_all_pending
    from tarifa.metering.services.ingestion import ingest_usage

    ingest_usage(tenant=tenant, records=[{"id": "r1", "customer": customers[0].external_id, "kind": "call",
                                          "quantity": 60, "occurred_at": "2025-12-01T10:00:00Z",
                                          "destination": "33334444"}])
    fold_all_pending(batch_size=1000)
    record, summary = UsageRecord.objects.get(), Summary.objects.get()
    for url in (f"/admin/metering/usagerecord/{record.pk}/change/", f"/admin/metering/summary/{summary.pk}/change/"):
        page = operator.get(url)
        assert page.status_code == 200 and b'name="_save"' not in page.content  # shown, not editable
        assert operator.post(url, {"status": "rated"}).status_code == 403
    assert operator.get("/admin/metering/usagerecord/add/").status_code == 403
    assert operator.post(f"/admin/metering/foldbatch/{record.batch_id}/delete/", {"post": "yes"}).status_code == 403
    record.refresh_from_db()
    assert record.status == "billed"


def test_the_database_refuses_rate_terms_rating_cannot_use(tenant):
    from django.db import IntegrityError, transaction

    from tarifa.metering.models import Rate

    plan = create_plan(tenant=tenant, code="p", name="P", rates=[PER_MINUTE])
    for terms in ({"block_size": 0}, {"increment": 0}, {"price": -1}, {"minimum": -1}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Rate.objects.create(plan=plan, kind="call.other", **terms)


def test_a_subscription_dated_back_over_rated_usage_warns_the_operator(operator, tenant, customers):
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.tests.conftest import at, call

    cheap = create_plan(tenant=tenant, code="cheap", name="Cheap", rates=[{**PER_MINUTE, "kind": "call.local"}])
    ingest_usage(tenant=tenant, records=[call("r1", "c1", 60, at(20))])
    added = operator.post("/admin/metering/subscription/add/", {
        "customer": customers[0].pk, "plan": cheap.pk, "starts_on": "2025-12-01"}, follow=True)
    assert added.status_code == 200
    assert b"Usage of 2025-12 from 2025-12-01 was rated under another plan" in added.content
    later = operator.post("/admin/metering/subscription/add/", {
        "customer": customers[0].pk, "plan": cheap.pk, "starts_on": "2026-02-01"}, follow=True)
    assert b"was rated under another plan" not in later.content
