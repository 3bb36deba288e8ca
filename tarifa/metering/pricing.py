"""Resolving a usage record to its customer, plan and rate, with per-call caches.

Rating is deterministic: the same record against the same plans gives the same result.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from tarifa.metering.models import PricePlan, Rate, RateSnapshot, Subscription, UsageRecord
from tarifa.metering.rating import (
    RateTerms, Tier, billable_quantity, charge_out_of_range, longest_prefix, rate_key,
)
from tarifa.tenants.models import Customer, Tenant


@dataclass(frozen=True)
class Rating:
    status: str  # "rated" | "unrated"
    reason: str = ""
    customer_id: int | None = None
    plan_id: int | None = None
    rated_kind: str = ""
    billable_quantity: Decimal | None = None
    snapshot_id: int | None = None
    currency: str = ""


def snapshot_of(rate: Rate, plan: PricePlan) -> dict:
    return {
        "plan": plan.code, "rate_id": rate.id, "kind": rate.kind, "prefix": rate.destination_prefix,
        "unit": rate.unit, "price": str(rate.price), "block_size": str(rate.block_size),
        "minimum": str(rate.minimum), "increment": str(rate.increment), "tiers": rate.tiers,
        "rounding": rate.rounding, "places": plan.currency_places, "currency": plan.currency,
    }


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def snapshot_id_for(data: dict) -> int:
    """The id of the stored snapshot with this content, storing it the first time."""
    return snapshot_ids_for([data])[0]


def snapshot_ids_for(datas: list[dict]) -> list[int]:
    """The ids of the stored snapshots with these contents (in order), storing missing ones."""
    digests = [_digest(d) for d in datas]
    found = dict(RateSnapshot.objects.filter(digest__any=set(digests)).values_list("digest", "id"))
    missing = {digest: data for digest, data in zip(digests, datas) if digest not in found}
    if missing:  # one INSERT for a tariff of thousands of rates; a concurrent call may store some first
        RateSnapshot.objects.bulk_create([RateSnapshot(digest=digest, data=data) for digest, data in missing.items()],
                                         ignore_conflicts=True)
        found.update(RateSnapshot.objects.filter(digest__any=list(missing)).values_list("digest", "id"))
    return [found[d] for d in digests]


def max_price(rate: Rate) -> Decimal:
    """The highest price per block a rate may charge: its price, or its dearest tier's."""
    return max([rate.price, *(Decimal(str(tier["price"])) for tier in rate.tiers or [])])


def terms_of(snapshot: dict) -> RateTerms:
    return RateTerms(
        price=Decimal(snapshot["price"]), block_size=Decimal(snapshot["block_size"]),
        minimum=Decimal(snapshot["minimum"]), increment=Decimal(snapshot["increment"]),
        tiers=tuple(Tier(up_to=None if t["up_to"] is None else Decimal(t["up_to"]), price=Decimal(t["price"]))
                    for t in snapshot.get("tiers") or []),
        rounding=snapshot["rounding"], places=int(snapshot["places"]),
    )


class _PlanTable:
    def __init__(self, plan: PricePlan):
        self.plan = plan
        self.by_kind: dict[str, dict[str, Rate]] = {}
        for rate in plan.rates.all():
            self.by_kind.setdefault(rate.kind, {})[rate.destination_prefix] = rate
        self._family: dict[str, dict[str, Rate]] = {}

    def rate_for(self, kind: str, destination: str) -> Rate | None:
        """Rates of the exact kind; otherwise the kind is a family ("call") and the longest
        destination prefix among its members ("call.local", "call.mobile", …) decides."""
        table = self.by_kind.get(kind)
        if table is None:
            table = self._family.get(kind)
            if table is None:
                table = {}
                for member in sorted(k for k in self.by_kind if k.startswith(kind + ".")):
                    for prefix, rate in self.by_kind[member].items():
                        table.setdefault(prefix, rate)
                self._family[kind] = table
        return longest_prefix(destination, table) if table else None


