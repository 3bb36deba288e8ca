"""The REST API: one NinjaAPI, each domain mounting its thin router under /api/v1/."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError

from tarifa.core.auth import ApiKeyAuth
from tarifa.core.errors import DomainError

api = NinjaAPI(
    title="Tarifa API",
    version="1",
    description="Billing and collections engine. Authenticate with `Authorization: Bearer <api key>`.",
    auth=ApiKeyAuth(),
    urls_namespace="api",
    docs_url="/docs",
)


@api.exception_handler(DomainError)
def _domain_error(request: HttpRequest, exc: DomainError):
    return api.create_response(request, exc.as_dict(), status=exc.status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "payload")]
    body = {
        "code": "invalid_input",
        "field": ".".join(location) or None,
        "message": first.get("msg", "Invalid input."),
        "errors": [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg")} for e in exc.errors
        ],
    }
    return api.create_response(request, body, status=422)


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError):
    return api.create_response(
        request, {"code": "unauthorized", "message": "Missing, unknown or revoked API key."}, status=401
    )


def _mount_routers() -> None:
    from tarifa.alerts.api import router as alerts_router
    from tarifa.events.api import router as webhooks_router
    from tarifa.metering.api import router as metering_router
    from tarifa.payments.api import router as payments_router
    from tarifa.tenants.api import router as customers_router
    from tarifa.wallets.api import router as wallets_router

    api.add_router("/v1/customers", customers_router)
    api.add_router("/v1/customers", wallets_router)
    api.add_router("/v1/webhooks", webhooks_router)
    api.add_router("/v1/alerts", alerts_router)
    api.add_router("/v1", metering_router)
    api.add_router("/v1", payments_router)


_mount_routers()
