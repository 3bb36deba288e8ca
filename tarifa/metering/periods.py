"""Billing periods: calendar months in the tenant's time zone, written "YYYY-MM"."""

from __future__ import annotations

import re

from tarifa.core.errors import DomainError

PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def checked_period(value: str | None) -> str | None:
    """`value` if it is a period (None passes: no filter); else DomainError invalid_period. A
    mistyped period would otherwise match nothing: a reconcile would report no difference and a
    re-rate would re-rate nothing, both successfully."""
    if value is not None and not PERIOD.fullmatch(value):
        raise DomainError("invalid_period", f"period must look like 2025-12, not {value!r}.", field="period")
    return value
