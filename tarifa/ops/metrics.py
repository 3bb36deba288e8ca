"""Prometheus metrics. Multiprocess-safe: with PROMETHEUS_MULTIPROC_DIR set (the CLI sets it for
`run`, `web` and `worker`), each process writes its own files and /metrics aggregates them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
