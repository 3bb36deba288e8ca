from __future__ import annotations

import time
import uuid

from django.db import transaction

from tarifa.core.commands import TarifaCommand
from tarifa.runtime import selectors, services
from tarifa.runtime.models import SampleTally


class Command(TarifaCommand):
    help = "Inspect and operate background jobs (stats, failed, retry, smoke)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("stats", help="Queued / due / leased / failed counts per job type and queue.")
        failed = sub.add_parser("failed", help="List failed jobs with their last error.")
        failed.add_argument("--type", dest="job_type")
        failed.add_argument("--limit", type=int, default=50)
        retry = sub.add_parser("retry", help="Re-queue failed jobs.")
        retry.add_argument("--failed", action="store_true", required=True, help="Retry jobs in the failed state.")
        retry.add_argument("--type", dest="job_type")
        smoke = sub.add_parser("smoke", help="Enqueue sample jobs and wait until running workers finish them.")
        smoke.add_argument("--count", type=int, default=100)
        smoke.add_argument("--timeout", type=float, default=60.0)

    def handle(self, *args, action, **options):
        getattr(self, "_" + action)(**options)

    def _stats(self, **_):
        rows = selectors.job_stats()
        self.table(["queue", "type", "queued", "due", "leased", "failed"],
                   [[r["queue"], r["type"], r["queued"], r["due"], r["leased"], r["failed"]] for r in rows])
        totals = [sum(r[k] for r in rows) for k in ("queued", "due", "leased", "failed")]
        self.stdout.write(f"total: queued={totals[0]} due={totals[1]} leased={totals[2]} failed={totals[3]}")

    def _failed(self, *, job_type, limit, **_):
        jobs = selectors.failed_jobs(job_type=job_type)[:limit]
        self.table(["id", "type", "queue", "attempts", "finished", "last error"],
                   [[j.id, j.type, j.queue, j.attempts, f"{j.finished_at:%Y-%m-%d %H:%M:%S}" if j.finished_at else "-",
                     (j.last_error.strip().splitlines() or [""])[-1][:80]] for j in jobs])

    def _retry(self, *, job_type, **_):
        count = services.retry_failed_jobs(job_type=job_type)
        self.stdout.write(f"re-queued {count} failed job(s)")

    def _smoke(self, *, count, timeout, **_):
        counter = f"smoke-{uuid.uuid4().hex[:8]}"
        with transaction.atomic():
            SampleTally.objects.create(name=counter)
            services.enqueue_many("runtime.sample_tally", [{"counter": counter, "amount": 1}] * count)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            total = SampleTally.objects.get(name=counter).total
            if total >= count:
                break
            time.sleep(0.2)
        total = SampleTally.objects.get(name=counter).total
        if total != count:
            from django.core.management.base import CommandError

            raise CommandError(f"smoke test failed: {total} of {count} sample jobs applied within {timeout}s")
        self.stdout.write(f"smoke test passed: {count} sample jobs applied exactly once")
