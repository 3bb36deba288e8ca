from __future__ import annotations

import json

import pytest
from django.db import transaction

from tarifa.events import signing
from tarifa.events.listeners import listens_to
from tarifa.events.models import Event, WebhookDelivery, WebhookEndpoint
from tarifa.events.services import create_webhook_endpoint, emit_event, emit_events
from tarifa.runtime.models import Job
from tarifa.runtime.services import enqueue
from tarifa.runtime.testing import drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr("tarifa.events.listeners._listeners", {})

    @listens_to("summary.updated", name="recorder")
    def recorder(events):
        calls.extend(event.payload["customer"] for event in events)

    return calls


def test_rolled_back_emit_reaches_nobody(tenant, recorded, receiver):
    create_webhook_endpoint(tenant=tenant, url=receiver.url)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            emit_event(tenant=tenant, type="summary.updated", payload={"customer": "c1"})
            raise RuntimeError
    drain()
    assert Event.objects.count() == 0 and recorded == [] and receiver.requests == []


def test_listener_runs_as_a_job_after_commit(tenant, recorded):
    emit_event(tenant=tenant, type="summary.updated", payload={"customer": "c1"})
    assert recorded == []  # not inline in the emitter
    drain()
    assert recorded == ["c1"]


def test_one_emit_costs_one_listener_job_per_batch_of_events(tenant, recorded, monkeypatch):
    monkeypatch.setattr("tarifa.events.services.LISTENER_BATCH_SIZE", 2)
    emit_events(events=[(tenant.id, "summary.updated", {"customer": f"c{i}"}) for i in range(5)]
                + [(tenant.id, "alert.raised", {"customer": "x"})])  # nobody listens to this one
    jobs = list(Job.objects.filter(type="events.run_listener").order_by("id").values_list("payload", flat=True))
    assert [len(job["event_ids"]) for job in jobs] == [2, 2, 1]
    assert {job["listener"] for job in jobs} == {"recorder"}
    drain()
    assert recorded == ["c0", "c1", "c2", "c3", "c4"]


def test_a_listener_job_queued_before_batches_still_runs(tenant, recorded):
    event = Event.objects.create(tenant=tenant, type="summary.updated", payload={"customer": "old"})
    enqueue("events.run_listener", payload={"event_id": event.id, "listener": "recorder"})
    drain()
    assert recorded == ["old"]


def test_failing_listener_is_retried_and_never_blocks_the_emitter(tenant, monkeypatch):
    monkeypatch.setattr("tarifa.events.listeners._listeners", {})
    attempts = []

    @listens_to("alert.raised", name="fragile")
    def fragile(events):
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("downstream away")

    event = emit_event(tenant=tenant, type="alert.raised", payload={"x": 1})  # does not raise
    assert event.pk
    drain()
    job = Job.objects.get(type="events.run_listener")
    assert job.status == "queued" and "downstream away" in job.last_error
    Job.objects.filter(pk=job.pk).update(run_at=job.created_at)
    drain()
    job.refresh_from_db()
    assert job.status == "succeeded" and len(attempts) == 2


def test_webhook_is_signed_json_and_logged(tenant, receiver):
    endpoint = create_webhook_endpoint(tenant=tenant, url=receiver.url, event_types=["summary.updated"])
    event = emit_event(tenant=tenant, type="summary.updated", payload={"customer": "c1", "total": "12.50"})
    emit_event(tenant=tenant, type="alert.raised", payload={})  # not subscribed
    drain()
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    body = json.loads(request["body"])
    assert body["id"] == str(event.uid) and body["type"] == "summary.updated"
    assert body["data"] == {"customer": "c1", "total": "12.50"}
    assert request["headers"]["X-Tarifa-Event"] == "summary.updated"
    signature = request["headers"]["X-Tarifa-Signature"]
    assert signing.verify(secret=endpoint.secret, header=signature, body=request["body"])
    assert not signing.verify(secret="whsec_wrong", header=signature, body=request["body"])
    assert not signing.verify(secret=endpoint.secret, header=signature, body=request["body"] + b" ")
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "succeeded" and delivery.attempts == 1
    assert delivery.attempt_log.get().status_code == 200


