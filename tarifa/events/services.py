"""Emitting domain events and delivering them to listeners and webhook endpoints."""

from __future__ import annotations

import json
import secrets
import time
from urllib.parse import urlparse

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from tarifa.core.errors import Conflict, DomainError
from tarifa.core.network import Destination, check_public_url, pinned_destination
from tarifa.core.text import check_lengths
from tarifa.events import signing
from tarifa.events.listeners import LISTENER_BATCH_SIZE, listeners_for
from tarifa.events.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tarifa.ops import metrics
from tarifa.runtime.services import enqueue_many
from tarifa.tenants.models import Tenant


class WebhookDeliveryFailed(Exception):
    """Raised so the runtime retries the delivery with backoff."""


def emit_event(*, tenant: Tenant, type: str, payload: dict) -> Event:
    """Record an event in the caller's transaction and queue its listeners and webhook deliveries.

    Nothing reaches a listener or an endpoint unless the caller's transaction commits, and no
    listener can fail or slow the emitter: each runs as its own retried job.
    """
    return emit_events(events=[(tenant.id, type, payload)])[0]


def emit_events(*, events: list[tuple[int, str, dict]]) -> list[Event]:
    """emit_event for many (tenant id, type, payload) at once, with a fixed number of queries."""
    if not events:
        return []
    with transaction.atomic():
        created = Event.objects.bulk_create([
            Event(tenant_id=tenant_id, type=type_, payload=json.loads(json.dumps(payload, cls=DjangoJSONEncoder)))
            for tenant_id, type_, payload in events
        ])
        enqueue_many("events.run_listener", _listener_jobs(created))
        endpoints: dict[int, list[WebhookEndpoint]] = {}
        for endpoint in WebhookEndpoint.objects.filter(tenant_id__in={e.tenant_id for e in created}, active=True):
            endpoints.setdefault(endpoint.tenant_id, []).append(endpoint)
        deliveries = WebhookDelivery.objects.bulk_create([
            WebhookDelivery(endpoint=endpoint, event=event)
            for event in created for endpoint in endpoints.get(event.tenant_id, ()) if endpoint.wants(event.type)
        ])
        _queue_deliveries(d.id for d in deliveries)
    return created


def _queue_deliveries(delivery_ids) -> None:
    """One delivery job each, queued in the caller's transaction (workers see them once it commits)."""
    enqueue_many("events.deliver_webhook", ({"delivery_id": delivery_id} for delivery_id in delivery_ids))


def _listener_jobs(events: list[Event]) -> list[dict]:
    """One job per listener and event type for up to LISTENER_BATCH_SIZE of these events."""
    wanted: dict[tuple[str, str], list[int]] = {}
    for event in events:
        for name in listeners_for(event.type, event.payload):
            wanted.setdefault((event.type, name), []).append(event.id)
    return [{"listener": name, "event_ids": ids[start:start + LISTENER_BATCH_SIZE]}
            for (_event_type, name), ids in wanted.items()
            for start in range(0, len(ids), LISTENER_BATCH_SIZE)]


def event_body(event: Event) -> bytes:
    return json.dumps(
        {"id": str(event.uid), "type": event.type, "created_at": event.created_at.isoformat(),
         "tenant": event.tenant.slug, "data": event.payload},
        separators=(",", ":"), sort_keys=True,
    ).encode()


