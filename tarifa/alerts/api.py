from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from tarifa.alerts import selectors
from tarifa.core.pagination import paginate

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


@router.get("", response=AlertPage)
def list_alerts(request: HttpRequest, type: str | None = None, customer: str | None = None,
                cursor: str | None = None, limit: int = 50):
    return paginate(selectors.alerts(tenant=request.tenant, type=type, customer=customer), cursor=cursor, limit=limit)
