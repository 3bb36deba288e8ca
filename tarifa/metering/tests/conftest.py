from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings

from tarifa.metering.services.plans import create_plan, subscribe
from tarifa.tenants.services import create_customer

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
PER_MINUTE_30_6 = {"unit": "second", "block_size": "60", "minimum": "30", "increment": "6"}


@pytest.fixture
def api_usage_waits_for_the_workers():
    """API calls store their usage rated, for the fold workers (on PostgreSQL they otherwise charge
    it in place where they can): for the tests of the workers' fold, which the API feeds."""
    with override_settings(TARIFA_API_FOLD_IN_PLACE=False):
        yield


@pytest.fixture
def plan(tenant):
    return create_plan(
        tenant=tenant, code="tel", name="Telephony", currency="BRL",
        rates=[
            {"kind": "call.local", "price": "0.10", **PER_MINUTE_30_6},
            {"kind": "call.mobile", "destination_prefix": "9", "price": "0.30", **PER_MINUTE_30_6},
            {"kind": "call.long_distance", "destination_prefix": "0", "price": "0.20", **PER_MINUTE_30_6},
            {"kind": "call.international", "destination_prefix": "00", "price": "1.00", "unit": "second",
             "block_size": "60", "minimum": "60", "increment": "60"},
            {"kind": "llm.input_tokens", "unit": "token", "price": "0.50", "block_size": "1000000"},
        ],
        allowances=[{"code": "minutes", "kinds": ["call.local", "call.mobile"], "quantity": "600"}],
    )


@pytest.fixture
def customers(tenant, plan):
    result = []
    for external_id in ("c1", "c2", "c3"):
        customer, _ = create_customer(tenant=tenant, external_id=external_id)
        subscribe(customer=customer, plan=plan, starts_on=date(2025, 1, 1))
        result.append(customer)
    return result


def at(day: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2025, month, day, 10, 0, tzinfo=SAO_PAULO) + timedelta(minutes=minute)


def call(record_id: str, customer: str, seconds, when: datetime, destination: str = "33334444", kind: str = "call") -> dict:
    return {"id": record_id, "customer": customer, "kind": kind, "quantity": seconds,
            "occurred_at": when.isoformat(), "destination": destination}


def fold_with_a_worker_killed(tmp_path, *, batch_size: int, started_after: int, workers: int = 4) -> None:
    """Fold everything waiting with `workers` worker processes on PostgreSQL, `kill -9` one of them
    once `started_after` records are billed, and wait for the others to finish its work."""
    import os
    import signal

    from tarifa.metering.models import UsageRecord
    from tarifa.runtime.models import Job, WorkerHeartbeat
    from tarifa.runtime.testing import spawn
    from tarifa.runtime.tests.test_processes import FAST, _stop, _wait

    env = {**FAST, "TARIFA_FOLD_BATCH_SIZE": str(batch_size)}
    processes = [spawn(["worker"], env=env, log_path=str(tmp_path / f"w{i}.log")) for i in range(workers)]
    victim = processes[0]
    try:
        _wait(lambda: UsageRecord.objects.filter(status="billed").count() >= started_after
              and WorkerHeartbeat.objects.filter(pid=victim.pid).exists(), 60, "folding never started")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        _wait(lambda: not UsageRecord.objects.filter(status="rated").exists()
              and not Job.objects.filter(type="metering.fold", status__in=["queued", "leased"]).exists(),
              120, "folding did not finish after the kill")
    finally:
        _stop(processes)
