"""Price plans, their rates and allowances, and customers' subscriptions to them."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

from django.db import transaction

from tarifa.core.errors import Conflict, DomainError
from tarifa.core.money import MONEY, QUANTITY, check_decimal
from tarifa.core.text import check_lengths
from tarifa.metering.models import Allowance, PricePlan, Rate, Subscription
from tarifa.metering.rating import ROUNDING_MODES, normalize_destination, rate_key
from tarifa.tenants.models import Customer, Tenant

KIND_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


def _decimal(value, *, field: str, positive: bool = False, column: dict = QUANTITY) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise DomainError("invalid_number", f"{field} must be a decimal number, got {value!r}.", field=field)
    if not number.is_finite() or number < 0 or (positive and number == 0):
        raise DomainError("invalid_number", f"{field} must be {'> 0' if positive else '>= 0'}.", field=field)
    return check_decimal(number, field=field, column=column)


def _check_kind(kind: str, *, field: str) -> str:
    if not KIND_PATTERN.match(kind or ""):
        raise DomainError("invalid_kind", f"'{kind}' is not a usage kind (lowercase words joined by dots).", field=field)
    return kind


def _at(where: str, name: str) -> str:
    """An error's field: `name` within `where` ("rates[0]" in a plan's body; "" for one rate alone)."""
    return f"{where}.{name}" if where else name


def clean_rate(rate: dict, *, where: str = "") -> dict:
    """A rate's terms, checked and normalised as stored (DomainError naming the field otherwise):
    the API's plan bodies and the admin's rate forms both go through here."""
    tiers = []
    given = rate.get("tiers") or []
    if not isinstance(given, list) or not all(isinstance(tier, dict) for tier in given):
        raise DomainError("invalid_tiers", 'tiers is a list of {"up_to": …, "price": …}.', field=_at(where, "tiers"))
    for t_index, tier in enumerate(given):
        up_to = tier.get("up_to")
        tiers.append({
            "up_to": None if up_to in (None, "") else str(
                _decimal(up_to, field=_at(where, f"tiers[{t_index}].up_to"), positive=True)),
            "price": str(_decimal(tier.get("price"), field=_at(where, f"tiers[{t_index}].price"), column=MONEY)),
        })
    bounds = [Decimal(t["up_to"]) for t in tiers if t["up_to"] is not None]
    if tiers and (tiers[-1]["up_to"] is not None or bounds != sorted(set(bounds)) or len(bounds) != len(tiers) - 1):
        raise DomainError("invalid_tiers", "Tiers need ascending up_to bounds and a last tier without up_to.",
                          field=_at(where, "tiers"))
    rounding = rate.get("rounding", "half_up")
    if rounding not in ROUNDING_MODES:
        raise DomainError("invalid_rounding", f"rounding must be one of {', '.join(ROUNDING_MODES)}.",
                          field=_at(where, "rounding"))
    unit = rate.get("unit", Rate.Unit.EVENT)
    if unit not in Rate.Unit.values:
        raise DomainError("invalid_unit", f"unit must be one of {', '.join(Rate.Unit.values)}.", field=_at(where, "unit"))
    prefix = rate.get("destination_prefix") or ""
    if str(rate.get("kind", "")).startswith("llm."):  # token usage: the prefix is a model name
        prefix = rate_key(kind=rate["kind"], destination=prefix)
    elif prefix and normalize_destination(prefix) != prefix:
        raise DomainError("invalid_prefix", "A destination prefix holds digits and an optional leading +.",
                          field=_at(where, "destination_prefix"))
    check_lengths(Rate, {"kind": rate.get("kind", ""), "destination_prefix": prefix,
                         "description": rate.get("description", "")}, where=where)
    return dict(
        kind=_check_kind(rate.get("kind", ""), field=_at(where, "kind")),
        destination_prefix=prefix,
        description=rate.get("description", ""),
        unit=unit,
        price=_decimal(rate.get("price", 0), field=_at(where, "price"), column=MONEY),
        block_size=_decimal(rate.get("block_size", 1), field=_at(where, "block_size"), positive=True),
        minimum=_decimal(rate.get("minimum", 0), field=_at(where, "minimum")),
        increment=_decimal(rate.get("increment", 1), field=_at(where, "increment"), positive=True),
        tiers=tiers,
        rounding=rounding,
    )


def clean_allowance(allowance: dict, *, where: str = "") -> dict:
    """An allowance checked and normalised as stored (see clean_rate)."""
    kinds = allowance.get("kinds") or []
    if not kinds or not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        raise DomainError("invalid_allowance", "An allowance needs a list of at least one kind.",
                          field=_at(where, "kinds"))
    for kind in kinds:
        _check_kind(kind[:-2] if kind.endswith(".*") else kind, field=_at(where, "kinds"))
    check_lengths(Allowance, {"code": allowance.get("code") or ""}, where=where)
    return dict(code=allowance.get("code") or "allowance", kinds=list(kinds),
                quantity=_decimal(allowance.get("quantity"), field=_at(where, "quantity"), positive=True))


def clean_thresholds(thresholds) -> list[int]:
    if not isinstance(thresholds or [], list) or not all(type(t) is int for t in thresholds or []):
        raise DomainError("invalid_thresholds", "Thresholds are a list of whole percentages.", field="alert_thresholds")
    cleaned = sorted(set(thresholds or []))
    if any(not 0 < t <= 1000 for t in cleaned):
        raise DomainError("invalid_thresholds", "Thresholds are percentages between 1 and 1000.",
                          field="alert_thresholds")
    return cleaned


def _write_terms(plan: PricePlan, rates: list[dict], allowances: list[dict]) -> None:
    cleaned_rates = [clean_rate(r, where=f"rates[{i}]") for i, r in enumerate(rates)]
    keys = [(r["kind"], r["destination_prefix"]) for r in cleaned_rates]
    if len(keys) != len(set(keys)):
        raise DomainError("duplicate_rate", "Two rates share a kind and destination prefix.", field="rates")
    cleaned_allowances = [clean_allowance(a, where=f"allowances[{i}]") for i, a in enumerate(allowances)]
    if len({a["code"] for a in cleaned_allowances}) != len(cleaned_allowances):
        raise DomainError("duplicate_allowance", "Two allowances share a code.", field="allowances")
    plan.rates.all().delete()
    Rate.objects.bulk_create([Rate(plan=plan, **r) for r in cleaned_rates])
    existing = {a.code: a for a in plan.allowances.all()}
    for allowance in cleaned_allowances:
        current = existing.pop(allowance["code"], None)
        if current is None:
            Allowance.objects.create(plan=plan, **allowance)
        else:  # kept by code, so alerts and usage already recorded against it stay linked
            current.kinds, current.quantity = allowance["kinds"], allowance["quantity"]
            current.save(update_fields=["kinds", "quantity"])
    for stale in existing.values():
        stale.delete()


def create_plan(
    *, tenant: Tenant, code: str, name: str, currency: str | None = None, currency_places: int = 2,
    rates: list[dict], allowances: list[dict] | None = None, alert_thresholds: list[int] | None = None,
    monthly_grant: Decimal | None = None, grant_expiry_days: int | None = None,
) -> PricePlan:
    clean_plan_code(code)
    check_lengths(PricePlan, {"name": name or ""})
    with transaction.atomic():
        if PricePlan.objects.filter(tenant=tenant, code=code).exists():
            raise Conflict("plan_exists", f"Plan '{code}' already exists; use PUT to change its terms.", field="code")
        plan = PricePlan.objects.create(
            tenant=tenant, code=code, name=name or code, currency=clean_currency(currency or tenant.default_currency),
            currency_places=clean_currency_places(currency_places), alert_thresholds=clean_thresholds(alert_thresholds),
            **clean_grant(monthly_grant, grant_expiry_days),
        )
        _write_terms(plan, rates, allowances or [])
    return plan


def replace_plan_terms(
    *, plan: PricePlan, name: str | None = None, rates: list[dict], allowances: list[dict] | None = None,
    alert_thresholds: list[int] | None = None, monthly_grant: Decimal | None = None,
    grant_expiry_days: int | None = None,
) -> PricePlan:
    """Replace a plan's rates, allowances and grant. Usage already rated keeps its snapshot until re-rated."""
    check_lengths(PricePlan, {"name": name or ""})
    with transaction.atomic():
        if name:
            plan.name = name
        for key, value in clean_grant(monthly_grant, grant_expiry_days).items():
            setattr(plan, key, value)
        if alert_thresholds is not None:
            plan.alert_thresholds = clean_thresholds(alert_thresholds)
        plan.save()
        _write_terms(plan, rates, allowances or [])
    return plan


