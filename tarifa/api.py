"""The REST API: one NinjaAPI, each domain mounting its thin router under /api/v1/."""

from __future__ import annotations

import json
import math

from django.db import DataError, IntegrityError
from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from tarifa.core.auth import ApiKeyAuth
from tarifa.core.errors import NUMERIC_OUT_OF_RANGE, STRING_TOO_LONG, DomainError, is_unique_violation, sqlstate
from tarifa.core.text import LONE_SURROGATE, SURROGATE_ESCAPE, has_lone_surrogate


class StrictJsonParser(Parser):
    """JSON as the standard defines it, in UTF-8: Python's reader also takes NaN, Infinity, numbers
    beyond a float's range (as infinity) and unpaired surrogates, which no column or jsonb value
    can store (they had been 500s)."""

    def parse_body(self, request: HttpRequest):
        text = request.body.decode("utf-8")  # strictly: json.loads(bytes) lets encoded surrogates through
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        if SURROGATE_ESCAPE.search(text) and has_lone_surrogate(data):
            raise ValueError(f"a string {LONE_SURROGATE}")
        return data


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text if len(text) <= 24 else text[:20] + '…'} is beyond the range of numbers this API takes")
    return value


api = NinjaAPI(
    title="Tarifa API",
    version="1",
    description="Billing and collections engine. Authenticate with `Authorization: Bearer <api key>`.",
    auth=ApiKeyAuth(),
    urls_namespace="api",
    docs_url="/docs",
    parser=StrictJsonParser(),
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


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError):
    """Ninja's own refusals, in our {code, message} shape; a body it could not parse (400) carries
    the parser's reason as its cause."""
    if exc.status_code == 400 and exc.__cause__ is not None:
        body = {"code": "invalid_json", "message": f"The request body is not JSON this API takes: {exc.__cause__}"}
    else:
        body = {"code": f"http_{exc.status_code}", "message": str(exc)}
    return api.create_response(request, body, status=exc.status_code)


# What PostgreSQL refuses that a check above it missed: a 422 naming the limit, not a 500 (the
# transaction is rolled back, nothing is stored). Services check what they know by field name
# (core.text.check_lengths, core.money.check_decimal); this is the net under them.
DATA_ERRORS = {STRING_TOO_LONG: ("value_too_long", "A text value is longer than its field allows"),
               NUMERIC_OUT_OF_RANGE: ("number_out_of_range", "A number is beyond what its field holds")}


@api.exception_handler(DataError)
def _data_error(request: HttpRequest, exc: DataError):
    cause = exc.__cause__
    known = DATA_ERRORS.get(sqlstate(exc))
    if known is None:
        raise exc
    code, message = known
    detail = str(cause).splitlines()[0] if cause else ""
    return api.create_response(request, {"code": code, "message": f"{message} ({detail})."}, status=422)


# Two requests creating the same thing at once (a plan code, an endpoint…): a service checks that
# it does not exist, then creates it, and the later of the two hits the unique key. A 409 that
# says to look again, not a 500; the transaction is rolled back, nothing is stored. Other
# integrity errors are bugs, and stay 500s.
@api.exception_handler(IntegrityError)
def _integrity_error(request: HttpRequest, exc: IntegrityError):
    if not is_unique_violation(exc):
        raise exc
    return api.create_response(request, {
        "code": "conflict", "message": "Another request created the same thing at the same moment; read it, or retry."},
        status=409)


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
