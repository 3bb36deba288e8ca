"""Health of each part Tarifa depends on."""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from tarifa.runtime.selectors import live_workers
from tarifa.runtime.transports import get_transport


def health_checks() -> dict[str, dict]:
    checks: dict[str, dict] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "detail": connection.vendor}
    except Exception as exc:
        checks["database"] = {"ok": False, "detail": repr(exc)}
    if settings.TARIFA_BROKER_URL:
        ok, detail = get_transport().check()
        checks["broker"] = {"ok": ok, "detail": detail}
    if settings.TARIFA_REDIS_URL:
        try:
            import redis

            redis.Redis.from_url(settings.TARIFA_REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
            checks["redis"] = {"ok": True, "detail": "ping"}
        except Exception as exc:
            checks["redis"] = {"ok": False, "detail": repr(exc)}
    if checks["database"]["ok"]:
        workers = live_workers().count()
        checks["workers"] = {
            "ok": workers > 0,
            "detail": f"{workers} live" if workers else
            f"no worker heartbeat in the last {settings.TARIFA_WORKER_STALE_SECONDS:.0f}s",
        }
    return checks