class Rater:
    """Rates records of one tenant; caches customers, subscriptions and plans for one batch."""

    def __init__(self, tenant: Tenant):
        self.tenant = tenant
        self.tz = tenant.tzinfo
        self._customers: dict[str, Customer | None] = {}
        self._subscriptions: dict[int, tuple[list[date], list[int]]] = {}
        self._plans: dict[int, _PlanTable] = {}
        self._snapshots: dict[int, int] = {}  # rate id -> snapshot id
        self._max_prices: dict[int, Decimal] = {}  # rate id -> max_price (its tiers parsed once, not per record)

    def preload_customers(self, refs: set[str]) -> None:
        missing = [r for r in refs if r not in self._customers]
        found = {c.external_id: c for c in Customer.objects.filter(tenant=self.tenant, external_id__in=missing)}
        for ref in missing:
            self._customers[ref] = found.get(ref)
        ids = [c.id for c in found.values() if c.id not in self._subscriptions]
        by_customer: dict[int, list[Subscription]] = {i: [] for i in ids}
        for sub in Subscription.objects.filter(customer_id__in=ids).order_by("starts_on"):
            by_customer[sub.customer_id].append(sub)
        for customer_id, subs in by_customer.items():
            self._subscriptions[customer_id] = ([s.starts_on for s in subs], [s.plan_id for s in subs])

    def customer(self, ref: str) -> Customer | None:
        if ref not in self._customers:
            self.preload_customers({ref})
        return self._customers[ref]

    def plan_on(self, customer_id: int, day: date) -> _PlanTable | None:
        days, plan_ids = self._subscriptions.get(customer_id, ([], []))
        index = bisect.bisect_right(days, day) - 1
        if index < 0:
            return None
        plan_id = plan_ids[index]
        if plan_id not in self._plans:
            self._plans[plan_id] = _PlanTable(PricePlan.objects.prefetch_related("rates").get(pk=plan_id))
        return self._plans[plan_id]

    def period_of(self, occurred_at: datetime) -> str:
        return occurred_at.astimezone(self.tz).strftime("%Y-%m")

    def rate(self, *, customer_ref: str, kind: str, quantity: Decimal, occurred_at: datetime, destination: str,
             attributes: dict | None = None) -> Rating:
        customer = self.customer(customer_ref)
        if customer is None:
            return Rating(status="unrated", reason=UsageRecord.UnratedReason.UNKNOWN_CUSTOMER)
        table = self.plan_on(customer.id, occurred_at.astimezone(self.tz).date())
        if table is None:
            return Rating(status="unrated", reason=UsageRecord.UnratedReason.NO_PLAN, customer_id=customer.id)
        rate = table.rate_for(kind, rate_key(kind=kind, destination=destination, attributes=attributes))
        if rate is None:
            return Rating(status="unrated", reason=UsageRecord.UnratedReason.NO_RATE_FOR_KIND, customer_id=customer.id,
                          plan_id=table.plan.id)
        dearest = self._max_prices.get(rate.id)
        if dearest is None:
            dearest = self._max_prices[rate.id] = max_price(rate)
        if charge_out_of_range(quantity, minimum=rate.minimum, increment=rate.increment, block_size=rate.block_size,
                               max_price=dearest):
            return Rating(status="unrated", reason=UsageRecord.UnratedReason.CHARGE_OUT_OF_RANGE,
                          customer_id=customer.id, plan_id=table.plan.id)
        snapshot_id = self._snapshots.get(rate.id)
        if snapshot_id is None:
            snapshot_id = self._snapshots[rate.id] = snapshot_id_for(snapshot_of(rate, table.plan))
        return Rating(
            status="rated", customer_id=customer.id, plan_id=table.plan.id, rated_kind=rate.kind,
            billable_quantity=billable_quantity(quantity, minimum=rate.minimum, increment=rate.increment),
            snapshot_id=snapshot_id, currency=table.plan.currency,
        )
