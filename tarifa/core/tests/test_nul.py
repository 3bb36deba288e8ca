"""A NUL character, which PostgreSQL's text and jsonb refuse, is a 4xx naming where it is, on any
route: it had been a 500 for customers, plans and any address holding one."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tarifa.core.text import nul_path
from tarifa.tenants.models import Customer

pytestmark = pytest.mark.django_db


def test_nul_path_names_where_the_nul_is():
    assert nul_path({"a": [{"b": "ok"}, {"b": "x\x00"}]}) == "a[1].b"
    assert nul_path({"k\x00": 1}) == "k\x00"
    assert nul_path(["\x00"]) == "[0]"
    assert nul_path({"a": 1, "b": [None, True, 2.5, "fine"]}) is None


@pytest.mark.parametrize("path, body, field", [
    ("/api/v1/customers", {"external_id": "n1", "name": "a\x00b"}, "name"),
    ("/api/v1/customers", {"external_id": "n2", "metadata": {"tags": ["x", "y\x00"]}}, "metadata.tags[1]"),
    ("/api/v1/plans", {"code": "p", "name": "P", "rates": [{"kind": "call", "price": "1", "description": "\x00"}]},
     "rates[0].description"),
])
def test_a_body_holding_a_nul_is_422_with_its_field(api, path, body, field):
    response = api.post(path, body)
    assert response.status_code == 422, response.content
    assert (response.json()["code"], response.json()["field"]) == ("invalid_text", field)
    assert not Customer.objects.filter(external_id__in=["n1", "n2"]).exists()


def test_an_address_holding_a_nul_is_400(api):
    for url in ("/api/v1/customers/a%00b", "/api/v1/usage?customer=a%00b", "/api/v1/plans/p%00"):
        response = api.client.get(url, headers=api.headers)
        assert response.status_code == 400 and response.json()["code"] == "invalid_text", url
    assert Client().get("/admin/tenants/customer/?q=%00").status_code == 400


def test_usage_records_are_still_answered_one_by_one(api):
    body = {"records": [{"id": "r1", "customer": "c1", "kind": "call", "quantity": 1,
                         "occurred_at": "2025-12-01T10:00:00Z", "destination": "3333\x004444"}]}
    response = api.client.post("/api/v1/usage", json.dumps(body), content_type="application/json",
                               headers=api.headers)
    assert response.status_code == 200
    assert response.json()["results"][0]["code"] == "invalid_destination"
