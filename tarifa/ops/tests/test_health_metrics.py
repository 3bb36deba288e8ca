from __future__ import annotations

import json

import pytest
from django.test import Client, override_settings

from tarifa.core import ratelimit
from tarifa.runtime.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def _beat():
    WorkerHeartbeat.objects.create(worker_id="w1", hostname="h", pid=1)


def test_health_is_503_without_live_workers_and_names_the_part():
    response = Client().get("/health")
    assert response.status_code == 503
    assert response.json()["failing"] == ["workers"]
    assert response.json()["checks"]["database"]["ok"] is True


def test_health_is_200_with_a_live_worker():
    _beat()
    response = Client().get("/health")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "ok"


@override_settings(TARIFA_REDIS_URL="redis://127.0.0.1:1/0")
def test_health_reports_unreachable_redis():
    _beat()
    response = Client().get("/health")
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]


@override_settings(TARIFA_BROKER_URL="amqp://guest:guest@127.0.0.1:1/")
def test_health_reports_unreachable_broker():
    _beat()
    response = Client().get("/health")
    assert response.status_code == 503
    assert "broker" in response.json()["failing"]


def test_health_checks_real_broker_and_redis_when_configured(broker_url, redis_url):
    _beat()
    response = Client().get("/health")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["broker"]["ok"] and response.json()["checks"]["redis"]["ok"]


def test_metrics_exposes_job_counters_and_queue_depths():
    from tarifa.runtime.services import enqueue
    from tarifa.runtime.testing import drain

    enqueue("runtime.noop")
    drain()
    enqueue("runtime.noop")
    text = Client().get("/metrics").content.decode()
    assert 'tarifa_jobs_total{outcome="succeeded",type="runtime.noop"}' in text
    assert "tarifa_job_duration_seconds_bucket" in text
    assert 'tarifa_jobs{queue="default",state="queued",type="runtime.noop"} 1.0' in text


def test_responses_carry_a_request_id(api):
    response = api.get("/api/v1/customers/missing")
    assert len(response["X-Request-ID"]) == 32
    echoed = api.client.get("/api/v1/customers", headers={**api.headers, "X-Request-ID": "abc-123"})
    assert echoed["X-Request-ID"] == "abc-123"


def test_request_id_is_bound_for_every_log_line_of_the_request():
    import structlog

    from tarifa.ops.middleware import RequestContextMiddleware

    seen = {}

    def view(request):
        seen.update(structlog.contextvars.get_contextvars())
        from django.http import HttpResponse

        return HttpResponse("ok")

    from django.test import RequestFactory

    RequestContextMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="req-7"))
    assert seen == {"request_id": "req-7"}
    assert structlog.contextvars.get_contextvars() == {}


def test_logs_are_json_lines(capsys):
    from tarifa.ops.logging import configure_logging, get_logger

    configure_logging(level="INFO", fmt="json")
    import structlog

    structlog.contextvars.bind_contextvars(job_id=99)
    try:
        get_logger("tarifa.test").info("hello", answer=42)
    finally:
        structlog.contextvars.clear_contextvars()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "hello" and record["job_id"] == 99 and record["answer"] == 42


@override_settings(TARIFA_API_RATE_LIMIT="3/minute")
def test_api_rate_limit_per_key(api):
    ratelimit.reset_cache()
    codes = [api.get("/api/v1/customers").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert api.get("/api/v1/customers").json()["code"] == "rate_limited"


def test_rate_limit_is_shared_through_redis(redis_url):
    import uuid

    from limits import parse
    from limits.storage import storage_from_string
    from limits.strategies import MovingWindowRateLimiter

    key = f"test-{uuid.uuid4().hex}"
    ratelimit.reset_cache()
    assert all(ratelimit.hit(limit="5/minute", key=key) for _ in range(5))
    # A second, independent limiter (as in another process) sees the same counts in Redis.
    other = MovingWindowRateLimiter(storage_from_string(redis_url))
    assert other.hit(parse("5/minute"), "tarifa", key) is False
    assert ratelimit.hit(limit="5/minute", key=key) is False