def test_webhook_retries_with_backoff_and_logs_each_attempt(tenant, receiver):
    receiver.statuses = [500, 503]
    create_webhook_endpoint(tenant=tenant, url=receiver.url)
    emit_event(tenant=tenant, type="summary.updated", payload={})
    for _ in range(3):
        Job.objects.filter(type="events.deliver_webhook", status="queued").update(run_at="2000-01-01T00:00:00Z")
        drain()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "succeeded"
    assert [a.status_code for a in delivery.attempt_log.order_by("id")] == [500, 503, 200]
    job = Job.objects.get(type="events.deliver_webhook")
    assert job.attempts == 3 and job.status == "succeeded"


def test_redelivered_webhook_job_is_not_sent_twice(tenant, receiver):
    create_webhook_endpoint(tenant=tenant, url=receiver.url)
    emit_event(tenant=tenant, type="summary.updated", payload={})
    drain()
    from tarifa.events.services import deliver_webhook

    deliver_webhook(delivery_id=WebhookDelivery.objects.get().id, final_attempt=False)
    assert len(receiver.requests) == 1


def test_unreachable_endpoint_fails_after_last_attempt(tenant, settings):
    settings.TARIFA_PRIVATE_URLS = True
    create_webhook_endpoint(tenant=tenant, url="http://127.0.0.1:9/unreachable")
    emit_event(tenant=tenant, type="summary.updated", payload={})
    Job.objects.filter(type="events.deliver_webhook").update(max_attempts=1)
    drain()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert "ConnectError" in delivery.attempt_log.get().error


def test_signature_rejects_stale_timestamps():
    header = signing.sign(secret="s", body=b"{}", timestamp=1_000_000)
    assert signing.verify(secret="s", header=header, body=b"{}", now=1_000_100)
    assert not signing.verify(secret="s", header=header, body=b"{}", now=1_000_000 + 301)
    assert not signing.verify(secret="s", header="garbage", body=b"{}")



def test_deliveries_held_by_a_pause_are_sent_when_the_endpoint_resumes(tenant, receiver):
    """A paused endpoint's deliveries had stayed pending for good: their jobs ended on the pause."""
    from tarifa.events.services import update_webhook_endpoint

    endpoint = create_webhook_endpoint(tenant=tenant, url=receiver.url)
    held = emit_event(tenant=tenant, type="summary.updated", payload={"n": 1})
    update_webhook_endpoint(endpoint=endpoint, active=False)
    drain()
    emit_event(tenant=tenant, type="summary.updated", payload={"n": 2})  # during the pause: never meant for it
    drain()
    assert receiver.requests == [] and WebhookDelivery.objects.get().status == "pending"
    update_webhook_endpoint(endpoint=endpoint, description="renamed")  # no resume, nothing sent
    drain()
    assert receiver.requests == []
    update_webhook_endpoint(endpoint=endpoint, active=True)
    drain()
    assert [json.loads(r["body"])["id"] for r in receiver.requests] == [str(held.uid)]
    assert WebhookDelivery.objects.get().status == "succeeded"
    update_webhook_endpoint(endpoint=endpoint, active=True)  # already active: nothing more
    drain()
    assert len(receiver.requests) == 1


def test_a_second_resume_of_an_endpoint_queues_nothing_more(tenant, receiver):
    """Two resumes at once (two operators, a retried PATCH) each hold the endpoint as read while it
    was paused; the one that saves second must find it resumed, not queue the held delivery again."""
    from tarifa.events.models import WebhookEndpoint
    from tarifa.events.services import update_webhook_endpoint

    endpoint = create_webhook_endpoint(tenant=tenant, url=receiver.url)
    emit_event(tenant=tenant, type="summary.updated", payload={"n": 1})
    update_webhook_endpoint(endpoint=endpoint, active=False)  # before its delivery ran: held
    Job.objects.all().delete()
    first, second = (WebhookEndpoint.objects.get(pk=endpoint.pk) for _ in range(2))
    update_webhook_endpoint(endpoint=first, active=True)
    update_webhook_endpoint(endpoint=second, active=True)
    assert Job.objects.filter(type="events.deliver_webhook").count() == 1
    drain()
    assert len(receiver.requests) == 1


