"""Billing periods: calendar months in the tenant's time zone, written "YYYY-MM"."""

from __future__ import annotations

import re
from datetime import date

from tarifa.core.errors import DomainError

PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def checked_period(value: str | None) -> str | None:
    """`value` if it is a period (None passes: no filter); else DomainError invalid_period. A
    mistyped period would otherwise match nothing: a reconcile would report no difference and a
    re-rate would re-rate nothing, both successfully."""
    if value is not None and not PERIOD.fullmatch(value):
        raise DomainError("invalid_period", f"period must look like 2025-12, not {value!r}.", field="period")
    return value


def months_before(day: date, months: int) -> str:
    """The period `months` calendar months before the month of `day` (0: its own), as YYYY-MM."""
    index = day.year * 12 + day.month - 1 - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
