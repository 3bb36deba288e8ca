from __future__ import annotations

import os

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from tarifa.metering.selectors import usage_backlog
from tarifa.ops.selectors import health_checks
from tarifa.payments.selectors import payment_backlog
from tarifa.runtime.selectors import job_stats


@require_GET
def health(request):
    checks = health_checks()
    healthy = all(check["ok"] for check in checks.values())
    failing = [name for name, check in checks.items() if not check["ok"]]
    return JsonResponse(
        {"status": "ok" if healthy else "unhealthy", "failing": failing, "checks": checks},
        status=200 if healthy else 503,
    )


class _QueueCollector:
    """Queue depths read from the database at scrape time (the same in every process)."""

    def collect(self):
        gauge = GaugeMetricFamily("tarifa_jobs", "Jobs by type, queue and state", labels=["type", "queue", "state"])
        for row in job_stats():
            for state in ("queued", "due", "leased", "failed"):
                gauge.add_metric([row["type"], row["queue"], state], row[state])
        yield gauge


class _UsageCollector:
    """Metering's backlog read from the database at scrape time: alert on the fold's lag."""

    def collect(self):
        backlog = usage_backlog()
        yield _gauge("tarifa_usage_waiting_records", "Rated usage records not yet folded into a summary",
                     backlog.waiting)
        yield _gauge("tarifa_fold_waiting_summaries", "Summaries marked with usage waiting for a fold",
                     backlog.waiting_summaries)
        yield _gauge("tarifa_fold_lag_seconds", "Since the oldest summary waiting for a fold was marked (0: none)",
                     backlog.oldest_waiting_seconds)
        yield _gauge("tarifa_usage_failed_records", "Prepaid usage records their wallet could not pay", backlog.failed)
        unrated = GaugeMetricFamily("tarifa_usage_unrated_records", "Usage records that could not be rated, by reason",
                                    labels=["reason"])
        for reason, count in sorted(backlog.unrated.items()):
            unrated.add_metric([reason], count)
        yield unrated


class _PaymentsCollector:
    """Payment checking's backlog read from the database at scrape time: alert on its lag and on
    credentials that fail."""

    def collect(self):
        backlog = payment_backlog()
        yield _gauge("tarifa_payment_checks_active", "Open invoices whose payment is being checked",
                     backlog.active_checks)
        yield _gauge("tarifa_payment_checks_due", "Payment checks due now", backlog.due_checks)
        yield _gauge("tarifa_payment_check_lag_seconds", "Since the oldest due payment check was due (0: none)",
                     backlog.oldest_due_seconds)
        yield _gauge("tarifa_payment_credentials_failing", "Gateway credentials refused or erring",
                     backlog.failing_credentials)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


@require_GET
def metrics(request):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(_QueueCollector())
    registry.register(_UsageCollector())
    registry.register(_PaymentsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Forward:
    def __init__(self, source):
        self.source = source

    def collect(self):
        yield from self.source.collect()
