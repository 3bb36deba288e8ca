from __future__ import annotations

from django.db.models import Count, QuerySet

from tarifa.core.errors import NotFound
from tarifa.metering.models import Allowance, PricePlan, Summary, UsageRecord
from tarifa.tenants.models import Customer, Tenant


def plans(*, tenant: Tenant) -> QuerySet[PricePlan]:
    return PricePlan.objects.filter(tenant=tenant).prefetch_related("rates", "allowances")


def plan_by_code(*, tenant: Tenant, code: str) -> PricePlan:
    plan = plans(tenant=tenant).filter(code=code).first()
    if plan is None:
        raise NotFound("plan", code)
    return plan


def pending_groups(*, tenant_id: int | None = None, customer_id: int | None = None, period: str | None = None):
    """[(customer_id, period, waiting records)] of every summary with rated records waiting to fold."""
    records = UsageRecord.objects.filter(status=UsageRecord.Status.RATED)
    if tenant_id:
        records = records.filter(tenant_id=tenant_id)
    if customer_id:
        records = records.filter(customer_id=customer_id)
    if period:
        records = records.filter(period=period)
    return list(records.values_list("customer_id", "period").annotate(n=Count("id")).order_by("customer_id", "period"))


def summaries(*, customer: Customer, period: str | None = None) -> QuerySet[Summary]:
    result = Summary.objects.filter(customer=customer).prefetch_related("lines", "allowance_usage__allowance")
    return result.filter(period=period) if period else result.order_by("-period")


def usage_records(*, tenant: Tenant, customer: Customer | None = None, status: str | None = None,
                  period: str | None = None) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(tenant=tenant).select_related("snapshot")
    if customer is not None:
        records = records.filter(customer=customer)
    if status:
        records = records.filter(status=status)
    if period:
        records = records.filter(period=period)
    return records


def allowances_by_plan(*, plan_ids) -> dict[int, list[Allowance]]:
    """Each plan's allowances, in code order (the first that covers a kind is the one it consumes)."""
    result: dict[int, list[Allowance]] = {}
    for allowance in Allowance.objects.filter(plan_id__in=set(plan_ids)).select_related("plan").order_by("code"):
        result.setdefault(allowance.plan_id, []).append(allowance)
    return result


def covering_allowance(allowances: list[Allowance], kind: str) -> Allowance | None:
    return next((a for a in allowances if a.covers(kind)), None)
