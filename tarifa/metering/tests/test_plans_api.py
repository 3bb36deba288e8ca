from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

PLAN = {
    "code": "llm-pro", "name": "LLM Pro", "currency": "USD",
    "rates": [
        {"kind": "llm.input_tokens", "unit": "token", "price": "3.00", "block_size": "1000000",
         "tiers": [{"up_to": "10000000", "price": "3.00"}, {"price": "2.50"}]},
        {"kind": "llm.output_tokens", "unit": "token", "price": "15.00", "block_size": "1000000", "rounding": "up"},
    ],
    "allowances": [{"code": "free-input", "kinds": ["llm.input_tokens"], "quantity": "100000"}],
    "alert_thresholds": [75, 100],
}


def test_create_get_list_and_replace(api):
    created = api.post("/api/v1/plans", PLAN)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["currency"] == "USD" and body["alert_thresholds"] == [75, 100]
    assert body["rates"][0]["tiers"][1]["up_to"] is None
    assert api.get("/api/v1/plans/llm-pro").json()["code"] == "llm-pro"
    assert [p["code"] for p in api.get("/api/v1/plans").json()["items"]] == ["llm-pro"]
    assert api.post("/api/v1/plans", PLAN).status_code == 409
    replaced = api.put("/api/v1/plans/llm-pro", {"rates": [{"kind": "llm.input_tokens", "unit": "token",
                                                            "price": "2.00", "block_size": "1000000"}]})
    assert replaced.status_code == 200 and len(replaced.json()["rates"]) == 1
    assert api.get("/api/v1/plans/nope").status_code == 404


def test_a_plan_created_twice_at_the_same_moment_is_a_409_not_a_500(api, monkeypatch):
    """create_plan checks that the code is free, then creates it: a concurrent create of the same
    code passes the check too and then hits the unique key (simulated: the check sees nothing)."""
    from tarifa.metering.models import PricePlan

    assert api.post("/api/v1/plans", PLAN).status_code == 201
    look = PricePlan.objects.filter
    monkeypatch.setattr(PricePlan.objects, "filter",
                        lambda *args, **kwargs: look(pk=-1) if "code" in kwargs else look(*args, **kwargs))
    again = api.post("/api/v1/plans", PLAN)
    assert again.status_code == 409 and again.json()["code"] == "conflict", again.content
    monkeypatch.undo()
    assert [p["code"] for p in api.get("/api/v1/plans").json()["items"]] == ["llm-pro"]


@pytest.mark.parametrize("change,code,field", [
    ({"code": "Bad Code"}, "invalid_code", "code"),
    ({"rates": [{"kind": "x", "price": "-1"}]}, "invalid_number", "rates[0].price"),
    ({"rates": [{"kind": "x", "price": "1", "increment": "0"}]}, "invalid_number", "rates[0].increment"),
    ({"rates": [{"kind": "x", "price": "1", "tiers": [{"up_to": "5", "price": "1"}]}]}, "invalid_tiers", "rates[0].tiers"),
    ({"rates": [{"kind": "x", "price": "1", "rounding": "sideways"}]}, "invalid_rounding", "rates[0].rounding"),
    ({"rates": [{"kind": "x", "price": "1"}, {"kind": "x", "price": "2"}]}, "duplicate_rate", "rates"),
    ({"rates": [{"kind": "x", "price": "1", "destination_prefix": "9a"}]}, "invalid_prefix", "rates[0].destination_prefix"),
    ({"allowances": [{"code": "a", "kinds": [], "quantity": "1"}]}, "invalid_allowance", "allowances[0].kinds"),
    # charges are rounded to these places and stored with 6: 9 had been accepted, -1 a server error
    ({"currency_places": 9}, "invalid_currency_places", "currency_places"),
    ({"currency_places": -1}, "invalid_currency_places", "currency_places"),
])
def test_invalid_plans_are_422_with_the_field(api, change, code, field):
    response = api.post("/api/v1/plans", {**PLAN, **change})
    assert response.status_code == 422, response.content
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert api.get("/api/v1/plans").json()["items"] == []


def test_subscription_needs_known_plan_and_customer(api):
    api.post("/api/v1/plans", PLAN)
    api.post("/api/v1/customers", {"external_id": "org-1"})
    assert api.post("/api/v1/customers/org-1/subscriptions", {"plan": "llm-pro", "starts_on": "2025-12-01"}).status_code == 201
    assert api.post("/api/v1/customers/org-1/subscriptions", {"plan": "nope", "starts_on": "2025-12-01"}).status_code == 404
    assert api.post("/api/v1/customers/zz/subscriptions", {"plan": "llm-pro", "starts_on": "2025-12-01"}).status_code == 404


def test_token_usage_with_tiers_and_allowance(api):
    from decimal import Decimal

    from tarifa.metering.tests.test_folding import fold_all

    api.post("/api/v1/plans", PLAN)
    api.post("/api/v1/customers", {"external_id": "org-1"})
    api.post("/api/v1/customers/org-1/subscriptions", {"plan": "llm-pro", "starts_on": "2025-12-01"})
    api.post("/api/v1/usage", {"records": [
        {"id": "m1", "customer": "org-1", "kind": "llm.input_tokens", "quantity": 9_100_000, "occurred_at": "2025-12-02T10:00:00Z"},
        {"id": "m2", "customer": "org-1", "kind": "llm.input_tokens", "quantity": 2_000_000, "occurred_at": "2025-12-02T11:00:00Z"},
        {"id": "m3", "customer": "org-1", "kind": "llm.output_tokens", "quantity": 1_234, "occurred_at": "2025-12-02T11:00:00Z"},
    ]})
    fold_all()
    charges = {r["id"]: Decimal(r["charged_amount"]) for r in api.get("/api/v1/usage", status="billed").json()["items"]}
    # m1: 100k free, 9M at $3.00/M = 27.00; m2: 1M more at $3.00 (to 10M) + 1M at $2.50 = 5.50
    # m3: 1,234 output tokens at $15/M = 0.01851 → rounded up = 0.02
    assert charges == {"m1": Decimal("27.00"), "m2": Decimal("5.50"), "m3": Decimal("0.02")}


def test_prices_and_quantities_beyond_their_columns_are_refused(api):
    for rate, field in (({"kind": "x", "price": "1e15"}, "rates[0].price"),
                        ({"kind": "x", "price": "0.0000001"}, "rates[0].price"),
                        ({"kind": "x", "price": "1", "block_size": "1e19"}, "rates[0].block_size")):
        response = api.post("/api/v1/plans", {**PLAN, "rates": [rate]})
        assert response.status_code == 422 and response.json()["field"] == field, response.content
    assert api.post("/api/v1/plans", {**PLAN, "monthly_grant": "1e15"}).json()["field"] == "monthly_grant"
