"""Webhook endpoints API (/api/v1/webhooks)."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema, Status

from tarifa.core.pagination import paginate
from tarifa.core.schemas import ErrorOut
from tarifa.events import selectors, services

router = Router(tags=["webhooks"])


class EndpointIn(Schema):
    url: str
    event_types: list[str] = []
    description: str = ""


class EndpointPatch(Schema):
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    active: bool | None = None


class EndpointOut(Schema):
    id: int
    url: str
    event_types: list[str]
    description: str
    active: bool
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str


class AttemptOut(Schema):
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str


class DeliveryOut(Schema):
    id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    delivered_at: datetime | None
    attempt_log: list[AttemptOut]

    @staticmethod
    def resolve_event_id(obj) -> str:
        return str(obj.event.uid)

    @staticmethod
    def resolve_event_type(obj) -> str:
        return obj.event.type

    @staticmethod
    def resolve_attempt_log(obj) -> list:
        return list(obj.attempt_log.all())


class EndpointPage(Schema):
    items: list[EndpointOut]
    next_cursor: str | None


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    next_cursor: str | None


@router.post("", response={201: EndpointCreated, 422: ErrorOut})
def create_endpoint(request: HttpRequest, payload: EndpointIn):
    return Status(201, services.create_webhook_endpoint(tenant=request.tenant, **payload.dict()))


@router.get("", response=EndpointPage)
def list_endpoints(request: HttpRequest, cursor: str | None = None, limit: int = 50):
    return paginate(selectors.webhook_endpoints(tenant=request.tenant), cursor=cursor, limit=limit)


@router.get("/{endpoint_id}", response={200: EndpointOut, 404: ErrorOut})
def get_endpoint(request: HttpRequest, endpoint_id: int):
    return selectors.webhook_endpoint(tenant=request.tenant, endpoint_id=endpoint_id)


@router.patch("/{endpoint_id}", response={200: EndpointOut, 404: ErrorOut, 422: ErrorOut})
def update_endpoint(request: HttpRequest, endpoint_id: int, payload: EndpointPatch):
    endpoint = selectors.webhook_endpoint(tenant=request.tenant, endpoint_id=endpoint_id)
    return services.update_webhook_endpoint(endpoint=endpoint, **payload.dict(exclude_unset=True))


@router.delete("/{endpoint_id}", response={204: None, 404: ErrorOut})
def delete_endpoint(request: HttpRequest, endpoint_id: int):
    services.delete_webhook_endpoint(endpoint=selectors.webhook_endpoint(tenant=request.tenant, endpoint_id=endpoint_id))
    return Status(204, None)


@router.get("/{endpoint_id}/deliveries", response={200: DeliveryPage, 404: ErrorOut})
def list_deliveries(request: HttpRequest, endpoint_id: int, cursor: str | None = None, limit: int = 50):
    endpoint = selectors.webhook_endpoint(tenant=request.tenant, endpoint_id=endpoint_id)
    return paginate(selectors.webhook_deliveries(endpoint=endpoint), cursor=cursor, limit=limit)


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver",
             response={202: DeliveryOut, 404: ErrorOut, 409: ErrorOut})
def redeliver(request: HttpRequest, endpoint_id: int, delivery_id: int):
    endpoint = selectors.webhook_endpoint(tenant=request.tenant, endpoint_id=endpoint_id)
    services.redeliver_webhook(delivery=selectors.webhook_delivery(endpoint=endpoint, delivery_id=delivery_id))
    return Status(202, selectors.webhook_delivery(endpoint=endpoint, delivery_id=delivery_id))