def deliver_webhook(*, delivery_id: int, final_attempt: bool) -> WebhookDelivery:
    """POST one event to one endpoint and log the attempt. Idempotent: a delivered event is not resent."""
    delivery = WebhookDelivery.objects.select_related("endpoint", "event__tenant").get(pk=delivery_id)
    if delivery.status != WebhookDelivery.Status.PENDING or not delivery.endpoint.active:
        return delivery
    body = event_body(delivery.event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tarifa-Webhooks/1",
        "X-Tarifa-Event": delivery.event.type,
        "X-Tarifa-Delivery": str(delivery.id),
        "X-Tarifa-Signature": signing.sign(secret=delivery.endpoint.secret, body=body),
    }
    started = time.monotonic()
    status_code, response_text = None, ""
    destination = pinned_destination(delivery.endpoint.url)  # resolved and checked now, then connected to
    error = destination.refusal
    try:
        if not error:
            response = _post(destination, body=body, headers=headers)
            status_code, response_text = response.status_code, response.text[:1000]
            if not 200 <= status_code < 300:
                error = f"endpoint answered HTTP {status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    succeeded = not error
    with transaction.atomic():
        # Locked and read again: a job whose lease ran out during a slow POST runs beside its retry,
        # and the later write must neither lose the other's attempt nor undo its success.
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        WebhookAttempt.objects.create(
            delivery=delivery, status_code=status_code, error=error, response_body=response_text,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        delivery.attempts += 1
        delivery.last_status_code = status_code
        if succeeded:
            delivery.status, delivery.delivered_at = WebhookDelivery.Status.SUCCEEDED, timezone.now()
        elif final_attempt and delivery.status == WebhookDelivery.Status.PENDING:
            delivery.status = WebhookDelivery.Status.FAILED
        delivery.save(update_fields=["attempts", "last_status_code", "status", "delivered_at"])
    metrics.WEBHOOK_DELIVERIES.labels("succeeded" if succeeded else "failed").inc()
    if delivery.status == WebhookDelivery.Status.PENDING:  # not when the other run delivered it
        raise WebhookDeliveryFailed(error)
    return delivery


def _post(destination: Destination, *, body: bytes, headers: dict) -> httpx.Response:
    with httpx.Client(timeout=settings.TARIFA_WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False) as client:
        return client.post(destination.url, content=body, headers={**headers, **destination.headers},
                           extensions=destination.extensions)


def redeliver_webhook(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivered or failed event to its endpoint again, now, with a fresh set of retries
    (the receiver lost it, or its endpoint was fixed after the last attempt)."""
    with transaction.atomic():
        delivery = (WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint")
                    .get(pk=delivery.pk))
        if not delivery.endpoint.active:
            raise Conflict("endpoint_paused", "The endpoint is paused: resume it, and its waiting deliveries are sent.")
        if delivery.status == WebhookDelivery.Status.PENDING:
            raise Conflict("delivery_pending", "This delivery is still being attempted; see its attempt log.")
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.save(update_fields=["status"])
        _queue_deliveries([delivery.id])
    return delivery


# --- endpoint management -----------------------------------------------------------


def check_url(url: str) -> str:
    try:
        parsed = urlparse(url)
    except ValueError:  # "http://[::1/": an unclosed IPv6 address
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DomainError("invalid_url", "The webhook URL must be an absolute http(s) URL.", field="url")
    check_public_url(url, field="url")
    return url


# What Tarifa emits, and so what an endpoint may subscribe to: a mistyped type ("alert.raise") had
# been accepted and the endpoint then never called.
EVENT_TYPES = ("alert.raised", "credit_note.created", "invoice.cancelled", "invoice.created", "invoice.expired",
               "invoice.paid", "payment.reversed", "payment.unexpected", "summary.updated", "usage.reversed")


def clean_event_types(event_types) -> list[str]:
    if not isinstance(event_types or [], list) or not all(isinstance(t, str) for t in event_types or []):
        raise DomainError("invalid_event_types", "event_types is a list of event types.", field="event_types")
    unknown = sorted(set(event_types or []) - set(EVENT_TYPES))
    if unknown:
        raise DomainError("unknown_event_type", f"No event type {', '.join(map(repr, unknown))}; the types are "
                          f"{', '.join(EVENT_TYPES)} (none listed: every type).", field="event_types")
    return sorted(set(event_types or []))


def create_webhook_endpoint(
    *, tenant: Tenant, url: str, event_types: list[str] | None = None, description: str = ""
) -> WebhookEndpoint:
    check_lengths(WebhookEndpoint, {"url": url, "description": description})
    return WebhookEndpoint.objects.create(
        tenant=tenant, url=check_url(url), event_types=clean_event_types(event_types),
        description=description, secret=f"whsec_{secrets.token_hex(24)}",
    )


def update_webhook_endpoint(*, endpoint: WebhookEndpoint, **fields) -> WebhookEndpoint:
    """Change an endpoint. Resuming a paused one sends what waited for it: the deliveries of events
    emitted while it was active that its pause held back (events emitted during the pause were
    never meant for it)."""
    check_lengths(WebhookEndpoint, {key: fields[key] for key in ("url", "description") if key in fields})
    if "url" in fields:
        fields["url"] = check_url(fields["url"])
    if "event_types" in fields:
        fields["event_types"] = clean_event_types(fields["event_types"])
    with transaction.atomic():
        # Whether this resumes it, read under the row lock: two resumes at once (two operators, a
        # retried PATCH) had both found it paused and queued each held delivery twice.
        stored = WebhookEndpoint.objects.select_for_update().only("active").get(pk=endpoint.pk)
        resumed = fields.get("active") is True and not stored.active
        for key, value in fields.items():
            setattr(endpoint, key, value)
        if fields:
            endpoint.save(update_fields=list(fields))
        if resumed:
            _send_held_deliveries(endpoint)
    return endpoint


def _send_held_deliveries(endpoint: WebhookEndpoint) -> None:
    # A held delivery's job ended when it found the endpoint paused; a new one sends it. Should an
    # old retry still be queued, whichever runs second finds it delivered (or logs one more try).
    held = endpoint.deliveries.filter(status=WebhookDelivery.Status.PENDING).order_by("id")
    _queue_deliveries(held.values_list("id", flat=True).iterator())


def delete_webhook_endpoint(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()
