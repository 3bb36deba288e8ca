"""Background entry points of the events domain."""

from __future__ import annotations

from tarifa.events import services
from tarifa.events.listeners import listener
from tarifa.events.models import Event
from tarifa.runtime.registry import job


@job("events.run_listener", queue="default", max_attempts=10)
def run_listener(ctx, *, event_id: int, listener: str) -> None:  # noqa: A002 - payload key
    event = Event.objects.select_related("tenant").get(pk=event_id)
    handler = _listener(event.type, listener)
    handler(event)


def _listener(event_type: str, name: str):
    handler = listener(event_type, name)
    if handler is None:
        raise LookupError(f"Listener '{name}' for '{event_type}' is not registered in this process.")
    return handler


@job("events.deliver_webhook", queue="webhooks", max_attempts=12, backoff_base=5.0, backoff_cap=3600.0)
def deliver_webhook(ctx, *, delivery_id: int) -> None:
    services.deliver_webhook(delivery_id=delivery_id, final_attempt=ctx.attempt >= ctx.max_attempts)
