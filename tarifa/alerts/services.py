"""Raising alerts exactly once per condition, and the allowance threshold check."""

from __future__ import annotations

from decimal import Decimal

from django.db import IntegrityError, transaction

from tarifa.alerts.models import Alert
from tarifa.events.services import emit_event
from tarifa.metering.models import Summary
from tarifa.tenants.models import Customer, Tenant


def raise_alert(*, tenant: Tenant, customer: Customer | None, type: str, key: str, message: str,
                data: dict) -> Alert | None:
    """Create the alert and emit `alert.raised`, unless an alert with this key exists (then None).

    The unique key makes concurrent checks and retried jobs raise it once; the event is part of
    the same transaction, so it is sent once too.
    """
    try:
        with transaction.atomic():
            alert = Alert.objects.create(tenant=tenant, customer=customer, type=type, key=key, message=message,
                                         data=data)
            emit_event(tenant=tenant, type="alert.raised", payload={
                "alert_id": alert.id, "type": type, "key": key, "message": message,
                "customer": customer.external_id if customer else None, **data,
            })
    except IntegrityError:
        return None
    return alert


def check_allowance_alerts(*, summary_id: int) -> list[Alert]:
    """Raise every allowance threshold the summary has reached and not yet alerted."""
    summary = Summary.objects.select_related("customer__tenant").get(pk=summary_id)
    raised = []
    for usage in summary.allowance_usage.select_related("allowance__plan"):
        if usage.included <= 0:
            continue
        percent = usage.used * 100 / usage.included
        for threshold in usage.allowance.plan.thresholds:
            if percent < threshold:
                break
            alert = raise_alert(
                tenant=summary.customer.tenant, customer=summary.customer, type="allowance.threshold",
                key=f"allowance:{summary.customer_id}:{summary.period}:{usage.allowance_id}:{threshold}",
                message=(f"{summary.customer.external_id} used {percent.quantize(Decimal('0.1'))}% of allowance "
                         f"'{usage.allowance.code}' in {summary.period} (threshold {threshold}%)."),
                data={"period": summary.period, "allowance": usage.allowance.code, "threshold": threshold,
                      "used": str(usage.used), "included": str(usage.included)},
            )
            if alert:
                raised.append(alert)
    return raised
