"""In-process listeners of domain events. They run as jobs after the emitter commits.

A listener takes a list of events of its type: one job carries the events that one emit call
gave it (up to LISTENER_BATCH_SIZE), so a bulk import that crosses thousands of thresholds costs
a few jobs, not one per event. A listener must therefore be idempotent per event (a failed batch
is retried whole). It may name a condition on the payload (`when`), checked at emit time, so
events it would ignore cost nothing (e.g. the allowance check only wants summaries that crossed
a threshold).
"""

from __future__ import annotations

from typing import Callable

LISTENER_BATCH_SIZE = 500

_listeners: dict[str, dict[str, tuple[Callable, Callable | None]]] = {}


def listens_to(event_type: str, *, name: str | None = None, when: Callable[[dict], bool] | None = None):
    def register(fn: Callable) -> Callable:
        _listeners.setdefault(event_type, {})[name or f"{fn.__module__}.{fn.__qualname__}"] = (fn, when)
        return fn

    return register


def listeners_for(event_type: str, payload: dict | None = None) -> list[str]:
    """Names of the listeners that want this event (all of them when no payload is given)."""
    return [name for name, (_fn, when) in _listeners.get(event_type, {}).items()
            if payload is None or when is None or when(payload)]


def listener(event_type: str, name: str) -> Callable | None:
    entry = _listeners.get(event_type, {}).get(name)
    return entry[0] if entry else None
