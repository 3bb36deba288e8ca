"""Metering API: price plans, subscriptions, usage ingestion, reading and reversal, monthly summaries,
on-demand billing."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from pydantic import BaseModel, ConfigDict

from tarifa.core.auth import check_cron_secret
from tarifa.core.errors import DomainError
from tarifa.core.pagination import paginate
from tarifa.core.schemas import ErrorOut
from tarifa.metering import selectors
from tarifa.metering.models import UsageRecord
from tarifa.metering.periods import checked_period
from tarifa.metering.services import ingestion, plans, processing, reversal
from tarifa.tenants.selectors import customer_by_external_id

router = Router()


# --- plans ---------------------------------------------------------------------------


class TierIO(Schema):
    up_to: Decimal | None = None
    price: Decimal


class RateIO(Schema):
    kind: str
    destination_prefix: str = ""
    description: str = ""
    unit: str = "event"
    price: Decimal
    block_size: Decimal = Decimal(1)
    minimum: Decimal = Decimal(0)
    increment: Decimal = Decimal(1)
    tiers: list[TierIO] = []
    rounding: str = "half_up"


class AllowanceIO(Schema):
    code: str
    kinds: list[str]
    quantity: Decimal


class PlanIn(Schema):
    code: str
    name: str = ""
    currency: str | None = None
    currency_places: int = 2
    rates: list[RateIO]
    allowances: list[AllowanceIO] = []
    alert_thresholds: list[int] = []
    monthly_grant: Decimal | None = None
    grant_expiry_days: int | None = None


class PlanTermsIn(Schema):
    name: str | None = None
    rates: list[RateIO]
    allowances: list[AllowanceIO] = []
    alert_thresholds: list[int] | None = None
    monthly_grant: Decimal | None = None
    grant_expiry_days: int | None = None


class PlanOut(Schema):
    code: str
    name: str
    currency: str
    currency_places: int
    alert_thresholds: list[int]
    rates: list[RateIO]
    allowances: list[AllowanceIO]
    monthly_grant: Decimal | None
    grant_expiry_days: int | None
    updated_at: datetime

    @staticmethod
    def resolve_alert_thresholds(obj) -> list[int]:
        return obj.thresholds

    @staticmethod
    def resolve_rates(obj) -> list:
        return list(obj.rates.all())

    @staticmethod
    def resolve_allowances(obj) -> list:
        return list(obj.allowances.all())


class PlanPage(Schema):
    items: list[PlanOut]
    next_cursor: str | None


def _terms(payload) -> dict:
    data = payload.dict()
    data["rates"] = [{**r, "tiers": [{"up_to": t["up_to"], "price": t["price"]} for t in r["tiers"]]}
                     for r in data["rates"]]
    return data


@router.post("/plans", response={201: PlanOut, 409: ErrorOut, 422: ErrorOut}, tags=["plans"])
def create_plan(request: HttpRequest, payload: PlanIn):
    plan = plans.create_plan(tenant=request.tenant, **_terms(payload))
    return Status(201, selectors.plan_by_code(tenant=request.tenant, code=plan.code))


@router.get("/plans", response=PlanPage, tags=["plans"])
def list_plans(request: HttpRequest, cursor: str | None = None, limit: int = 50):
    return paginate(selectors.plans(tenant=request.tenant), cursor=cursor, limit=limit)


@router.get("/plans/{code}", response={200: PlanOut, 404: ErrorOut}, tags=["plans"])
def get_plan(request: HttpRequest, code: str):
    return selectors.plan_by_code(tenant=request.tenant, code=code)


@router.put("/plans/{code}", response={200: PlanOut, 404: ErrorOut, 422: ErrorOut}, tags=["plans"])
def replace_plan_terms(request: HttpRequest, code: str, payload: PlanTermsIn):
    plan = selectors.plan_by_code(tenant=request.tenant, code=code)
    plans.replace_plan_terms(plan=plan, **_terms(payload))
    return selectors.plan_by_code(tenant=request.tenant, code=code)


class SubscriptionIn(Schema):
    plan: str
    starts_on: date


class SubscriptionOut(Schema):
    plan: str
    starts_on: date
    rerate_periods: list[str] = Field(description=(
        "Periods holding usage from starts_on that was rated under another plan (or found none): the "
        "change applies to it once re-rated (`tarifa usage rerate --period`, or POST /usage/rerate-unrated "
        "for usage that found no plan)."))


@router.post("/customers/{external_id}/subscriptions", response={201: SubscriptionOut, 404: ErrorOut, 422: ErrorOut},
             tags=["plans"])
def subscribe(request: HttpRequest, external_id: str, payload: SubscriptionIn):
    """Put the customer on a plan from `starts_on`. Usage already rated from that day keeps its
    plan until re-rated: `rerate_periods` names the periods it is in."""
    customer = customer_by_external_id(tenant=request.tenant, external_id=external_id)
    plan = selectors.plan_by_code(tenant=request.tenant, code=payload.plan)
    subscription = plans.subscribe(customer=customer, plan=plan, starts_on=payload.starts_on)
    return Status(201, {"plan": plan.code, "starts_on": subscription.starts_on,
                        "rerate_periods": selectors.periods_to_rerate(subscription=subscription)})


# --- usage ---------------------------------------------------------------------------


class UsageIn(Schema):
    records: list[Any]


class RecordResultOut(BaseModel):
    """A plain pydantic model, not a ninja Schema: a Schema reads every field of every object
    through Django-aware accessors, which cost more than storing the record (5,000 per call)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    status: str
    code: str | None = None
    message: str | None = None


class IngestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    accepted: int
    duplicate: int
    conflict: int
    rejected: int
    results: list[RecordResultOut]


@router.post("/usage", response={200: IngestOut, 422: ErrorOut}, tags=["usage"])
def ingest_usage(request: HttpRequest, payload: UsageIn):
    """Up to 5,000 records; each answered accepted / duplicate / conflict (409-style) / rejected."""
    result = ingestion.ingest_usage(tenant=request.tenant, records=payload.records)
    return {**result.counts, "results": result.results}


class UsageOut(Schema):
    id: str
    customer: str
    kind: str
    quantity: Decimal
    occurred_at: datetime
    period: str
    destination: str
    attributes: dict[str, Any]
    status: str
    unrated_reason: str
    rated_kind: str
    billable_quantity: Decimal | None
    rate: dict[str, Any]
    batch_id: int | None
    allowance_used: Decimal | None
    charged_amount: Decimal | None
    billed_at: datetime | None
    wallet_entry_id: int | None = Field(None, description="The usage_debit that paid for it (prepaid).")
    failure_code: str
    amount_due: Decimal | None
    reversed_at: datetime | None
    reversal_reason: str

    @staticmethod
    def resolve_id(obj) -> str:
        return obj.external_id

    @staticmethod
    def resolve_customer(obj) -> str:
        return obj.customer_ref

    @staticmethod
    def resolve_rate(obj) -> dict:
        return obj.snapshot.data if obj.snapshot_id else {}


class UsagePage(Schema):
    items: list[UsageOut]
    next_cursor: str | None


@router.get("/usage", response={200: UsagePage, 404: ErrorOut, 422: ErrorOut}, tags=["usage"])
def list_usage(request: HttpRequest, customer: str | None = None, status: UsageRecord.Status | None = None,
               period: str | None = None, cursor: str | None = None, limit: int = 100):
    owner = customer_by_external_id(tenant=request.tenant, external_id=customer) if customer else None
    records = selectors.usage_records(tenant=request.tenant, customer=owner, status=status, period=checked_period(period))
    return paginate(records, cursor=cursor, limit=limit)


class ReverseIn(Schema):
    reason: str = Field(..., min_length=1, max_length=200)


class ReverseOut(Schema):
    reversed: bool = Field(..., description="False when it had been reversed before (nothing changed).")
    refund_entry_id: int | None
    usage: UsageOut