def clean_plan_code(code: str) -> str:
    if not re.match(r"^[a-z0-9][a-z0-9_-]*$", code or ""):
        raise DomainError("invalid_code", "A plan code holds lowercase letters, digits, - and _.", field="code")
    check_lengths(PricePlan, {"code": code})
    return code


def clean_currency_places(places: int) -> int:
    """Charges are rounded to these places and stored in columns of MONEY's."""
    if not 0 <= places <= MONEY["decimal_places"]:
        raise DomainError("invalid_currency_places", f"currency_places is 0 to {MONEY['decimal_places']}.",
                          field="currency_places")
    return places


def clean_currency(currency: str) -> str:
    currency = currency.strip().upper()
    if not re.match(r"^[A-Z][A-Z0-9_]{2,15}$", currency):
        raise DomainError("invalid_currency", "currency is an ISO 4217 code (BRL) or a named credit unit "
                          "(3-16 letters, digits or _).", field="currency")
    return currency


def clean_grant(amount: Decimal | None, expiry_days: int | None) -> dict:
    if amount is not None:
        check_decimal(amount, field="monthly_grant")
    if amount is not None and amount < 0:
        raise DomainError("invalid_grant", "monthly_grant must be zero or positive.", field="monthly_grant")
    if expiry_days is not None and expiry_days < 1:
        raise DomainError("invalid_grant_expiry", "grant_expiry_days must be at least 1.", field="grant_expiry_days")
    return {"monthly_grant": amount or None, "grant_expiry_days": expiry_days}


def subscribe(*, customer: Customer, plan: PricePlan, starts_on: date) -> Subscription:
    """Put a customer on a plan from `starts_on`; the same day again replaces that day's choice."""
    check_plan_of_customer(customer=customer, plan=plan)
    subscription, _ = Subscription.objects.update_or_create(
        customer=customer, starts_on=starts_on, defaults={"plan": plan}
    )
    return subscription


def check_plan_of_customer(*, customer: Customer, plan: PricePlan) -> None:
    """A customer subscribes to its own tenant's plans only."""
    if plan.tenant_id != customer.tenant_id:
        raise DomainError("plan_not_found", "No such plan for this tenant.", field="plan")
