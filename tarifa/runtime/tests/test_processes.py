"""Worker processes against the real PostgreSQL (and RabbitMQ): SKIP LOCKED, kill -9, SIGTERM,
broker connections dropped mid-run. These spawn `python -m tarifa worker` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from django.db import connection, transaction

from tarifa.runtime import services
from tarifa.runtime.models import IdempotencyReceipt, Job, SampleTally, WorkerHeartbeat
from tarifa.runtime.testing import spawn
from tarifa.runtime.tests import jobs_for_tests  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"TARIFA_JOB_LEASE_SECONDS": "2", "TARIFA_HEARTBEAT_SECONDS": "0.5", "TARIFA_WORKER_POLL_SECONDS": "0.2"}


def _wait(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message)


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _unfinished() -> int:
    return Job.objects.exclude(status__in=["succeeded", "failed"]).count()


def test_two_workers_never_run_the_same_job(postgres, tmp_path):
    services.enqueue_many("tests.exactly_once", [{"sleep": 0.002}] * 600)
    workers = [spawn(["worker", "--batch-size", "20"], env=FAST, log_path=str(tmp_path / f"w{i}.log")) for i in range(2)]
    try:
        _wait(lambda: _unfinished() == 0, 90, "jobs were not drained")
    finally:
        _stop(workers)
    assert Job.objects.filter(status="succeeded", attempts=1).count() == 600
    assert Job.objects.filter(status="failed").count() == 0, "a job ran twice"
    assert IdempotencyReceipt.objects.filter(key__startswith="ran:").count() == 600
    done = list(WorkerHeartbeat.objects.filter(kind="worker").values_list("jobs_done", flat=True))
    assert len(done) == 2 and all(d > 0 for d in done) and sum(done) == 600


def test_killed_worker_loses_nothing_and_nothing_applies_twice(postgres, tmp_path):
    SampleTally.objects.create(name="kill")
    services.enqueue_many("tests.slow_tally", [{"counter": "kill", "sleep": 0.01}] * 400)
    victim = spawn(["worker", "--batch-size", "25"], env=FAST, log_path=str(tmp_path / "victim.log"))
    survivor = None
    try:
        _wait(lambda: WorkerHeartbeat.objects.filter(pid=victim.pid, current_job_id__isnull=False).exists()
              and Job.objects.filter(status="succeeded").count() > 20, 60, "victim never started working")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        orphaned = Job.objects.filter(status="leased", leased_by__contains=f":{victim.pid}:").count()
        assert orphaned > 0, "the victim held no leases when killed; the test proves nothing"
        survivor = spawn(["worker", "--batch-size", "25"], env=FAST, log_path=str(tmp_path / "survivor.log"))
        _wait(lambda: _unfinished() == 0, 120, "orphaned jobs were never reclaimed")
    finally:
        _stop([p for p in (victim, survivor) if p])
    assert SampleTally.objects.get(name="kill").total == 400
    assert Job.objects.filter(status="succeeded").count() == 400
    assert Job.objects.filter(attempts__gte=2).count() >= 1  # the orphans ran again, harmlessly


def test_sigterm_finishes_or_releases_leased_work(postgres, tmp_path):
    SampleTally.objects.create(name="term")
    services.enqueue_many("tests.slow_tally", [{"counter": "term", "sleep": 0.05}] * 200)
    worker = spawn(["worker", "--batch-size", "50"], env={**FAST, "TARIFA_JOB_LEASE_SECONDS": "300"},
                   log_path=str(tmp_path / "w.log"))
    try:
        _wait(lambda: Job.objects.filter(status="succeeded").count() > 5, 60, "worker never started")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        _stop([worker])
    # With a 5-minute lease nothing could have been reaped: every job is finished or back in the queue.
    assert Job.objects.filter(status="leased").count() == 0
    succeeded = Job.objects.filter(status="succeeded").count()
    assert 0 < succeeded < 200
    assert Job.objects.filter(status="queued", attempts=0).count() == 200 - succeeded
    assert SampleTally.objects.get(name="term").total == succeeded
    assert WorkerHeartbeat.objects.get(pid=worker.pid).status == "stopped"


def test_committed_job_runs_even_when_broker_is_down(postgres, settings):
    settings.TARIFA_BROKER_URL = "amqp://guest:guest@127.0.0.1:1/"
    from tarifa.runtime.transports import reset_transport

    reset_transport()
    SampleTally.objects.create(name="down")
    with transaction.atomic():
        services.enqueue("runtime.sample_tally", payload={"counter": "down"})
    # The wake-up could not be published; the job is in the database and a polling worker runs it.
    from tarifa.runtime.testing import drain

    assert drain() == 1
    assert SampleTally.objects.get(name="down").total == 1


def test_rabbitmq_connection_drop_mid_run_loses_no_job(postgres, broker_url, tmp_path):
    SampleTally.objects.create(name="amqp")
    env = {**FAST, "TARIFA_BROKER_URL": broker_url, "TARIFA_WORKER_POLL_SECONDS": "30"}
    workers = [spawn(["worker", "--batch-size", "10"], env=env, log_path=str(tmp_path / f"w{i}.log")) for i in range(2)]
    try:
        _wait(lambda: WorkerHeartbeat.objects.filter(kind="worker", status="running").count() == 2, 30, "no workers")
        time.sleep(1.0)  # let both consumers attach
        for wave in range(3):
            with transaction.atomic():
                services.enqueue_many("tests.slow_tally", [{"counter": "amqp", "sleep": 0.005}] * 100)
            if wave < 2:
                time.sleep(0.3)
                result = subprocess.run(["rabbitmqctl", "close_all_connections", "test: drop mid-run"],
                                        capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, result.stderr
                time.sleep(2.0)  # robust connections re-open and re-attach their consumers
        # Polling is 30 s here, so finishing well inside that proves the wake-ups came back.
        _wait(lambda: SampleTally.objects.get(name="amqp").total == 300, 25, "jobs were lost or stuck")
    finally:
        _stop(workers)
    assert Job.objects.filter(status="succeeded").count() == 300
    connection.close()
