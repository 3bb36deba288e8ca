from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from tarifa.runtime import services
from tarifa.runtime.models import Job, Priority, SampleTally
from tarifa.runtime.testing import drain
from tarifa.runtime.tests import jobs_for_tests  # noqa: F401  (registers test job types)
from tarifa.runtime.worker import JobContext, Worker

pytestmark = pytest.mark.django_db


def _expire_leases() -> None:
    """Move time past every lease (as if the worker holding them had died a while ago)."""
    Job.objects.filter(status="leased").update(leased_until=timezone.now() - timedelta(seconds=1))


def _tally(name: str) -> int:
    return SampleTally.objects.get(name=name).total


def test_job_enqueued_in_rolled_back_transaction_never_runs():
    SampleTally.objects.create(name="t")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            services.enqueue("runtime.sample_tally", payload={"counter": "t"})
            raise RuntimeError("caller fails after enqueueing")
    assert Job.objects.count() == 0
    assert drain() == 0
    assert _tally("t") == 0


def test_committed_job_runs_and_is_marked_succeeded():
    SampleTally.objects.create(name="t")
    with transaction.atomic():
        job = services.enqueue("runtime.sample_tally", payload={"counter": "t", "amount": 3})
    assert drain() == 1
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 1 and job.finished_at
    assert _tally("t") == 3


def test_unknown_job_type_is_refused_at_enqueue():
    with pytest.raises(services.UnknownJobType):
        services.enqueue("no.such.job")


def test_sample_job_handler_running_twice_has_no_double_effect():
    SampleTally.objects.create(name="t")
    context = JobContext(job_id=42, type="runtime.sample_tally", attempt=1, max_attempts=5, worker_id="w")
    from tarifa.runtime.tasks import sample_tally

    sample_tally(context, counter="t", amount=5)
    sample_tally(context, counter="t", amount=5)  # redelivery of the same job
    assert _tally("t") == 5


def test_redelivered_job_after_lost_completion_applies_once():
    """A worker that ran the handler but died before marking the job done: the rerun is harmless."""
    SampleTally.objects.create(name="t")
    services.enqueue("runtime.sample_tally", payload={"counter": "t"})
    dying = Worker(batch_size=10, lease_seconds=30)
    with mock.patch.object(services, "complete_jobs", return_value=0):
        dying.run_once()  # effect applied, completion lost
    assert _tally("t") == 1
    _expire_leases()
    assert services.reap_expired_leases() == 1
    assert drain() == 1
    assert _tally("t") == 1
    assert Job.objects.get().status == Job.Status.SUCCEEDED


def test_expired_lease_returns_job_to_the_pool():
    services.enqueue("runtime.noop")
    first = services.claim_due_jobs(worker_id="dead", queues=["default"], limit=10, lease_seconds=5)
    assert len(first) == 1
    assert services.claim_due_jobs(worker_id="other", queues=["default"], limit=10, lease_seconds=5) == []
    assert services.reap_expired_leases() == 0  # lease still running
    _expire_leases()
    assert services.reap_expired_leases() == 1
    second = services.claim_due_jobs(worker_id="other", queues=["default"], limit=10, lease_seconds=5)
    assert [j.id for j in second] == [first[0].id]
    assert second[0].attempts == 2
    # The dead worker's late completion is ignored: the job now belongs to "other".
    assert services.complete_jobs(worker_id="dead", job_ids=[first[0].id]) == 0


def test_lease_expiring_on_last_attempt_fails_the_job():
    services.enqueue("runtime.noop", max_attempts=1)
    services.claim_due_jobs(worker_id="dead", queues=["default"], limit=1, lease_seconds=1)
    _expire_leases()
    services.reap_expired_leases()
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED and "lease expired" in job.last_error


def test_priorities_are_honoured_when_backlogged():
    for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.LOW, Priority.HIGH):
        services.enqueue("runtime.noop", priority=priority)
    claimed = services.claim_due_jobs(worker_id="w", queues=["default"], limit=10, lease_seconds=30)
    assert [j.priority for j in claimed] == [10, 10, 5, 1, 1]


def test_a_claim_takes_one_long_running_job_and_leaves_the_others_to_other_workers():
    for _ in range(3):
        services.enqueue("tests.long")
    services.enqueue("runtime.noop")
    first = services.claim_due_jobs(worker_id="a", queues=["default"], limit=10, lease_seconds=30)
    assert sorted(j.type for j in first) == ["runtime.noop", "tests.long"]
    second = services.claim_due_jobs(worker_id="b", queues=["default"], limit=10, lease_seconds=30)
    assert [j.type for j in second] == ["tests.long"]
    assert Job.objects.filter(status=Job.Status.QUEUED, type="tests.long").count() == 1


