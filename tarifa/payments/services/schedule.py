"""When to check an invoice next: exponential (first, doubling, capped) or an explicit list."""

from __future__ import annotations

import re

from tarifa.core.errors import DomainError
from tarifa.payments.models import PaymentSettings

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_intervals(text: str) -> list[int]:
    """'30m,1h,2h' -> [1800, 3600, 7200]."""
    seconds = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        match = re.fullmatch(r"(\d+)\s*([smhd])", part)
        if not match or int(match.group(1)) == 0:
            raise DomainError("invalid_intervals", f"'{part}' is not an interval like 30m, 1h or 1d.",
                              field="intervals")
        seconds.append(int(match.group(1)) * UNITS[match.group(2)])
    return seconds


def interval_after(settings: PaymentSettings, checks_done: int) -> int:
    """Seconds to wait before the next check, once `checks_done` checks have run (0: the first)."""
    if settings.progression == PaymentSettings.Progression.LIST and settings.intervals:
        steps = parse_intervals(settings.intervals)
        return steps[min(checks_done, len(steps) - 1)]
    first, cap = settings.first_interval_seconds, settings.max_interval_seconds
    return min(cap, first * 2 ** min(checks_done, 32))
