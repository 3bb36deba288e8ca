"""Bodies the API cannot take are 4xx with a code and a message: not standard JSON (NaN, Infinity,
numbers beyond a float, which Python reads and no column stores: they had been 500s), not JSON at
all (ninja's bare {"detail"}), or larger than TARIFA_API_MAX_BODY_BYTES (Django's HTML 400)."""

from __future__ import annotations

import json

import pytest

from tarifa.metering.models import UsageRecord
from tarifa.tenants.models import Customer

pytestmark = pytest.mark.django_db

RECORD = {"id": "r1", "customer": "c1", "kind": "call", "quantity": 1, "occurred_at": "2025-12-01T10:00:00Z"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-2.5e309"])
def test_numbers_json_does_not_have_are_400_invalid_json(api, number):
    customer = api.post("/api/v1/customers", f'{{"external_id": "n1", "metadata": {{"score": {number}}}}}')
    usage = api.post("/api/v1/usage", '{"records": [' + json.dumps(RECORD)[:-1] + f', "attributes": {{"x": {number}}}}}]}}')
    for response in (customer, usage):
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "invalid_json"
        assert response.json()["message"].startswith("The request body is not JSON this API takes: ")
    assert not Customer.objects.exists() and not UsageRecord.objects.exists()


def test_a_body_that_is_not_json_says_where(api):
    response = api.post("/api/v1/customers", '{"external_id": "n1",')
    assert response.status_code == 400
    assert response.json() == {"code": "invalid_json", "message": "The request body is not JSON this API takes: "
                               "Expecting property name enclosed in double quotes: line 1 column 22 (char 21)"}


def test_finite_numbers_still_pass(api):
    response = api.post("/api/v1/customers", {"external_id": "n1", "metadata": {"score": 2.5e10, "n": -0.5}})
    assert response.status_code == 201, response.content
    assert Customer.objects.get(external_id="n1").metadata == {"score": 2.5e10, "n": -0.5}


def test_a_body_beyond_the_limit_is_413_and_stores_nothing(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    records = [{**RECORD, "id": f"r{i}"} for i in range(30)]  # ~3 KB
    for path, body in [("/api/v1/usage", {"records": records}),  # read by ninja
                       ("/api/v1/customers", {"external_id": "n1", "name": "x" * 3000})]:  # by the NUL check
        response = api.post(path, body)
        assert response.status_code == 413, (path, response.content)
        assert response.json() == {
            "code": "body_too_large",
            "message": "The request body is larger than 2,000 bytes (TARIFA_API_MAX_BODY_BYTES); "
                       "send fewer records per call."}
    assert api.post("/api/v1/usage", {"records": records[:5]}).status_code == 200
    assert not Customer.objects.exists()


def test_an_address_naming_no_operation_is_a_json_404(api):
    for path in ("/api/v1/nowhere", "/api/v1/customers/a%2Fb"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found", path
    assert b"<html" in api.client.get("/nowhere").content.lower()  # the rest keeps Django's page


def test_half_a_character_is_400_invalid_json_and_a_whole_one_passes(api):
    """JSON may write a UTF-16 surrogate as an escape; one without its pair decodes to text that
    UTF-8, and so PostgreSQL, cannot hold (a 500; on SQLite too)."""
    for body in ('{"external_id": "s1", "name": "a\\ud800b"}', '{"external_id": "s1", "metadata": {"k\\udc00": 1}}'):
        response = api.post("/api/v1/customers", body)
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "invalid_json" and "without its pair" in response.json()["message"]
    usage = api.post("/api/v1/usage", '{"records": [' + json.dumps(RECORD)[:-1] + ', "destination": "9\\ud800"}]}')
    assert (usage.status_code, usage.json()["code"]) == (400, "invalid_json")
    raw = api.client.post("/api/v1/customers", b'{"external_id": "s1", "name": "\xed\xa0\x80"}',
                          content_type="application/json", headers=api.headers)  # a surrogate encoded raw
    assert (raw.status_code, raw.json()["code"]) == (400, "invalid_json")
    assert api.post("/api/v1/customers", '{"external_id": "s1", "name": "\\ud83d\\ude00"}').status_code == 201
    assert Customer.objects.get().name == "\U0001F600"
