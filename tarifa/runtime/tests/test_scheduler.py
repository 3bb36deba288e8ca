from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest

from tarifa.runtime import registry
from tarifa.runtime.models import Job, PeriodicSchedule
from tarifa.runtime.scheduler import fire_due_schedules, next_fire_time, sync_periodic_schedules

UTC = dt_timezone.utc


def test_cron_is_evaluated_on_the_zone_wall_clock():
    # 00:05 on the 1st in São Paulo (UTC-3) is 03:05 UTC.
    after = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    fire = next_fire_time(cron="5 0 1 * *", timezone_name="America/Sao_Paulo", after=after)
    assert fire == datetime(2026, 2, 1, 3, 5, tzinfo=UTC)
    assert fire.astimezone(ZoneInfo("America/Sao_Paulo")).hour == 0


def test_cron_follows_daylight_saving_changes():
    # Lisbon moves from UTC+0 to UTC+1 on 2026-03-29: 09:00 local is 09:00 UTC before, 08:00 after.
    before = next_fire_time(cron="0 9 * * *", timezone_name="Europe/Lisbon", after=datetime(2026, 3, 27, 12, tzinfo=UTC))
    after = next_fire_time(cron="0 9 * * *", timezone_name="Europe/Lisbon", after=datetime(2026, 3, 30, 12, tzinfo=UTC))
    assert before.hour == 9 and after.hour == 8


@pytest.fixture
def every_minute(monkeypatch):
    monkeypatch.setitem(
        registry._periodics, "test.every_minute",
        registry.Periodic(name="test.every_minute", cron="* * * * *", job_type="runtime.noop"),
    )
    return "test.every_minute"


@pytest.mark.django_db
def test_each_tick_fires_once_and_missed_ticks_coalesce(every_minute):
    start = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    sync_periodic_schedules(now=start)
    schedule = PeriodicSchedule.objects.get(name=every_minute)
    assert schedule.next_run_at == datetime(2026, 5, 1, 12, 1, tzinfo=UTC)
    assert fire_due_schedules(now=start) == []
    assert every_minute in fire_due_schedules(now=start + timedelta(seconds=40))
    assert every_minute not in fire_due_schedules(now=start + timedelta(seconds=45))  # same tick again
    # The scheduler was down for ten minutes: one catch-up firing, then back on the minute grid.
    assert every_minute in fire_due_schedules(now=start + timedelta(minutes=10, seconds=5))
    schedule.refresh_from_db()
    assert schedule.next_run_at == datetime(2026, 5, 1, 12, 11, tzinfo=UTC)
    jobs = Job.objects.filter(type="runtime.noop").order_by("id")
    assert [j.payload["scheduled_for"] for j in jobs] == [
        "2026-05-01T12:01:00+00:00", "2026-05-01T12:02:00+00:00",
    ]


@pytest.mark.django_db
def test_changing_the_cron_restarts_the_clock(every_minute, monkeypatch):
    now = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    sync_periodic_schedules(now=now)
    monkeypatch.setitem(
        registry._periodics, every_minute,
        registry.Periodic(name=every_minute, cron="0 * * * *", job_type="runtime.noop"),
    )
    sync_periodic_schedules(now=now)
    assert PeriodicSchedule.objects.get(name=every_minute).next_run_at == datetime(2026, 5, 1, 13, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_fire_each_tick_exactly_once_on_postgres(postgres, every_minute):
    start = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    sync_periodic_schedules(now=start)
    ticks = 40
    import threading

    from tarifa.runtime.testing import run_in_threads

    tick = threading.Barrier(2)

    def scheduler(_index: int) -> list[str]:
        fired = []
        for minute in range(1, ticks + 1):
            tick.wait(30)  # both race for every tick
            fired += fire_due_schedules(now=start + timedelta(minutes=minute))
        return fired

    fired = run_in_threads(scheduler, 2)
    ours = [name for name in fired[0] + fired[1] if name == every_minute]
    assert len(ours) == ticks  # each tick fired by exactly one of the two schedulers
    keys = list(Job.objects.filter(type="runtime.noop").values_list("unique_key", flat=True))
    assert len(keys) == ticks and len(set(keys)) == ticks


@pytest.mark.django_db
def test_the_admin_pauses_schedules_and_reads_jobs_and_workers(operator):
    """Schedules come from the code and settings (a cron typed in the admin that croniter could
    not read had failed every scheduler tick); jobs change through the queue's own commands."""
    from tarifa.runtime.models import Job, PeriodicSchedule
    from tarifa.runtime.scheduler import sync_periodic_schedules
    from tarifa.runtime.services import enqueue

    sync_periodic_schedules()
    schedule = PeriodicSchedule.objects.get(name="metering.sweep")
    url = f"/admin/runtime/periodicschedule/{schedule.pk}/change/"
    assert operator.post(url, {"cron": "not a cron", "enabled": ""}).status_code == 302
    schedule.refresh_from_db()
    assert schedule.cron == "* * * * *" and schedule.enabled is False  # paused, its cron untouched
    assert operator.get("/admin/runtime/periodicschedule/add/").status_code == 403
    job = enqueue("metering.sweep")
    operator.post(f"/admin/runtime/job/{job.pk}/change/", {"status": "succeeded"})
    assert Job.objects.get(pk=job.pk).status == "queued"
    assert operator.get("/admin/runtime/job/add/").status_code == 403
    assert operator.get("/admin/runtime/workerheartbeat/").status_code == 200
