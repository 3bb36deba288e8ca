from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Count, Min, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from tarifa.core.errors import NotFound
from tarifa.core.money import DecimalSum
from tarifa.metering.models import Allowance, PendingSummary, PricePlan, Subscription, Summary, UsageRecord
from tarifa.tenants.models import Customer, Tenant


def plans(*, tenant: Tenant) -> QuerySet[PricePlan]:
    return PricePlan.objects.filter(tenant=tenant).prefetch_related("rates", "allowances")


def plan_by_code(*, tenant: Tenant, code: str) -> PricePlan:
    plan = plans(tenant=tenant).filter(code=code).first()
    if plan is None:
        raise NotFound("plan", code)
    return plan


def periods_to_rerate(*, subscription: Subscription) -> list[str]:
    """The periods of the customer's usage dated from the subscription's first day (in the tenant's
    time zone) until the next subscription's that was rated under another plan, or found no plan
    (unrated, no_plan): what a re-rate of those periods changes. A plan change dated back over
    rated usage re-rates nothing by itself, since those months may have been invoiced already."""
    customer = subscription.customer
    later = (Subscription.objects.filter(customer=customer, starts_on__gt=subscription.starts_on)
             .order_by("starts_on").values_list("starts_on", flat=True).first())
    records = (UsageRecord.objects.filter(customer=customer, period__gte=subscription.starts_on.strftime("%Y-%m"))
               .annotate(local_day=TruncDate("occurred_at", tzinfo=customer.tenant.tzinfo))
               .filter(local_day__gte=subscription.starts_on))
    if later is not None:
        records = records.filter(period__lte=later.strftime("%Y-%m"), local_day__lt=later)
    rated = [UsageRecord.Status.RATED, UsageRecord.Status.BILLED, UsageRecord.Status.FAILED]
    stale = records.filter(Q(status__in=rated) & ~Q(plan_id=subscription.plan_id)
                           | Q(status=UsageRecord.Status.UNRATED, unrated_reason=UsageRecord.UnratedReason.NO_PLAN))
    return sorted(set(stale.values_list("period", flat=True)))


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


@dataclass(frozen=True)
class UsageBacklog:
    """What monitoring watches of metering, across tenants."""

    waiting: int  # rated records not yet folded
    waiting_summaries: int  # summaries marked for a fold
    oldest_waiting_seconds: float  # since the oldest marker was set (0: none): the fold's lag
    unrated: dict[str, int]  # by reason, until fixed and re-rated
    failed: int  # prepaid records their wallet could not pay


def usage_backlog(*, now: datetime | None = None) -> UsageBacklog:
    """Read at each /metrics scrape: counts by the partial index of records not billed, so they cost
    what the backlog holds, not the table."""
    now = now or timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # With stale statistics (autovacuum late or off) the planner took a scan of the whole
            # usage table for cheaper: 140 ms a scrape at a million records, growing with the table.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
        unbilled = dict(UsageRecord.objects.exclude(status=UsageRecord.Status.BILLED).values_list("status")
                        .annotate(n=Count("*")).order_by())
        unrated = dict(UsageRecord.objects.filter(status=UsageRecord.Status.UNRATED).values_list("unrated_reason")
                       .annotate(n=Count("*")).order_by())
    markers = PendingSummary.objects.aggregate(n=Count("summary_id"), oldest=Min("marked_at"))
    return UsageBacklog(
        waiting=unbilled.get(UsageRecord.Status.RATED, 0),
        waiting_summaries=markers["n"],
        oldest_waiting_seconds=max(0.0, (now - markers["oldest"]).total_seconds()) if markers["oldest"] else 0.0,
        unrated=unrated,
        failed=unbilled.get(UsageRecord.Status.FAILED, 0),
    )


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


def plans_on(*, customer_ids, day: date) -> dict[int, PricePlan]:
    """Each customer's plan on `day`: its latest subscription starting on or before it."""
    found: dict[int, PricePlan] = {}
    for sub in (Subscription.objects.filter(customer_id__in=customer_ids, starts_on__lte=day)
                .select_related("plan").order_by("customer_id", "starts_on")):
        found[sub.customer_id] = sub.plan  # later starts overwrite earlier ones
    return found


def current_plan(*, customer: Customer) -> PricePlan | None:
    """The plan a customer is on today in the tenant's time zone."""
    day = timezone.now().astimezone(customer.tenant.tzinfo).date()
    return plans_on(customer_ids=[customer.id], day=day).get(customer.id)


STAT_STATUSES = {"pending": UsageRecord.Status.RATED, "charged": UsageRecord.Status.BILLED,
                 "failed": UsageRecord.Status.FAILED, "reversed": UsageRecord.Status.REVERSED,
                 "unrated": UsageRecord.Status.UNRATED}


def billing_stats(*, tenant: Tenant, customer: Customer | None = None) -> dict:
    """Counts and amounts by billing status, overall and per customer (charged/reversed: the
    amount charged; failed: what it would have cost; pending: priced when folded)."""
    records = UsageRecord.objects.filter(tenant=tenant)
    if customer is not None:
        records = records.filter(customer=customer)
    rows = (records.values("customer_ref", "status")
            .annotate(count=Count("id"), charged=DecimalSum("charged_amount"), due=DecimalSum("amount_due"))
            .order_by("customer_ref"))

    def empty() -> dict:
        return {name: {"count": 0, "amount": None if name in ("pending", "unrated") else Decimal(0)}
                for name in STAT_STATUSES}

    overall, per_customer = empty(), {}
    names = {status: name for name, status in STAT_STATUSES.items()}
    for row in rows:
        name = names[row["status"]]
        amount = row["due"] if name == "failed" else row["charged"]
        for figures in (overall, per_customer.setdefault(row["customer_ref"], empty())):
            figures[name]["count"] += row["count"]
            if figures[name]["amount"] is not None:
                figures[name]["amount"] += amount or 0
    return {"overall": overall, "customers": [{"customer": ref, **figures} for ref, figures in per_customer.items()]}


def summaries_maybe_due_events(*, ids: list[int], crossed: set[int], quiet_since: datetime) -> list[Summary]:
    """The summaries among `ids` that `folding.emit_summary_events` may emit for: never emitted,
    last emitted at or before `quiet_since`, or past an allowance threshold."""
    due = Q(last_event_at__isnull=True) | Q(last_event_at__lte=quiet_since) | Q(id__any=crossed)
    return list(Summary.objects.filter(due, id__any=ids).select_related("customer").order_by("id"))


def waiting_usage(summary_id):
    """Usage rated into a summary and not folded yet (`summary_id` may be an OuterRef). The monthly
    close waits for it (the workers fold within seconds; the close runs every 15 minutes), or the
    invoice would miss it."""
    return UsageRecord.objects.filter(summary_id=summary_id, status=UsageRecord.Status.RATED)
