from __future__ import annotations

from django.db.models import QuerySet

from tarifa.alerts.models import Alert
from tarifa.tenants.models import Customer, Tenant


def alerts(*, tenant: Tenant, type: str | None = None, customer: Customer | None = None) -> QuerySet[Alert]:
    result = Alert.objects.filter(tenant=tenant).select_related("customer")
    if type:
        result = result.filter(type=type)
    if customer:
        result = result.filter(customer=customer)
    return result
