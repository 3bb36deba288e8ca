from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

PAID_STATUSES = {3, 4}  # paid, available: money received
REVERSAL_STATUSES = {6, 8}  # refunded, chargeback debited
KNOWN_STATUSES = set(range(0, 11))


@dataclass(frozen=True)
class GatewayTransaction:
    code: str
    reference: str
    status: int
    gross_amount: Decimal | None = None
    fee_amount: Decimal | None = None
    net_amount: Decimal | None = None
    payment_method: str = ""
    date: datetime | None = None
    last_event_date: datetime | None = None

    @property
    def is_paid(self) -> bool:
        return self.status in PAID_STATUSES

    @property
    def is_reversal(self) -> bool:
        return self.status in REVERSAL_STATUSES


class GatewayError(Exception):
    """The gateway refused or we cannot use its answer; `code` is machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class GatewayTransient(GatewayError):
    """Timeouts, 5xx: worth retrying later."""


class GatewayRateLimited(GatewayTransient):
    """429 from the gateway, or our own per-credential limit reached."""


class GatewayUnauthorized(GatewayError):
    """401: the credential is wrong; checks of this credential stop."""


class GatewayBadResponse(GatewayError):
    """Malformed XML or an unknown status: never marks anything paid."""


class Gateway(Protocol):
    def transactions_by_reference(self, reference: str) -> list[GatewayTransaction]: ...

    def transaction_by_notification(self, code: str) -> GatewayTransaction: ...
