"""Property tests of the rating arithmetic against deliberately naive implementations."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings, strategies as st

from tarifa.metering.rating import (
    RateTerms, Tier, billable_quantity, charge, longest_prefix, normalize_destination, unrounded_price,
)

small = st.integers(min_value=0, max_value=400)


def naive_billable(quantity: int, minimum: int, increment: int) -> int:
    """Count up in increments until the usage is covered (how a person reads "30/6")."""
    if quantity == 0:
        return 0
    charged = minimum
    while charged < quantity:
        charged += increment
    return charged


@given(quantity=small, minimum=st.integers(0, 120), increment=st.integers(1, 60))
def test_billable_quantity_matches_counting_up(quantity, minimum, increment):
    result = billable_quantity(Decimal(quantity), minimum=Decimal(minimum), increment=Decimal(increment))
    assert result == naive_billable(quantity, minimum, increment)
    if quantity:
        assert result >= quantity and result >= minimum and (result - minimum) % increment == 0


def test_telecom_increments():
    thirty_six = dict(minimum=Decimal(30), increment=Decimal(6))
    assert [billable_quantity(Decimal(s), **thirty_six) for s in (0, 1, 30, 31, 36, 37, 61)] == [0, 30, 30, 36, 36, 42, 66]
    sixty = dict(minimum=Decimal(60), increment=Decimal(60))
    assert [billable_quantity(Decimal(s), **sixty) for s in (1, 60, 61, 121)] == [60, 60, 120, 180]
    assert billable_quantity(Decimal("2.5"), minimum=Decimal(0), increment=Decimal(1)) == 3


tier_bounds = st.lists(st.integers(1, 300), min_size=0, max_size=4, unique=True).map(sorted)
prices = st.decimals(min_value=0, max_value=10, places=4)


@st.composite
def tiered_terms(draw):
    bounds = draw(tier_bounds)
    tier_prices = [draw(prices) for _ in range(len(bounds) + 1)]
    tiers = tuple(Tier(up_to=Decimal(b), price=p) for b, p in zip(bounds, tier_prices)) + (
        Tier(up_to=None, price=tier_prices[-1]),)
    return RateTerms(price=Decimal(0), block_size=Decimal(draw(st.sampled_from([1, 6, 60, 1000]))), tiers=tiers,
                     rounding=draw(st.sampled_from(["half_up", "half_even", "up", "down"])), places=2)


def naive_tiered_price(quantity: int, already: int, terms: RateTerms) -> Decimal:
    """Price unit by unit: each unit costs its tier's price / block size."""
    total = Decimal(0)
    for position in range(already, already + quantity):
        tier = next(t for t in terms.tiers if t.up_to is None or position < t.up_to)
        total += tier.price / terms.block_size
    return total


@settings(max_examples=200)
@given(terms=tiered_terms(), quantity=st.integers(0, 200), already=st.integers(0, 400))
def test_graduated_tiers_match_unit_by_unit_pricing(terms, quantity, already):
    exact = unrounded_price(Decimal(quantity), already=Decimal(already), terms=terms)
    assert abs(exact - naive_tiered_price(quantity, already, terms)) < Decimal("1e-20")


@given(terms=tiered_terms(), split=st.integers(0, 150), rest=st.integers(0, 150), already=st.integers(0, 200))
def test_tier_pricing_is_additive_over_splits(terms, split, rest, already):
    whole = unrounded_price(Decimal(split + rest), already=Decimal(already), terms=terms)
    parts = (unrounded_price(Decimal(split), already=Decimal(already), terms=terms)
             + unrounded_price(Decimal(rest), already=Decimal(already + split), terms=terms))
    assert abs(whole - parts) < Decimal("1e-20")


def naive_round(amount: Decimal, places: int, mode: str) -> Decimal:
    """Round by integer arithmetic on the scaled value."""
    scale = Decimal(10) ** places
    scaled = amount * scale
    floor = int(scaled) if scaled >= 0 else int(scaled) - (scaled != int(scaled))
    fraction = scaled - floor
    if fraction == 0:
        result = floor
    elif mode == "down":
        result = floor
    elif mode == "up":
        result = floor + 1
    elif fraction > Decimal("0.5"):
        result = floor + 1
    elif fraction < Decimal("0.5"):
        result = floor
    else:
        result = floor + 1 if mode == "half_up" or floor % 2 else floor
    return Decimal(result) / scale


@given(amount=st.decimals(min_value=0, max_value=10_000, places=6), mode=st.sampled_from(["half_up", "half_even", "up", "down"]))
def test_rounding_modes(amount, mode):
    terms = RateTerms(price=Decimal(1), rounding=mode, places=2)
    assert charge(amount, already=Decimal(0), terms=terms) == naive_round(amount, 2, mode)


def test_money_is_decimal_and_rounded_once_per_record():
    per_minute = RateTerms(price=Decimal("0.10"), block_size=Decimal(60), minimum=Decimal(30), increment=Decimal(6))
    assert charge(Decimal(36), already=Decimal(0), terms=per_minute) == Decimal("0.06")
    assert charge(Decimal(40), already=Decimal(0), terms=per_minute) == Decimal("0.07")  # 0.0666… → 0.07
    tokens = RateTerms(price=Decimal("0.50"), block_size=Decimal(1_000_000), places=2)
    assert charge(Decimal(1_500_000), already=Decimal(0), terms=tokens) == Decimal("0.75")


def test_longest_prefix_match():
    table = {"": "local", "9": "mobile", "0": "long", "00": "intl", "0021": "intl-rio"}
    assert longest_prefix("33334444", table) == "local"
    assert longest_prefix("987654321", table) == "mobile"
    assert longest_prefix("02111223344", table) == "long"
    assert longest_prefix("0021123", table) == "intl-rio"
    assert longest_prefix("00351", table) == "intl"
    assert longest_prefix("123", {"9": "x"}) is None
    assert normalize_destination(" +55 (11) 9876-5432 ") == "+551198765432"
