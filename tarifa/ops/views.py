from __future__ import annotations

import os

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from tarifa.ops.selectors import health_checks
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


@require_GET
def metrics(request):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(_QueueCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Forward:
    def __init__(self, source):
        self.source = source

    def collect(self):
        yield from self.source.collect()
