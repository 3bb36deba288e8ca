"""Job types and periodic schedules, declared in each app's tasks.py with @job and periodic()."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable

from django.utils.module_loading import autodiscover_modules

from tarifa.runtime.models import Priority


@dataclass(frozen=True)
class JobType:
    name: str
    handler: Callable[..., Any]
    queue: str = "default"
    priority: int = Priority.NORMAL
    max_attempts: int = 10
    backoff_base: float = 2.0  # seconds; the n-th retry waits up to base * 2**(n-1), capped
    backoff_cap: float = 3600.0
    # Long-running (seconds, not milliseconds): a claim takes at most one such job, so the others
    # stay in the pool for idle workers instead of waiting behind it in one worker's batch.
    one_at_a_time: bool = False


@dataclass(frozen=True)
class Periodic:
    name: str
    cron: str
    job_type: str
    timezone: str = "UTC"
    queue: str = ""
    payload: dict = field(default_factory=dict)


_job_types: dict[str, JobType] = {}
_periodics: dict[str, Periodic] = {}


def job(
    name: str, *, queue: str = "default", priority: int = Priority.NORMAL, max_attempts: int = 10,
    backoff_base: float = 2.0, backoff_cap: float = 3600.0, one_at_a_time: bool = False,
):
    """Register a handler `fn(ctx, **payload)`. Handlers must be idempotent: a job may run twice."""

    def register(fn):
        _job_types[name] = JobType(
            name=name, handler=fn, queue=queue, priority=priority, max_attempts=max_attempts,
            backoff_base=backoff_base, backoff_cap=backoff_cap, one_at_a_time=one_at_a_time,
        )
        return fn

    return register


def periodic(name: str, *, cron: str, job_type: str, timezone: str = "UTC", queue: str = "", payload=None) -> None:
    _periodics[name] = Periodic(
        name=name, cron=cron, job_type=job_type, timezone=timezone, queue=queue, payload=payload or {}
    )


def job_type(name: str) -> JobType | None:
    return _job_types.get(name)


def runs_one_at_a_time(name: str) -> bool:
    """Whether jobs of this type are claimed one at a time (unknown types: no)."""
    spec = _job_types.get(name)
    return spec is not None and spec.one_at_a_time


def job_types() -> dict[str, JobType]:
    return dict(_job_types)


def periodics() -> dict[str, Periodic]:
    return dict(_periodics)


def autodiscover() -> None:
    autodiscover_modules("tasks")
    # Extra handler modules (e.g. test-only jobs run by worker subprocesses in the test suite).
    for module in filter(None, os.environ.get("TARIFA_EXTRA_TASK_MODULES", "").split(",")):
        import_module(module.strip())
