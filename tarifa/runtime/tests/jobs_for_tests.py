"""Job types used only by the test suite (loaded by worker subprocesses via TARIFA_EXTRA_TASK_MODULES)."""

from __future__ import annotations

import time

from django.db import transaction
from django.db.models import F

from tarifa.runtime import services
from tarifa.runtime.models import SampleTally
from tarifa.runtime.registry import job


class AlreadyRan(Exception):
    pass


@job("tests.exactly_once", max_attempts=1)
def exactly_once(ctx, *, sleep: float = 0.0) -> None:
    """Fails if it ever runs twice for the same job: proves two workers never claim the same row."""
    time.sleep(sleep)
    with transaction.atomic():
        if not services.apply_once(f"ran:{ctx.job_id}"):
            raise AlreadyRan(f"job {ctx.job_id} ran twice")


@job("tests.slow_tally", max_attempts=20, backoff_base=0.05, backoff_cap=0.2)
def slow_tally(ctx, *, counter: str, sleep: float = 0.02) -> None:
    """Idempotent tally that takes a while, so a worker can be killed while holding leases."""
    time.sleep(sleep)
    with transaction.atomic():
        if not services.apply_once(ctx.idempotency_key):
            return
        SampleTally.objects.filter(name=counter).update(total=F("total") + 1)


@job("tests.flaky", max_attempts=3, backoff_base=0.0, backoff_cap=0.0)
def flaky(ctx, *, fail_times: int) -> None:
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"planned failure {ctx.attempt}")


@job("tests.long", one_at_a_time=True)
def long_job(ctx) -> None:
    """A long-running type: claimed one at a time."""
