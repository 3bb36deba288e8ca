"""Rate limits shared by every process through Redis when TARIFA_REDIS_URL is set, else in memory."""

from __future__ import annotations

import threading
from functools import lru_cache

from django.conf import settings
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _limiter() -> MovingWindowRateLimiter:
    url = settings.TARIFA_REDIS_URL or "memory://"
    return MovingWindowRateLimiter(storage_from_string(url))


def hit(*, limit: str, key: str) -> bool:
    """Count one hit of `key` against `limit` (e.g. "100/minute"); False when over the limit."""
    with _lock:
        limiter = _limiter()
    return limiter.hit(parse(limit), "tarifa", key)


def reset_cache() -> None:
    _limiter.cache_clear()


def clear() -> None:
    """Forget every count (the tests: a PostgreSQL test database starts its ids again, and a key such
    as a credential's id would find the spent budget of an earlier run in Redis)."""
    with _lock:
        limiter = _limiter()
    limiter.storage.reset()
