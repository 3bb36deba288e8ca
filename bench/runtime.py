"""Runtime benchmark: enqueue and drain no-op jobs on PostgreSQL with 1, 2 and 4 worker processes.

Prints, per worker count: enqueue rate, drain rate (jobs/s, from the first start to the last
finish recorded in the job rows) and the median enqueue→start latency of a paced stream of jobs
committed one by one while the workers are idle (the latency a single new job sees). Set
TARIFA_BROKER_URL=amqp://… to measure with RabbitMQ wake-ups instead of polling.

    TARIFA_DATABASE_URL=postgres://postgres@127.0.0.1:5432/tarifa_bench .venv/bin/python bench/runtime.py
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tarifa_bench"


def setup_django(url: str) -> None:
    os.environ["TARIFA_DATABASE_URL"] = url
    os.environ.setdefault("TARIFA_LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tarifa.settings")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import django
    import psycopg

    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            admin.execute(f'CREATE DATABASE "{dbname}"')
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_workers(count: int, url: str, batch_size: int) -> list[subprocess.Popen]:
    env = {**os.environ, "TARIFA_DATABASE_URL": url, "TARIFA_LOG_LEVEL": "WARNING",
           "TARIFA_WORKER_POLL_SECONDS": "0.05"}
    return [
        subprocess.Popen([sys.executable, "-m", "tarifa", "worker", "--queues", "bench", "--batch-size", str(batch_size)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(30)


def wait_drained(total: int, timeout: float = 600) -> None:
    from tarifa.runtime.models import Job

    deadline = time.monotonic() + timeout
    while Job.objects.filter(queue="bench", status="succeeded").count() < total:
        if time.monotonic() > deadline:
            raise SystemExit("bench: jobs did not drain in time")
        time.sleep(0.05)


def run(workers_count: int, jobs: int, paced: int, url: str, batch_size: int) -> dict:
    from django.db import connection
    from django.db.models import Max, Min

    from tarifa.runtime import services
    from tarifa.runtime.models import Job, WorkerHeartbeat

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE runtime_job, runtime_workerheartbeat RESTART IDENTITY")
    workers = start_workers(workers_count, url, batch_size)
    try:
        while WorkerHeartbeat.objects.filter(status="running").count() < workers_count:
            time.sleep(0.05)
        # 1. Paced stream: one commit per job, workers idle → the latency of a single new job.
        for _ in range(paced):
            services.enqueue("runtime.noop", queue="bench")
            time.sleep(0.002)
        wait_drained(paced)
        latencies = [
            (started - created).total_seconds()
            for created, started in Job.objects.filter(queue="bench").values_list("created_at", "started_at")
        ]
        # 2. Backlog: enqueue all at once, then measure how fast N workers drain it.
        stop_workers(workers)
        Job.objects.filter(queue="bench").delete()
        t0 = time.perf_counter()
        for offset in range(0, jobs, 10_000):
            services.enqueue_many("runtime.noop", [{}] * min(10_000, jobs - offset), queue="bench")
        enqueue_seconds = time.perf_counter() - t0
        workers = start_workers(workers_count, url, batch_size)
        wait_drained(jobs)
        span = Job.objects.filter(queue="bench").aggregate(first=Min("started_at"), last=Max("finished_at"))
        drain_seconds = (span["last"] - span["first"]).total_seconds()
        attempts = set(Job.objects.filter(queue="bench").values_list("attempts", flat=True))
        assert attempts == {1}, f"some jobs ran more than once: attempts {attempts}"
    finally:
        stop_workers(workers)
    return {
        "workers": workers_count,
        "enqueue_per_s": jobs / enqueue_seconds,
        "drain_per_s": jobs / drain_seconds,
        "latency_median_ms": statistics.median(latencies) * 1000,
        "latency_p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--paced", type=int, default=1_000, help="jobs in the paced latency stream")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    url = os.environ.get("TARIFA_DATABASE_URL") or DEFAULT_URL
    if not url.startswith("postgres"):
        raise SystemExit("bench/runtime.py measures PostgreSQL: set TARIFA_DATABASE_URL=postgres://…")
    setup_django(url)
    transport = "RabbitMQ wake-ups" if os.environ.get("TARIFA_BROKER_URL") else "in-process transport (other processes poll every 50 ms)"
    print(f"runtime benchmark: {args.jobs:,} no-op jobs, batch {args.batch_size}, PostgreSQL, {transport}, {os.cpu_count()} cores")
    print(f"{'workers':>7}  {'enqueue jobs/s':>14}  {'drain jobs/s':>12}  {'latency p50 ms':>14}  {'p95 ms':>7}")
    for count in (int(n) for n in args.workers.split(",")):
        r = run(count, args.jobs, args.paced, url, args.batch_size)
        print(f"{r['workers']:>7}  {r['enqueue_per_s']:>14,.0f}  {r['drain_per_s']:>12,.0f}  "
              f"{r['latency_median_ms']:>14.1f}  {r['latency_p95_ms']:>7.1f}", flush=True)
    print("target: >= 5,000 jobs/s drained with 2 workers")


if __name__ == "__main__":
    main()
