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


@pytest.mark.parametrize("url", ["ftp://nope", "http://[::1/hook"])  # the second had been a 500
def test_invalid_url_is_422(api, url):
    response = api.post("/api/v1/webhooks", {"url": url})
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


def test_a_failed_or_delivered_event_can_be_sent_again(api, tenant, receiver):
    from tarifa.events.models import WebhookDelivery
    from tarifa.events.services import emit_event
    from tarifa.runtime.models import Job
    from tarifa.runtime.testing import drain

    endpoint_id = api.post("/api/v1/webhooks", {"url": receiver.url}).json()["id"]
    emit_event(tenant=tenant, type="alert.raised", payload={"a": 1})
    Job.objects.filter(type="events.deliver_webhook").update(max_attempts=1)
    receiver.statuses = [500]
    drain()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    url = f"/api/v1/webhooks/{endpoint_id}/deliveries/{delivery.id}/redeliver"
    again = api.post(url, {})
    assert again.status_code == 202 and again.json()["status"] == "pending"
    assert api.post(url, {}).json()["code"] == "delivery_pending"  # one at a time
    drain()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)
    assert api.post(url, {}).status_code == 202  # a delivered one too: the receiver lost it
    drain()
    assert len(receiver.requests) == 3
    api.patch(f"/api/v1/webhooks/{endpoint_id}", {"active": False})
    paused = api.post(url, {})
    assert (paused.status_code, paused.json()["code"]) == (409, "endpoint_paused")
    assert api.post(f"/api/v1/webhooks/{endpoint_id}/deliveries/{delivery.id + 1}/redeliver", {}).status_code == 404


def test_resuming_an_endpoint_in_the_admin_sends_what_its_pause_held(operator, api, tenant, receiver):
    from tarifa.events.models import WebhookDelivery
    from tarifa.events.services import emit_event
    from tarifa.runtime.testing import drain

    created = api.post("/api/v1/webhooks", {"url": receiver.url}).json()
    url = f"/admin/events/webhookendpoint/{created['id']}/change/"
    values = {"url": receiver.url, "event_types": "[]", "description": ""}
    emit_event(tenant=tenant, type="alert.raised", payload={})
    assert operator.post(url, values).status_code == 302  # "active" unticked: paused
    drain()
    assert receiver.requests == []
    assert operator.post(url, {**values, "active": "on"}).status_code == 302
    drain()
    assert len(receiver.requests) == 1 and WebhookDelivery.objects.get().status == "succeeded"
    delivery_page = "/admin/events/webhookdelivery/"
    operator.post(delivery_page, {"action": "redeliver", "_selected_action": [WebhookDelivery.objects.get().id]})
    drain()
    assert len(receiver.requests) == 2


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/hook",
                                 "http://192.168.0.10/hook", "http://[::ffff:127.0.0.1]/hook",
                                 "http://2130706433/hook", "http://0x7f000001/hook", "http://0/hook"])
def test_an_endpoint_in_a_private_network_is_422(api, url):
    response = api.post("/api/v1/webhooks", {"url": url})
    assert (response.status_code, response.json()["code"], response.json()["field"]) == (422, "private_url", "url")
    assert "own network" in response.json()["message"]
    created = api.post("/api/v1/webhooks", {"url": "https://erp.example.com/hook"}).json()
    assert api.patch(f"/api/v1/webhooks/{created['id']}", {"url": url}).json()["code"] == "private_url"


def test_private_endpoints_are_allowed_when_configured(api, settings):
    settings.TARIFA_PRIVATE_URLS = True
    assert api.post("/api/v1/webhooks", {"url": "http://10.1.2.3/hook"}).status_code == 201
