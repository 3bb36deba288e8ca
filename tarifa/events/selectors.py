from __future__ import annotations

from django.db.models import QuerySet

from tarifa.core.errors import NotFound
from tarifa.events.models import WebhookDelivery, WebhookEndpoint
from tarifa.tenants.models import Tenant


def webhook_endpoints(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant=tenant)


def webhook_endpoint(*, tenant: Tenant, endpoint_id: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(tenant=tenant, pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("webhook_endpoint", str(endpoint_id))
    return endpoint


def webhook_deliveries(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return endpoint.deliveries.select_related("event").prefetch_related("attempt_log")


def webhook_delivery(*, endpoint: WebhookEndpoint, delivery_id: int) -> WebhookDelivery:
    delivery = webhook_deliveries(endpoint=endpoint).filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFound("webhook_delivery", str(delivery_id))
    return delivery
