"""Rating arithmetic: pure functions on Decimal, no database.

A rate prices usage in *blocks* (e.g. R$ 0.12 per 60 seconds, US$ 0.50 per 1,000,000 tokens).
Before pricing, a quantity is rounded up to the billing increment with a minimum ("30/6":
at least 30 s, then 6 s steps). Graduated tiers price each unit by the tier that the period's
cumulative chargeable quantity has reached. Each record's charge is rounded once, to the
currency's places with the rate's rounding mode; summaries add rounded charges, so a summary
always equals the sum of its records. Prices are multiplied before dividing by the block, so a
charge is inexact only when the division does not terminate (as PostgreSQL computes it too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal

ROUNDING_MODES = {
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "up": ROUND_UP,
    "down": ROUND_DOWN,
}
ZERO = Decimal(0)


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # cumulative chargeable units in the period; None = no upper bound
    price: Decimal  # per block


@dataclass(frozen=True)
class RateTerms:
    price: Decimal  # per block, used when there are no tiers
    block_size: Decimal = Decimal(1)
    minimum: Decimal = ZERO
    increment: Decimal = Decimal(1)
    tiers: tuple[Tier, ...] = ()
    rounding: str = "half_up"
    places: int = 2


# The most a record may be charged. Money columns hold less than 10^14, so a summary holds at
# least a hundred records of the largest charge; one record priced beyond any column (a quantity
# of 10^16 seconds, say) had failed every fold of its summary, and an import's whole chunk.
MAX_RECORD_CHARGE = Decimal(10) ** 12


def charge_out_of_range(quantity: Decimal, *, minimum: Decimal, increment: Decimal, block_size: Decimal,
                        max_price: Decimal) -> bool:
    """Whether a record could be charged MAX_RECORD_CHARGE or more: a bound (its billable quantity
    is at most its quantity or minimum plus one increment, priced at the rate's highest tier),
    which bulk rating computes in SQL the same way."""
    return (max(quantity, minimum) + increment) * max_price / block_size >= MAX_RECORD_CHARGE


def billable_quantity(quantity: Decimal, *, minimum: Decimal, increment: Decimal) -> Decimal:
    """Round a used quantity up to the billing increment, charging at least the minimum.

    Zero (e.g. a call answered for 0 s) stays zero: there is nothing to bill.
    """
    if quantity <= 0:
        return ZERO
    if quantity <= minimum:
        return minimum
    excess = quantity - minimum
    steps = (excess / increment).to_integral_value(rounding=ROUND_CEILING)
    return minimum + steps * increment


def unrounded_price(quantity: Decimal, *, already: Decimal, terms: RateTerms) -> Decimal:
    """Price of `quantity` units when `already` chargeable units were priced earlier in the period."""
    if quantity <= 0:
        return ZERO
    if not terms.tiers:
        return quantity * terms.price / terms.block_size
    # Tiers are sorted by `up_to` and the last one is unbounded (checked when a plan is saved).
    total, position, remaining = ZERO, already, quantity
    for tier in terms.tiers:
        if tier.up_to is not None and position >= tier.up_to:
            continue
        room = remaining if tier.up_to is None else min(remaining, tier.up_to - position)
        total += room * tier.price / terms.block_size
        position += room
        remaining -= room
        if remaining <= 0:
            break
    return total


def round_money(amount: Decimal, *, places: int, rounding: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUNDING_MODES[rounding])


def charge(quantity: Decimal, *, already: Decimal, terms: RateTerms) -> Decimal:
    """The rounded charge of `quantity` chargeable units (already past any allowance)."""
    return round_money(unrounded_price(quantity, already=already, terms=terms), places=terms.places,
                       rounding=terms.rounding)


def longest_prefix(number: str, prefixes: dict[str, object]) -> object | None:
    """The value whose key is the longest prefix of `number` ("" matches every number)."""
    for length in range(len(number), -1, -1):
        hit = prefixes.get(number[:length])
        if hit is not None:
            return hit
    return None


NOT_DIGITS = re.compile(r"[^0-9]")
ASCII_SPACE = " \t\n\r\f\v"  # what PostgreSQL's rating (metering.services.bulk) trims too


def normalize_destination(raw: str) -> str:
    """Keep the ASCII digits (and a leading +) of a dialled number, as prefixes are written."""
    raw = (raw or "").strip(ASCII_SPACE)
    digits = NOT_DIGITS.sub("", raw)
    return ("+" + digits) if raw.startswith("+") else digits


def rate_key(*, kind: str, destination: str, attributes: dict | None = None) -> str:
    """What rates' destination prefixes are matched against: the dialled number for calls; for token
    usage (`llm.*`) the model name (`destination`, else `attributes.model`), so a plan can price
    models apart ("gpt-4o" and "gpt-4o-mini": the longest match wins)."""
    if kind.startswith("llm."):
        return (destination or str((attributes or {}).get("model") or "")).strip(ASCII_SPACE).lower()
    return normalize_destination(destination)
