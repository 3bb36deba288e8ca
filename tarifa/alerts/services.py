"""Raising alerts exactly once per condition, and the allowance threshold check."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from django.db import IntegrityError, transaction

from tarifa.alerts.models import Alert
from tarifa.events.services import emit_events
from tarifa.metering.models import AllowanceUsage
from tarifa.tenants.models import Customer, Tenant


class NewAlert(NamedTuple):
    tenant_id: int
    customer_id: int | None
    customer_external_id: str | None
    type: str
    key: str
    message: str
    data: dict


def raise_alert(*, tenant: Tenant, customer: Customer | None, type: str, key: str, message: str,
                data: dict) -> Alert | None:
    """Create the alert and emit `alert.raised`, unless an alert with this key exists (then None)."""
    raised = raise_alerts(alerts=[NewAlert(
        tenant.id, customer.id if customer else None, customer.external_id if customer else None,
        type, key, message, data,
    )])
    return raised[0] if raised else None


def raise_alerts(*, alerts: list[NewAlert]) -> list[Alert]:
    """Create the alerts whose keys are not raised yet and emit one `alert.raised` for each.

    The unique (tenant, key) makes concurrent checks and retried jobs raise each once; the events
    are part of the same transaction, so they are sent once too. The usual case (nobody else is
    raising the same keys) takes a fixed number of queries; a clash with a concurrent raiser falls
    back to one savepoint per alert.
    """
    fresh = _not_yet_raised(alerts)
    if not fresh:
        return []
    try:
        with transaction.atomic():
            created = Alert.objects.bulk_create([
                Alert(tenant_id=a.tenant_id, customer_id=a.customer_id, type=a.type, key=a.key, message=a.message,
                      data=a.data)
                for a in fresh
            ])
            emit_events(events=[
                (a.tenant_id, "alert.raised", {"alert_id": alert.id, "type": a.type, "key": a.key,
                                               "message": a.message, "customer": a.customer_external_id, **a.data})
                for a, alert in zip(fresh, created)
            ])
    except IntegrityError:
        if len(fresh) == 1:
            return []
        return [alert for one in fresh for alert in raise_alerts(alerts=[one])]
    return created


def _not_yet_raised(alerts: list[NewAlert]) -> list[NewAlert]:
    """The alerts whose (tenant, key) is neither stored nor repeated earlier in the list."""
    seen = set(Alert.objects.filter(tenant_id__in={a.tenant_id for a in alerts}, key__any={a.key for a in alerts})
               .values_list("tenant_id", "key"))
    fresh = []
    for alert in alerts:
        if (alert.tenant_id, alert.key) not in seen:
            seen.add((alert.tenant_id, alert.key))
            fresh.append(alert)
    return fresh


def check_allowance_alerts(*, summary_ids: list[int]) -> list[Alert]:
    """Raise every allowance threshold these summaries have reached and not yet alerted."""
    due = []
    usages = (AllowanceUsage.objects.filter(summary_id__any=summary_ids, included__gt=0)
              .select_related("summary__customer", "allowance__plan").order_by("summary_id", "allowance_id"))
    for usage in usages:
        summary, customer = usage.summary, usage.summary.customer
        percent = usage.used * 100 / usage.included
        for threshold in usage.allowance.plan.thresholds:
            if percent < threshold:
                break
            due.append(NewAlert(
                customer.tenant_id, customer.id, customer.external_id, Alert.Type.ALLOWANCE_THRESHOLD,
                f"allowance:{customer.id}:{summary.period}:{usage.allowance_id}:{threshold}",
                (f"{customer.external_id} used {percent.quantize(Decimal('0.1'))}% of allowance "
                 f"'{usage.allowance.code}' in {summary.period} (threshold {threshold}%)."),
                {"period": summary.period, "allowance": usage.allowance.code, "threshold": threshold,
                 "used": str(usage.used), "included": str(usage.included)},
            ))
    return raise_alerts(alerts=due)