def test_after_a_long_running_job_the_worker_claims_again_without_waiting():
    for _ in range(2):
        services.enqueue("tests.long")
    worker = Worker(batch_size=10)
    assert worker.run_once() == 10  # one job ran; "full", so the slot loops at once
    assert worker.run_once() == 10
    assert worker.run_once() == 0
    assert Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 2


def test_future_jobs_wait_for_their_due_time():
    services.enqueue("runtime.noop", run_at=timezone.now() + timedelta(minutes=5))
    assert services.claim_due_jobs(worker_id="w", queues=["default"], limit=10, lease_seconds=30) == []
    later = timezone.now() + timedelta(minutes=6)
    assert len(services.claim_due_jobs(worker_id="w", queues=["default"], limit=10, lease_seconds=30, now=later)) == 1


def test_queues_are_separate():
    services.enqueue("runtime.noop", queue="billing")
    assert services.claim_due_jobs(worker_id="w", queues=["default"], limit=10, lease_seconds=30) == []
    assert len(services.claim_due_jobs(worker_id="w", queues=["billing"], limit=10, lease_seconds=30)) == 1


def test_unique_key_deduplicates():
    assert services.enqueue("runtime.noop", unique_key="k1") is not None
    assert services.enqueue("runtime.noop", unique_key="k1") is None
    assert Job.objects.count() == 1


def test_retries_with_backoff_then_fails_and_cli_requeues(capsys):
    job = services.enqueue("tests.flaky", payload={"fail_times": 10})  # no backoff: retries at once
    drain()
    job.refresh_from_db()
    assert job.attempts == 3  # the type's maximum
    assert job.status == Job.Status.FAILED
    assert "planned failure 3" in job.last_error
    call_command("jobs", "failed")
    assert "tests.flaky" in capsys.readouterr().out
    call_command("jobs", "stats")
    stats = capsys.readouterr().out
    assert "tests.flaky" in stats and "failed=1" in stats
    call_command("jobs", "retry", "--failed", "--type", "tests.flaky")
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.attempts == 0


def test_failed_attempt_is_rescheduled_with_jitter_within_the_exponential_bound():
    services.enqueue("runtime.sample_tally", payload={"counter": "missing-kwarg-ok", "bad": 1})
    before = timezone.now()
    Worker(batch_size=10).run_once()  # once: drain() runs it again when the jitter draws a delay near 0
    job = Job.objects.get()
    assert job.status == Job.Status.QUEUED and job.attempts == 1
    assert "unexpected keyword argument" in job.last_error
    assert before <= job.run_at <= timezone.now() + timedelta(seconds=2.0)


def test_backoff_is_full_jitter_capped():
    delays = [services.backoff_delay(attempts=6, base=2.0, cap=30.0) for _ in range(500)]
    assert all(0 <= d <= 30.0 for d in delays)
    assert min(delays) < 5 and max(delays) > 25  # spread over the whole range, not clustered
    assert all(services.backoff_delay(attempts=1, base=2.0, cap=30.0) <= 2.0 for _ in range(100))


def test_retry_after_transient_failures_succeeds():
    job = services.enqueue("tests.flaky", payload={"fail_times": 2})
    for _ in range(3):
        Job.objects.filter(pk=job.pk).update(run_at=timezone.now())
        drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 3


def test_stopping_worker_releases_unstarted_jobs():
    for _ in range(5):
        services.enqueue("runtime.noop")
    worker = Worker(batch_size=5)
    calls = []

    def stop_after_first(ctx, **payload):
        calls.append(ctx.job_id)
        worker.stop()

    from tarifa.runtime import registry

    spec = registry.job_type("runtime.noop")
    with mock.patch.dict(registry._job_types, {"runtime.noop": spec.__class__(**{**spec.__dict__, "handler": stop_after_first})}):
        worker.run_once()
    assert len(calls) == 1
    statuses = sorted(Job.objects.values_list("status", "attempts"))
    assert statuses == [("queued", 0)] * 4 + [("succeeded", 1)]


def test_purge_removes_old_finished_jobs_only():
    services.enqueue("runtime.noop")
    drain()
    services.enqueue("runtime.noop")
    Job.objects.filter(status="succeeded").update(finished_at=timezone.now() - timedelta(days=8))
    assert services.purge_finished_jobs(older_than=timedelta(days=7)) == 1
    assert Job.objects.count() == 1


def test_worker_heartbeat_is_recorded(transactional_db):
    import threading

    from tarifa.runtime.models import WorkerHeartbeat
    from tarifa.runtime.selectors import live_workers

    worker = Worker(heartbeat_seconds=0.1, poll_seconds=0.05)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    try:
        for _ in range(100):
            if live_workers().filter(worker_id=worker.worker_id).exists():
                break
            threading.Event().wait(0.05)
        assert live_workers().filter(worker_id=worker.worker_id).exists()
    finally:
        worker.stop()
        thread.join(10)
    assert WorkerHeartbeat.objects.get(worker_id=worker.worker_id).status == "stopped"
