"""In-process listeners of domain events. Each runs as its own job after the emitter commits.

A listener may name a condition on the payload (`when`), checked at emit time, so events it
would ignore do not cost a job each (e.g. the allowance check only wants summaries that crossed
a threshold).
"""

from __future__ import annotations

from typing import Callable

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
