from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_endpoint_crud_and_secret_shown_once(api):
    created = api.post("/api/v1/webhooks", {"url": "https://erp.example.com/hook", "event_types": ["alert.raised"]})
    assert created.status_code == 201
    data = created.json()
    assert data["secret"].startswith("whsec_")
    fetched = api.get(f"/api/v1/webhooks/{data['id']}").json()
    assert "secret" not in fetched and fetched["event_types"] == ["alert.raised"]
    patched = api.patch(f"/api/v1/webhooks/{data['id']}", {"active": False})
    assert patched.json()["active"] is False
    assert [e["id"] for e in api.get("/api/v1/webhooks").json()["items"]] == [data["id"]]
    assert api.delete(f"/api/v1/webhooks/{data['id']}").status_code == 204
    assert api.get(f"/api/v1/webhooks/{data['id']}").status_code == 404


def test_invalid_url_is_422(api):
    response = api.post("/api/v1/webhooks", {"url": "ftp://nope"})
    assert response.status_code == 422
    assert response.json() == {"code": "invalid_url", "field": "url",
                               "message": "The webhook URL must be an absolute http(s) URL."}


def test_deliveries_log_is_listed(api, tenant, receiver):
    from tarifa.events.services import emit_event
    from tarifa.runtime.testing import drain

    endpoint_id = api.post("/api/v1/webhooks", {"url": receiver.url}).json()["id"]
    emit_event(tenant=tenant, type="alert.raised", payload={"a": 1})
    drain()
    page = api.get(f"/api/v1/webhooks/{endpoint_id}/deliveries").json()
    assert page["items"][0]["status"] == "succeeded"
    assert page["items"][0]["attempt_log"][0]["status_code"] == 200


def test_other_tenant_cannot_see_or_touch_endpoints(make_api):
    _, alpha = make_api("Alpha")
    _, beta = make_api("Beta")
    endpoint_id = alpha.post("/api/v1/webhooks", {"url": "https://a.example.com/h"}).json()["id"]
    assert beta.get(f"/api/v1/webhooks/{endpoint_id}").status_code == 404
    assert beta.patch(f"/api/v1/webhooks/{endpoint_id}", {"active": False}).status_code == 404
    assert beta.delete(f"/api/v1/webhooks/{endpoint_id}").status_code == 404
    assert beta.get(f"/api/v1/webhooks/{endpoint_id}/deliveries").status_code == 404
    assert beta.get("/api/v1/webhooks").json()["items"] == []
