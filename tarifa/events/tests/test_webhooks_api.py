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


def test_an_unknown_event_type_is_refused(api):
    """A mistyped type had been stored, and the endpoint then never called."""
    response = api.post("/api/v1/webhooks", {"url": "https://erp.example.com/hook", "event_types": ["alert.raise"]})
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_event_type" and "'alert.raise'" in response.json()["message"]
    created = api.post("/api/v1/webhooks", {"url": "https://erp.example.com/hook",
                                            "event_types": ["invoice.paid", "alert.raised", "invoice.paid"]}).json()
    assert created["event_types"] == ["alert.raised", "invoice.paid"]
    patched = api.patch(f"/api/v1/webhooks/{created['id']}", {"event_types": ["summary.update"]})
    assert patched.status_code == 422 and patched.json()["field"] == "event_types"


def test_the_admin_changes_endpoints_as_the_api_checks_them_and_adds_none(operator, api):
    from tarifa.events.models import WebhookEndpoint

    created = api.post("/api/v1/webhooks", {"url": "https://erp.example.com/hook"}).json()
    url = f"/admin/events/webhookendpoint/{created['id']}/change/"
    values = {"url": "https://erp.example.com/other", "event_types": "[]", "description": "", "active": "on"}
    for typed in ('["alert.raise"]', '[1, "invoice.paid"]', '{"invoice.paid": true}'):
        page = operator.post(url, {**values, "event_types": typed})
        assert list(page.context["adminform"].form.errors) == ["event_types"], typed
    assert operator.post(url, {**values, "event_types": '["invoice.paid"]'}).status_code == 302
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    assert (endpoint.url, endpoint.event_types) == ("https://erp.example.com/other", ["invoice.paid"])
    assert endpoint.secret.startswith("whsec_")  # kept: the form never shows it
    assert operator.get("/admin/events/webhookendpoint/add/").status_code == 403
