"""API authentication: `Authorization: Bearer <key>` or the older `X-Billing-API-Key: <key>`."""

from __future__ import annotations

import hmac

from django.conf import settings
from ninja.security.base import AuthBase

from tarifa.core import ratelimit
from tarifa.core.errors import DomainError
from tarifa.tenants.selectors import api_key_for
from tarifa.tenants.services import touch_api_key


class RateLimited(DomainError):
    status = 429


class ApiKeyAuth(AuthBase):
    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request):
        header = request.headers.get("Authorization", "")
        raw = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("X-Billing-API-Key", "")
        if not raw:
            return None
        api_key = api_key_for(raw_key=raw)
        if api_key is None:
            return None
        if not ratelimit.hit(limit=settings.TARIFA_API_RATE_LIMIT, key=f"api:{api_key.prefix}"):
            raise RateLimited("rate_limited", f"Too many requests for this key (limit {settings.TARIFA_API_RATE_LIMIT}).")
        touch_api_key(api_key=api_key)
        request.tenant = api_key.tenant
        request.api_key = api_key
        return api_key


def check_cron_secret(*, given: str | None) -> None:
    """Authorise an external cron call: X-Cron-Secret against TARIFA_CRON_SECRET, in constant time."""
    expected = settings.TARIFA_CRON_SECRET or ""
    if not expected:
        raise DomainError("cron_disabled", "The cron endpoint is disabled: TARIFA_CRON_SECRET is not set.", status=403)
    if not hmac.compare_digest((given or "").encode(), expected.encode()):
        raise DomainError("invalid_cron_secret", "Missing or wrong X-Cron-Secret header.", status=401)
