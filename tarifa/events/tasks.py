"""Background entry points of the events domain."""

from __future__ import annotations

from tarifa.events import services
from tarifa.events.listeners import listener
from tarifa.events.models import Event
from tarifa.runtime.registry import job


@job("events.run_listener", queue="default", max_attempts=10)
def run_listener(ctx, *, listener: str, event_ids: list[int] | None = None,
                 event_id: int | None = None) -> None:  # noqa: A002 - payload keys
    # `event_id` alone: a job queued before listeners took batches. A batch holds one event type.
    events = list(Event.objects.select_related("tenant").filter(pk__any=event_ids or [event_id]).order_by("id"))
    if events:
        _listener(events[0].type, listener)(events)


def _listener(event_type: str, name: str):
    handler = listener(event_type, name)
    if handler is None:
        raise LookupError(f"Listener '{name}' for '{event_type}' is not registered in this process.")
    return handler


@job("events.deliver_webhook", queue="webhooks", max_attempts=12, backoff_base=5.0, backoff_cap=3600.0)
def deliver_webhook(ctx, *, delivery_id: int) -> None:
    services.deliver_webhook(delivery_id=delivery_id, final_attempt=ctx.attempt >= ctx.max_attempts)
