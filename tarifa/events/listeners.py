"""In-process listeners of domain events. Each runs as its own job after the emitter commits."""

from __future__ import annotations

from typing import Callable

_listeners: dict[str, dict[str, Callable]] = {}


def listens_to(event_type: str, *, name: str | None = None):
    def register(fn: Callable) -> Callable:
        _listeners.setdefault(event_type, {})[name or f"{fn.__module__}.{fn.__qualname__}"] = fn
        return fn

    return register


def listeners_for(event_type: str) -> dict[str, Callable]:
    return dict(_listeners.get(event_type, {}))


def listener(event_type: str, name: str) -> Callable | None:
    return _listeners.get(event_type, {}).get(name)