@router.post("/usage/{usage_id}/reverse", response={200: ReverseOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
             tags=["usage"])
def reverse_usage(request: HttpRequest, usage_id: str, payload: ReverseIn):
    """Take a charged record out of its summary and refund a prepaid wallet; repeating changes nothing."""
    result = reversal.reverse_usage(tenant=request.tenant, external_id=usage_id, reason=payload.reason,
                                    caused_by=f"api-key:{request.api_key.prefix}")
    record = selectors.usage_records(tenant=request.tenant).get(pk=result.record.pk)
    return {"reversed": result.changed, "refund_entry_id": result.refund.id if result.refund else None,
            "usage": record}


class RerateOut(Schema):
    rated: int
    unrated: int


@router.post("/usage/rerate-unrated", response=RerateOut, tags=["usage"])
def rerate_unrated(request: HttpRequest, reason: UsageRecord.UnratedReason | None = None):
    return ingestion.rerate_unrated(tenant=request.tenant, reason=reason)


# --- summaries -------------------------------------------------------------------------


class LineOut(Schema):
    kind: str
    unit: str
    record_count: int
    quantity: Decimal
    minutes: Decimal | None
    billable_quantity: Decimal
    allowance_used: Decimal
    charged_amount: Decimal

    @staticmethod
    def resolve_minutes(obj) -> Decimal | None:
        return (obj.quantity / 60).quantize(Decimal("0.01")) if obj.unit == "second" else None


class AllowanceUsageOut(Schema):
    allowance: str
    included: Decimal
    used: Decimal
    percent_used: Decimal

    @staticmethod
    def resolve_allowance(obj) -> str:
        return obj.allowance.code

    @staticmethod
    def resolve_percent_used(obj) -> Decimal:
        return (obj.used * 100 / obj.included).quantize(Decimal("0.01")) if obj.included else Decimal(0)


class SummaryOut(Schema):
    customer: str
    period: str
    currency: str
    record_count: int
    total_amount: Decimal
    wallet_paid_amount: Decimal = Field(description="What prepaid wallets paid of the total; the monthly close "
                                                    "invoices the rest.")
    lines: list[LineOut]
    allowances: list[AllowanceUsageOut]
    updated_at: datetime

    @staticmethod
    def resolve_customer(obj) -> str:
        return obj.customer.external_id

    @staticmethod
    def resolve_lines(obj) -> list:
        return sorted(obj.lines.all(), key=lambda line: line.kind)

    @staticmethod
    def resolve_allowances(obj) -> list:
        return list(obj.allowance_usage.all())


@router.get("/customers/{external_id}/summaries", response={200: list[SummaryOut], 404: ErrorOut, 422: ErrorOut},
            tags=["usage"])
def list_summaries(request: HttpRequest, external_id: str, period: str | None = None):
    customer = customer_by_external_id(tenant=request.tenant, external_id=external_id)
    return list(selectors.summaries(customer=customer, period=checked_period(period)).select_related("customer"))


# --- on-demand billing -----------------------------------------------------------------


class ProcessIn(Schema):
    all: bool = False
    customer: str | None = None
    usage_ids: list[str] | None = Field(None, max_length=5000)
    run_async: bool = Field(False, alias="async")


class ProcessOut(Schema):
    processed: int
    charged: int
    failed: int
    amount_charged: Decimal


class QueuedOut(Schema):
    job_id: int
    status: str = "queued"


@router.post("/billing/process", response={200: ProcessOut, 202: QueuedOut, 404: ErrorOut, 422: ErrorOut},
             tags=["billing"])
def process_billing(request: HttpRequest, payload: ProcessIn):
    """Charge waiting (and failed) usage now: everything, one customer's, or the listed records."""
    chosen = [bool(payload.all), payload.customer is not None, payload.usage_ids is not None]
    if sum(chosen) != 1:
        raise DomainError("invalid_scope", 'Give exactly one of "all": true, "customer" or "usage_ids".')
    customer = (customer_by_external_id(tenant=request.tenant, external_id=payload.customer)
                if payload.customer is not None else None)
    if payload.run_async:
        job_id = processing.queue_processing(tenant=request.tenant, customer=customer, usage_ids=payload.usage_ids)
        return Status(202, {"job_id": job_id})
    return processing.process_usage(tenant=request.tenant, customer=customer, usage_ids=payload.usage_ids).as_dict()


class StatusFiguresOut(Schema):
    count: int
    amount: Decimal | None = Field(None, description="Charged (charged, reversed) or due (failed); pending is "
                                                      "priced when folded.")


class BillingFiguresOut(Schema):
    pending: StatusFiguresOut
    charged: StatusFiguresOut
    failed: StatusFiguresOut
    reversed: StatusFiguresOut
    unrated: StatusFiguresOut


class CustomerFiguresOut(BillingFiguresOut):
    customer: str


class BillingStatsOut(Schema):
    overall: BillingFiguresOut
    customers: list[CustomerFiguresOut]


@router.get("/billing/stats", response={200: BillingStatsOut, 404: ErrorOut}, tags=["billing"])
def billing_stats(request: HttpRequest, customer: str | None = None):
    owner = customer_by_external_id(tenant=request.tenant, external_id=customer) if customer else None
    return selectors.billing_stats(tenant=request.tenant, customer=owner)


class CronOut(Schema):
    tenants: int
    processed: int
    charged: int
    failed: int
    amount_charged: Decimal


@router.post("/cron/process-billing", auth=None, response={200: CronOut, 401: ErrorOut, 403: ErrorOut},
             tags=["billing"])
def cron_process_billing(request: HttpRequest):
    """For an external cron: the same processing for every tenant, authorised by `X-Cron-Secret`."""
    check_cron_secret(given=request.headers.get("X-Cron-Secret"))
    return processing.process_all_tenants().as_dict()
