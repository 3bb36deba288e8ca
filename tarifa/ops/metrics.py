"""Prometheus metrics. Multiprocess-safe: with PROMETHEUS_MULTIPROC_DIR set (the CLI sets it for
`run`, `web` and `worker`), each process writes its own files and /metrics aggregates them."""

from __future__ import annotations

import fcntl
import os

from django.db import transaction
from prometheus_client import Counter, Histogram
from prometheus_client.mmap_dict import MmapedDict

JOBS_TOTAL = Counter("tarifa_jobs_total", "Jobs finished by type and outcome", ["type", "outcome"])
JOB_DURATION = Histogram(
    "tarifa_job_duration_seconds", "Handler run time per job type", ["type"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
JOB_START_LATENCY = Histogram(
    "tarifa_job_start_latency_seconds", "Time from a job's due time to its start", ["type"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300),
)
JOBS_ENQUEUED = Counter("tarifa_jobs_enqueued_total", "Jobs enqueued", ["type"])
HTTP_REQUESTS = Counter("tarifa_http_requests_total", "HTTP requests by method and status", ["method", "status"])
WEBHOOK_DELIVERIES = Counter("tarifa_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
USAGE_RECORDS = Counter("tarifa_usage_records_total",
                        "Usage records received (API and imports) by outcome: accepted, duplicate, conflict, "
                        "rejected, skipped (an unbillable CDR)", ["outcome"])
USAGE_FOLDED = Counter("tarifa_usage_folded_total", "Usage records billed into monthly summaries by folds")
CLOSE_MADE = Counter("tarifa_close_made_total", "What monthly closes made: invoices, adjustments, credit_notes",
                     ["what"])


def count_on_commit(counter, amount: int, **labels) -> None:
    """Add `amount` once the current transaction commits (at once outside one), so work that
    rolls back, a fold batch or an import chunk, is not counted."""
    if amount:
        metric = counter.labels(**labels) if labels else counter
        transaction.on_commit(lambda: metric.inc(amount))


def count_usage(counts) -> None:
    """Count usage records by outcome ({"accepted": 3, "rejected": 1, …}) once committed."""
    for outcome, amount in counts.items():
        count_on_commit(USAGE_RECORDS, amount, outcome=outcome)


# The kinds of multiprocess files whose values add up across processes (we keep no gauges there).
ARCHIVED_KINDS = ("counter", "histogram")


def archive_process_metrics(pid: int | None = None) -> None:
    """Add a finished process's counter and histogram files to the metrics folder's archive files
    (`counter_archive.db`, `histogram_archive.db`, which /metrics reads like any other) and remove
    them. prometheus-client writes a file per process and kind and reads every file at each
    scrape: an import run from cron every few minutes had left one behind per run, for good.
    Counts are kept, so counters never go back. Merged under a lock (concurrent exits); a scrape
    in the instant between the archive's write and the removal counts that process twice."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not os.path.isdir(folder):
        return
    pid = pid or os.getpid()
    with open(os.path.join(folder, "archive.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for kind in ARCHIVED_KINDS:
            source = os.path.join(folder, f"{kind}_{pid}.db")
            if not os.path.exists(source):
                continue
            # Raw per-key values (histogram buckets unaccumulated), so adding them is the merge.
            values = MmapedDict.read_all_values_from_file(source)
            archive = MmapedDict(os.path.join(folder, f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _position in values:
                    archive.write_value(key, archive.read_value(key)[0] + value, timestamp)
            finally:
                archive.close()
            os.remove(source)
