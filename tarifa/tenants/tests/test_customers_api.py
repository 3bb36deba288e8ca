from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_create_is_idempotent_on_external_id(api):
    body = {"external_id": "c-1", "name": "Maria", "phone": "(11) 98765-4321", "email": "Maria@Example.com"}
    first = api.post("/api/v1/customers", body)
    assert first.status_code == 201, first.content
    assert first.json()["phone"] == "+5511987654321"
    assert first.json()["email"] == "Maria@example.com"
    again = api.post("/api/v1/customers", body)
    assert again.status_code == 200
    assert again.json() == first.json()
    changed = api.post("/api/v1/customers", {**body, "name": "Other"})
    assert changed.status_code == 409
    assert changed.json()["code"] == "customer_exists"


@pytest.mark.parametrize(
    "body,code,field",
    [
        ({"external_id": "x", "phone": "123"}, "invalid_phone", "phone"),
        ({"external_id": "x", "phone": "not a phone"}, "invalid_phone", "phone"),
        ({"external_id": "x", "email": "nope@"}, "invalid_email", "email"),
        ({"external_id": " "}, "invalid_external_id", "external_id"),
        ({"name": "no id"}, "invalid_input", "external_id"),
        ({"external_id": "x", "metadata": "str"}, "invalid_input", "metadata"),
    ],
)
def test_invalid_input_is_422_with_code_and_field(api, body, code, field):
    response = api.post("/api/v1/customers", body)
    assert response.status_code == 422, response.content
    data = response.json()
    assert data["code"] == code
    assert data["field"] == field
    assert data["message"]


def test_get_update_and_404(api):
    api.post("/api/v1/customers", {"external_id": "c-1", "name": "Maria"})
    assert api.get("/api/v1/customers/c-1").json()["name"] == "Maria"
    updated = api.patch("/api/v1/customers/c-1", {"phone": "+55 21 2345-6789", "metadata": {"plan": "gold"}})
    assert updated.status_code == 200
    assert updated.json()["phone"] == "+552123456789"
    assert updated.json()["name"] == "Maria"  # fields not sent are left alone
    assert api.patch("/api/v1/customers/c-1", {"phone": "999"}).status_code == 422
    assert api.get("/api/v1/customers/c-1").json()["phone"] == "+552123456789"
    missing = api.get("/api/v1/customers/nobody")
    assert missing.status_code == 404 and missing.json()["code"] == "customer_not_found"


def test_list_uses_cursor_pagination(api):
    for i in range(7):
        api.post("/api/v1/customers", {"external_id": f"c-{i}"})
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/customers", **params).json()
        seen += [c["external_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"c-{i}" for i in range(7)]
    assert api.get("/api/v1/customers", cursor="bogus").json()["code"] == "invalid_cursor"
    assert api.get("/api/v1/customers", limit=0).status_code == 422


def test_tenant_a_cannot_read_or_change_tenant_b(make_api):
    _, alpha = make_api("Alpha")
    _, beta = make_api("Beta")
    assert alpha.post("/api/v1/customers", {"external_id": "shared-id", "name": "A's"}).status_code == 201
    assert beta.get("/api/v1/customers/shared-id").status_code == 404
    assert beta.patch("/api/v1/customers/shared-id", {"name": "hijack"}).status_code == 404
    assert beta.get("/api/v1/customers").json()["items"] == []
    # The same external_id is free in another tenant and stays separate.
    assert beta.post("/api/v1/customers", {"external_id": "shared-id", "name": "B's"}).status_code == 201
    assert alpha.get("/api/v1/customers/shared-id").json()["name"] == "A's"


def test_phone_region_follows_tenant_default(db):
    from tarifa.conftest import ApiClient
    from tarifa.tenants.services import create_tenant

    _, issued = create_tenant(name="Lisbon Co", default_phone_region="PT", timezone_name="Europe/Lisbon")
    response = ApiClient(issued.raw_key).post("/api/v1/customers", {"external_id": "p", "phone": "912 345 678"})
    assert response.json()["phone"] == "+351912345678"