def test_a_late_failure_of_an_overlapping_run_does_not_undo_a_delivery(tenant, receiver, monkeypatch):
    """Two runs of one delivery (a lease that ran out during a slow POST): the one that fails last
    had saved its stale 'pending' over the other's success, and the event was sent once more."""
    from tarifa.events import services

    create_webhook_endpoint(tenant=tenant, url=receiver.url)
    emit_event(tenant=tenant, type="summary.updated", payload={})
    delivery_id = WebhookDelivery.objects.get().id
    real_post = services._post

    def post_while_the_other_run_succeeds(destination, **kwargs):
        monkeypatch.setattr(services, "_post", real_post)
        services.deliver_webhook(delivery_id=delivery_id, final_attempt=False)  # the overlapping run
        receiver.statuses = [503]
        return real_post(destination, **kwargs)

    monkeypatch.setattr(services, "_post", post_while_the_other_run_succeeds)
    delivery = services.deliver_webhook(delivery_id=delivery_id, final_attempt=True)  # no retry raised
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)
    assert sorted(a.status_code for a in delivery.attempt_log.all()) == [200, 503]


def test_a_webhook_is_not_sent_to_a_host_that_resolves_into_a_private_network(tenant, receiver, settings, monkeypatch):
    """An endpoint checked when created (its name is public) and pointed later, through DNS, at a
    private address, or an endpoint created while private addresses were allowed: the delivery is
    not sent, and its attempt says why."""
    import socket

    real, dns = socket.getaddrinfo, {"hooks.example.com": "93.184.215.14"}
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (dns[host], 0))] if host in dns else real(host, *a, **k)))
    create_webhook_endpoint(tenant=tenant, url=receiver.url)  # allowed by the receiver fixture
    settings.TARIFA_PRIVATE_URLS = False
    create_webhook_endpoint(tenant=tenant, url="https://hooks.example.com/tarifa")  # public when created
    dns["hooks.example.com"] = "10.0.0.7"
    emit_event(tenant=tenant, type="summary.updated", payload={})
    Job.objects.filter(type="events.deliver_webhook").update(max_attempts=1)
    drain()
    errors = sorted(WebhookDelivery.objects.values_list("attempt_log__error", flat=True))
    assert errors == ["127.0.0.1 is not a public address", "hooks.example.com is 10.0.0.7, not a public address"]
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"failed"}
    assert receiver.requests == []


def test_a_webhook_goes_to_the_address_its_name_was_checked_at(tenant, receiver, settings, monkeypatch):
    """DNS rebinding: the name resolves to a public address for the check, to a private one after.
    The POST goes to the address checked (here the receiver, taken for public), with the endpoint's
    name as its Host; before, the HTTP client resolved the name again and went where it led then."""
    import socket

    from tarifa.core import network

    port = receiver.url.split(":")[2].split("/")[0]
    answers = iter(["127.0.0.1", "10.0.0.7"])
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "10.0.0.7"), 0))]
        if host == "hooks.example.com" else real(host, *a, **k)))
    monkeypatch.setattr(network, "_public", lambda address: str(address) != "10.0.0.7")  # the receiver counts as public
    settings.TARIFA_PRIVATE_URLS = False
    WebhookEndpoint.objects.create(tenant=tenant, url=f"http://hooks.example.com:{port}/hook", secret="s")
    emit_event(tenant=tenant, type="summary.updated", payload={})
    drain()
    assert WebhookDelivery.objects.get().status == "succeeded"
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"hooks.example.com:{port}"
