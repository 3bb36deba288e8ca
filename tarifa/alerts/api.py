from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from tarifa.alerts import selectors
from tarifa.alerts.models import Alert
from tarifa.core.pagination import paginate
from tarifa.core.schemas import ErrorOut
from tarifa.tenants.selectors import customer_by_external_id

router = Router(tags=["alerts"])


class AlertOut(Schema):
    id: int
    type: str
    key: str
    customer: str | None
    message: str
    data: dict[str, Any]
    raised_at: datetime

    @staticmethod
    def resolve_customer(obj) -> str | None:
        return obj.customer.external_id if obj.customer else None


class AlertPage(Schema):
    items: list[AlertOut]
    next_cursor: str | None


@router.get("", response={200: AlertPage, 404: ErrorOut, 422: ErrorOut})
def list_alerts(request: HttpRequest, type: Alert.Type | None = None, customer: str | None = None,
                cursor: str | None = None, limit: int = 50):
    """Oldest first. An unknown `type` is a 422 and an unknown `customer` a 404, as on /usage: a
    typo had answered an empty list, which reads as "no alerts"."""
    owner = customer_by_external_id(tenant=request.tenant, external_id=customer) if customer else None
    return paginate(selectors.alerts(tenant=request.tenant, type=type, customer=owner), cursor=cursor, limit=limit)
